// The LM head's int8 screening copy (weights_upload.h: pack_lm_head_screen).
#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/weights_upload.h"

namespace mxs::cuda {

void pack_lm_head_screen(DeviceWeights* dw) {
  const Stopwatch sw;
  const ModelConfig& c = dw->config;
  const size_t V = lm_screen_rows(c.vocab_size), H = size_t(c.hidden_size);
  dw->lm_screen_arena = DeviceArena("lm_head_screen", V * H + V * sizeof(float4) + 1024);
  int8_t* q = dw->lm_screen_arena.alloc_as<int8_t>("lm_head_int8", V * H);
  float4* rows = dw->lm_screen_arena.alloc_as<float4>("lm_head_int8_rows", V);
  pack_lm_screen(dw->lm_head, c.vocab_size, int(H), q, rows, nullptr);
  CUDA_CHECK(cudaStreamSynchronize(nullptr));
  dw->lm_head_screen = LmScreenWeights{q, rows};
  MXS_LOG_INFO("LM head int8 screening copy for greedy steps: %.2f GB in %.2f s", dw->lm_screen_arena.used() / 1e9,
               sw.seconds());
}

}  // namespace mxs::cuda
