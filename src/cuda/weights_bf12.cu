// bf12 copies of the dense weights (weights_upload.h: pack_dense_bf12).
#include <algorithm>
#include <string>

#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/bf12_pack.h"
#include "cuda/weights_upload.h"

namespace mxs::cuda {

void pack_dense_bf12(DeviceWeights* dw, const Bf12Set& which) {
  if (!which.any()) return;
  const Stopwatch sw;
  const ModelConfig& c = dw->config;
  const int H = c.hidden_size;
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  uint32_t* scratch = nullptr;
  const int max_n = std::max({c.vocab_size, c.qkv_dim(), H});
  CUDA_CHECK(cudaMalloc(&scratch, size_t(max_n) * 4));
  Bf12Packer packer;
  if (which.lm_head) packer.plan(dw->lm_head, c.vocab_size, H, "lm_head", scratch, stream);
  for (size_t l = 0; l < dw->layers.size(); ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    if (which.qkv) packer.plan(dw->layers[l].w_qkv, c.qkv_dim(), H, p + "w_qkv", scratch, stream);
    if (which.o_proj) packer.plan(dw->layers[l].w_o, H, c.q_dim(), p + "w_o", scratch, stream);
  }
  dw->bf12_arena = DeviceArena("weights_bf12", packer.bytes() + 4096);
  const std::vector<Bf12Weights> packed = packer.pack(dw->bf12_arena, scratch, stream);
  size_t next = 0;  // (plan order)
  if (which.lm_head) dw->lm_head_bf12 = packed[next++];
  for (size_t l = 0; l < dw->layers.size(); ++l) {
    if (which.qkv) dw->layers[l].w_qkv_bf12 = packed[next++];
    if (which.o_proj) dw->layers[l].w_o_bf12 = packed[next++];
  }
  CUDA_CHECK(cudaFree(scratch));
  CUDA_CHECK(cudaStreamDestroy(stream));
  for (const std::string& u : packer.unpacked())
    MXS_LOG_WARN("bf12: %s left in bf16 only: more than %u exceptions in a row would stall its GEMV", u.c_str(),
                 Bf12Packer::kDefaultMaxRowExceptions);
  dw->bf12_weights = packer.weights();
  dw->bf12_exceptions = packer.exceptions();
  MXS_LOG_INFO("dense weights packed to bf12 (%s%s%s): %.2f GB for %.2f G weights (%.2f bits each), %zu exceptions (%.4f%%) "
               "in %.2f s",
               which.lm_head ? "lm_head " : "", which.o_proj ? "o_proj " : "", which.qkv ? "qkv" : "",
               packer.bytes() / 1e9, dw->bf12_weights / 1e9, 8.0 * packer.bytes() / double(std::max<size_t>(dw->bf12_weights, 1)),
               dw->bf12_exceptions, 100.0 * double(dw->bf12_exceptions) / double(dw->bf12_weights), sw.seconds());
}

}  // namespace mxs::cuda
