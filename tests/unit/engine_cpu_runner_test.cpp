// The engine over the real CPU reference runner (small random model, in memory): greedy outputs of 16
// concurrent requests, mixed prefill chunks and decodes, shared prefixes through the prefix cache and
// preemptions in a small pool, are bit-identical to each request run alone, with one KV pool or with two
// KV groups (sliding-window layers in their own pool). With two groups the sliding table of a sequence
// never holds more than ceil((128 + n) / 16) + 1 blocks in a step of n new tokens over 600+ generated
// tokens, and a repeated prompt still skips its prefill. Tolerance: none (the CPU runner's results do not
// depend on how tokens are grouped into steps, nor on the KV layout).
#include <gtest/gtest.h>

#include <algorithm>

#include "common/error.h"
#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "engine_window_watch.h"

namespace mxs {
namespace {

std::unique_ptr<cpu::CpuRunner> make_runner(const cpu::RandomWeights& rw, int num_blocks, int num_sliding_blocks = 0) {
  cpu::CpuRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = num_blocks;
  opt.num_sliding_blocks = num_sliding_blocks;
  return std::make_unique<cpu::CpuRunner>(rw.weights, opt);
}

using test::WindowWatch;

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
  // pool of 24 blocks (384 tokens) for ~1,500 tokens of context: preemptions happen. Two groups: a sliding
  // pool that never runs dry (every preemption comes from the full group), then a tight one (both run out).
  for (int sliding_blocks : {0, sliding_pool_blocks(cfg.sliding_window, 16, 16, 48), 20}) {
    SCOPED_TRACE("sliding blocks " + std::to_string(sliding_blocks));
    auto runner = make_runner(*rw, 24, sliding_blocks);
    WindowWatch watch(*runner);
    const OfflineRun run = run_watched(watch, requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(run.results[i].finish, FinishReason::kLength) << run.results[i].error;
      EXPECT_EQ(run.results[i].tokens, alone[i]) << "request " << i;
    }
    EXPECT_GT(run.metrics.preemptions, 0u);
    EXPECT_GT(run.metrics.prefix_hit_tokens, 0u);
    EXPECT_EQ(run.metrics.kv_blocks_used, 0);
    EXPECT_EQ(run.metrics.kv_sliding_blocks_used, 0);
    EXPECT_EQ(run.metrics.kv_sliding_blocks_total, sliding_blocks);
    EXPECT_EQ(watch.over_bound, 0);
  }
}

// Greedy, three prompts (5 tokens; 130, just past the window; 300) in chunks of <= 48 tokens, the longest
// generating 620 tokens: two KV groups give exactly the tokens of one pool, with a sliding pool that never
// runs dry and with the smallest one the engine accepts (9 blocks: chunks capped, preemptions).
TEST(EngineCpuRunner, TwoKvGroupsMatchOnePoolOverA600TokenGeneration) {
  const ModelConfig cfg = cpu::small_test_config(/*vocab=*/512);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/9);
  std::vector<Request> requests(3);
  const int lens[] = {5, 130, 300}, max_tokens[] = {60, 40, 620};
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < lens[r]; ++i) requests[size_t(r)].prompt.push_back((r * 71 + i * 13 + 5) % cfg.vocab_size);
    requests[size_t(r)].max_tokens = max_tokens[r];
    requests[size_t(r)].sampling.temperature = 0.0f;
  }
  std::vector<std::vector<int32_t>> ref;
  for (int sliding_blocks : {0, sliding_pool_blocks(cfg.sliding_window, 16, 3, 48),
                             min_sliding_pool_blocks(cfg.sliding_window, 16)}) {
    SCOPED_TRACE("sliding blocks " + std::to_string(sliding_blocks));
    auto runner = make_runner(*rw, 96, sliding_blocks);
    WindowWatch watch(*runner);
    const OfflineRun run = run_watched(watch, requests);
    std::vector<std::vector<int32_t>> got;
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(run.results[i].finish, FinishReason::kLength) << run.results[i].error;
      got.push_back(run.results[i].tokens);
    }
    EXPECT_EQ(got[2].size(), 620u);
    if (sliding_blocks == 0) {
      ref = got;
      continue;
    }
    EXPECT_EQ(got, ref);
    EXPECT_EQ(watch.over_bound, 0);
    EXPECT_LE(watch.max_live, (128 + 48 + 15) / 16 + 1);
    EXPECT_GE(watch.max_live, 128 / 16);
    EXPECT_EQ(run.metrics.kv_sliding_blocks_used, 0);
    EXPECT_EQ(run.metrics.kv_blocks_used, 0);
  }
}

// A repeated 200-token prompt skips its prefill with two KV groups (12 blocks = 192 tokens from the cache:
// the full group serves [0, 192), the sliding group the window (64, 192]), with identical tokens. When the
// sliding group no longer holds that window (an unrelated prompt ran in between and the sliding pool is the
// smallest), the hit is dropped and the prompt is recomputed: same tokens again.
TEST(EngineCpuRunner, RepeatedPromptSkipsItsPrefillWithTwoKvGroups) {
  const ModelConfig cfg = cpu::small_test_config(/*vocab=*/512);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/3);
  Request a, b;
  for (int i = 0; i < 200; ++i) {
    a.prompt.push_back((i * 29 + 1) % cfg.vocab_size);
    b.prompt.push_back((i * 31 + 7) % cfg.vocab_size);
  }
  a.max_tokens = b.max_tokens = 8;
  a.sampling.temperature = b.sampling.temperature = 0.0f;
  OfflineOptions serial;
  serial.max_in_flight = 1;

  std::vector<int32_t> alone;
  {
    auto runner = make_runner(*rw, 64);
    EngineConfig ec;
    ec.enable_prefix_caching = false;
    Engine engine(*runner, nullptr, ec);
    alone = run_offline(engine, {a}).results[0].tokens;
  }
  {
    auto runner = make_runner(*rw, 64, 32);
    EngineConfig ec;
    ec.check_invariants = true;
    Engine engine(*runner, nullptr, ec);
    const OfflineRun run = run_offline(engine, {a, a}, serial);
    EXPECT_EQ(run.results[0].tokens, alone);
    EXPECT_EQ(run.results[1].tokens, alone);
    EXPECT_EQ(run.results[0].num_cached_tokens, 0);
    EXPECT_EQ(run.results[1].num_cached_tokens, 192);
    EXPECT_EQ(run.metrics.computed_tokens, uint64_t(200 + 7 + 8 + 7));
  }
  {
    auto runner = make_runner(*rw, 64, min_sliding_pool_blocks(cfg.sliding_window, 16));
    EngineConfig ec;
    ec.check_invariants = true;
    Engine engine(*runner, nullptr, ec);
    const OfflineRun run = run_offline(engine, {a, b, a}, serial);
    EXPECT_EQ(run.results[0].tokens, alone);
    EXPECT_EQ(run.results[2].tokens, alone);
    EXPECT_EQ(run.results[2].num_cached_tokens, 0);
    EXPECT_EQ(run.metrics.computed_tokens, uint64_t(3 * (200 + 7)));
  }
}

// logit_bias, min_tokens and ignore_stop_tokens through the engine and the CPU sampler: a +100 bias makes the stop
// token the greedy choice at once; min_tokens holds it back for exactly that many tokens (the engine hands the
// sampler the request's stop tokens); ignore_stop_tokens generates max_tokens of it; bad values are refused at
// submission.
TEST(EngineCpuRunner, LogitBiasAndMinTokensSteerTheStopToken) {
  const ModelConfig cfg = cpu::small_test_config(/*vocab=*/512);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/11);
  auto runner = make_runner(*rw, 64);
  Engine engine(*runner, nullptr, EngineConfig{});
  Request q;
  q.prompt = {1, 2, 3, 4};
  q.max_tokens = 20;
  q.sampling.temperature = 0.0f;
  q.stop_token_ids = {7, 9};
  const std::vector<int32_t> free_run = run_offline(engine, {q}).results[0].tokens;
  ASSERT_EQ(free_run.size(), 20u);
  // (the random model picks neither stop token unbiased: the test's premise)
  ASSERT_EQ(std::count(free_run.begin(), free_run.end(), 7) + std::count(free_run.begin(), free_run.end(), 9), 0);

  q.sampling.logit_bias = {{7, 100.0f}};
  OfflineResult r = run_offline(engine, {q}).results[0];
  EXPECT_EQ(r.finish, FinishReason::kStop) << r.error;
  EXPECT_EQ(r.tokens, std::vector<int32_t>{7});

  q.sampling.min_tokens = 5;
  r = run_offline(engine, {q}).results[0];
  EXPECT_EQ(r.finish, FinishReason::kStop) << r.error;
  ASSERT_EQ(r.tokens.size(), 6u);
  EXPECT_EQ(r.tokens.back(), 7);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(r.tokens[size_t(i)] != 7 && r.tokens[size_t(i)] != 9) << i;
  // Held back, nothing else changed: with 7 and 9 at -inf the first token is the unbiased run's.
  EXPECT_EQ(r.tokens[0], free_run[0]);

  q.sampling.min_tokens = 0;
  q.ignore_stop_tokens = true;
  q.max_tokens = 4;
  r = run_offline(engine, {q}).results[0];
  EXPECT_EQ(r.finish, FinishReason::kLength) << r.error;
  EXPECT_EQ(r.tokens, (std::vector<int32_t>{7, 7, 7, 7}));

  Request bad = q;
  bad.sampling.logit_bias = {{512, 1.0f}};
  EXPECT_THROW(engine.submit(bad, nullptr), Error);
  bad = q;
  bad.sampling.min_tokens = 5;  // > max_tokens 4
  EXPECT_THROW(engine.submit(bad, nullptr), Error);
  bad = q;
  bad.sampling.min_tokens = 1;
  bad.stop_token_ids = {600};  // held back by min_tokens, outside the vocabulary
  EXPECT_THROW(engine.submit(bad, nullptr), Error);
}

}  // namespace
}  // namespace mxs
