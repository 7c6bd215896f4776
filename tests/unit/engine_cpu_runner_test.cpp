// The engine over the real CPU reference runner (small random model, in memory): greedy outputs of 16
// concurrent requests, mixed prefill chunks and decodes, shared prefixes through the prefix cache and
// preemptions in a small pool, are bit-identical to each request run alone. Tolerance: none (the CPU
// runner's results do not depend on how tokens are grouped into steps).
#include <gtest/gtest.h>

#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine/engine.h"
#include "engine/offline.h"

namespace mxs {
namespace {

std::unique_ptr<cpu::CpuRunner> make_runner(const cpu::RandomWeights& rw, int num_blocks) {
  cpu::CpuRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = num_blocks;
  return std::make_unique<cpu::CpuRunner>(rw.weights, opt);
}

std::vector<Request> make_requests(int vocab) {
  std::vector<int32_t> shared;  // a 40-token system-prompt-like prefix shared by half the requests
  for (int i = 0; i < 40; ++i) shared.push_back((i * 97 + 13) % vocab);
  std::vector<Request> out;
  for (int r = 0; r < 16; ++r) {
    Request q;
    if (r % 2 == 0) q.prompt = shared;
    // Lengths 3..~140: some contexts pass the 128-token sliding window.
    const int extra = 3 + (r * 37) % 100;
    for (int i = 0; i < extra; ++i) q.prompt.push_back((r * 131 + i * 29 + 7) % vocab);
    q.max_tokens = 6 + r % 7;
    q.sampling.temperature = 0.0f;
    out.push_back(std::move(q));
  }
  return out;
}

TEST(EngineCpuRunner, ConcurrentGreedyOutputsEqualEachRequestAlone) {
  const ModelConfig cfg = cpu::small_test_config(/*vocab=*/512);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/5);
  const std::vector<Request> requests = make_requests(cfg.vocab_size);

  // Alone: one request at a time, whole prompt in one step, no prefix cache.
  std::vector<std::vector<int32_t>> alone;
  {
    auto runner = make_runner(*rw, 64);
    EngineConfig ec;
    ec.enable_prefix_caching = false;
    Engine engine(*runner, nullptr, ec);
    for (const Request& r : requests) {
      const OfflineRun run = run_offline(engine, {r});
      ASSERT_EQ(run.results[0].finish, FinishReason::kLength) << run.results[0].error;
      alone.push_back(run.results[0].tokens);
    }
  }

  // Together: 16 at once, 48 tokens per step (prefill chunks next to decodes), prefix caching on, and a
  // pool of 24 blocks (384 tokens) for ~1,500 tokens of context: preemptions happen.
  auto runner = make_runner(*rw, 24);
  EngineConfig ec;
  ec.max_num_batched_tokens = 48;
  ec.check_invariants = true;
  Engine engine(*runner, nullptr, ec);
  const OfflineRun run = run_offline(engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(run.results[i].finish, FinishReason::kLength) << run.results[i].error;
    EXPECT_EQ(run.results[i].tokens, alone[i]) << "request " << i;
  }
  EXPECT_GT(run.metrics.preemptions, 0u);
  EXPECT_GT(run.metrics.prefix_hit_tokens, 0u);
  EXPECT_EQ(run.metrics.kv_blocks_used, 0);
}

}  // namespace
}  // namespace mxs
