// The engine over the CudaRunner (tiny preset, random in-memory weights) with the sliding-window layers in
// their own KV pool (docs/ARCHITECTURE.md, KV groups). Greedy, three prompts (5 tokens; 130, just past the
// window; 300) in chunks of <= 48 tokens, the longest generating 400 tokens:
//  - a sliding pool that never runs dry (the engine's default) schedules exactly the steps of one pool, so the
//    kernels run the same launches over different block ids: the tokens must be bit-identical;
//  - the smallest sliding pool the engine accepts caps chunks and preempts, so steps differ (and CUDA results
//    may differ by an ulp with the step shape): every request must still finish, and the sliding tables must
//    stay within ceil((128 + n) / 16) + 1 live blocks for n new tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "cpu/random_weights.h"
#include "cuda/cuda_runner.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "../unit/engine_window_watch.h"

namespace mxs {
namespace {

using test::WindowWatch;

TEST(CudaEngineKvGroups, SlidingPoolMatchesOnePoolAndStaysWithinTheWindow) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  ASSERT_GT(cfg.sliding_window, 0);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/21);
  std::vector<Request> requests(3);
  const int lens[] = {5, 130, 300}, max_tokens[] = {60, 40, 400};
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < lens[r]; ++i) requests[size_t(r)].prompt.push_back((r * 71 + i * 13 + 5) % cfg.vocab_size);
    requests[size_t(r)].max_tokens = max_tokens[r];
    requests[size_t(r)].sampling.temperature = 0.0f;
  }
  std::vector<std::vector<int32_t>> ref;
  for (int sliding : {0, -1, min_sliding_pool_blocks(cfg.sliding_window, 16)}) {
    SCOPED_TRACE("num_sliding_kv_blocks " + std::to_string(sliding));
    cuda::CudaRunnerOptions opt;
    opt.num_kv_blocks = 96, opt.block_size = 16, opt.max_seqs = 4, opt.max_tokens = 64, opt.max_model_len = 1024;
    opt.num_sliding_kv_blocks = sliding, opt.progress = false;
    cuda::CudaRunner runner(rw->weights, opt);
    EXPECT_EQ(runner.kv_layout().num_sliding_blocks > 0, sliding != 0);
    WindowWatch watch(runner);
    const OfflineRun run = run_watched(watch, requests);
    std::vector<std::vector<int32_t>> got;
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(run.results[i].finish, FinishReason::kLength) << run.results[i].error;
      got.push_back(run.results[i].tokens);
    }
    EXPECT_EQ(got[2].size(), 400u);
    EXPECT_EQ(watch.over_bound, 0);
    if (sliding == 0) {
      ref = got;
    } else if (sliding == -1) {
      EXPECT_EQ(got, ref);
      EXPECT_GE(watch.max_live, 128 / 16);
    }
  }
}

}  // namespace
}  // namespace mxs
