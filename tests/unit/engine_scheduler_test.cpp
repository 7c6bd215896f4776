// Scheduler + engine core over the FakeRunner: a bounded randomized workload (arrivals, lengths, shared
// prefixes, priorities, cancellations, forced preemptions in a tiny pool) must keep every invariant, lose
// or duplicate no request, return every block of both KV groups and produce exactly the outputs of an
// unconstrained run, with one KV group or two (sliding-window layers in their own pool); plus decode-first
// chunked prefill, prefix-cache skipping (both layouts), the sliding group's bound over a long generation,
// and rejection of requests that never fit.
#include <gtest/gtest.h>

#include <random>

#include "engine_fake_runner.h"
#include "engine_test_driver.h"

namespace mxs {
namespace {

using testing::drive;
using testing::FakeRunner;
using testing::WorkItem;

std::vector<WorkItem> random_workload(uint32_t seed, int n) {
  std::mt19937 rng(seed);
  // A few shared prefixes so that the prefix cache hits (and shares blocks) under pressure.
  std::vector<std::vector<int32_t>> prefixes(3);
  for (auto& p : prefixes)
    for (int i = 0; i < 4 + int(rng() % 20); ++i) p.push_back(1 + int32_t(rng() % 900));
  std::vector<WorkItem> work;
  for (int i = 0; i < n; ++i) {
    WorkItem w;
    if (rng() % 2) w.request.prompt = prefixes[rng() % prefixes.size()];
    const int extra = 1 + int(rng() % 40);
    for (int j = 0; j < extra; ++j) w.request.prompt.push_back(1 + int32_t(rng() % 900));
    w.request.max_tokens = 1 + int(rng() % 40);
    w.request.sampling.temperature = rng() % 3 ? 0.0f : 0.8f;
    w.request.sampling.seed = rng();
    w.request.priority = rng() % 4 == 0 ? int(rng() % 3) - 1 : 0;
    w.arrive_step = int(rng() % 60);
    if (rng() % 6 == 0) w.cancel_step = w.arrive_step + 1 + int(rng() % 30);
    work.push_back(std::move(w));
  }
  return work;
}

struct Run {
  testing::DriveResult result;
  FakeRunner runner;
};

std::unique_ptr<Run> run_workload(std::vector<WorkItem> work, int block_size, int num_blocks, EngineConfig cfg,
                                  int num_sliding_blocks = 0, int window = 0) {
  auto run = std::unique_ptr<Run>(new Run{{}, FakeRunner(block_size, num_blocks, num_sliding_blocks, window)});
  run->runner.stop_period = 37;  // some requests end on <|return|>
  cfg.check_invariants = true;
  EngineCore core(run->runner, nullptr, cfg);
  run->result = drive(core, work);
  EXPECT_TRUE(run->runner.violations.empty()) << run->runner.violations.front();
  return run;
}

// The sliding-window layers of the fake read the last kWindow positions (with 4-token blocks: 3-4 blocks).
constexpr int kWindow = 10;

struct GroupsCase {
  const char* name;
  int num_sliding_blocks;  // 0: one KV group
};

TEST(Scheduler, RandomizedWorkloadMatchesUnconstrainedRun) {
  // Constrained runs: 4-token blocks, a full pool of 30 blocks (the longest request needs 25), 16 tokens and
  // 6 sequences per step. Two groups: a sliding pool that never runs dry (sliding_pool_blocks), so every
  // preemption comes from the full group; then a tight one where both groups run out.
  const GroupsCase cases[] = {{"one group", 0},
                              {"two groups, full group runs out", sliding_pool_blocks(kWindow, 4, 6, 16)},
                              {"two groups, both run out", 12}};
  for (uint32_t seed : {1u, 2u, 3u}) {
    const std::vector<WorkItem> work = random_workload(seed, 48);

    // Reference: everything at once, a pool and budget that never constrain, no cache, no cancellation,
    // one KV group.
    std::vector<WorkItem> ref_work = work;
    for (auto& w : ref_work) {
      w.arrive_step = 0;
      w.cancel_step = -1;
    }
    EngineConfig big;
    big.max_num_batched_tokens = 1 << 16;
    big.enable_prefix_caching = false;
    const auto ref = run_workload(ref_work, 16, 1024, big, 0, kWindow);
    ASSERT_EQ(ref->result.metrics.preemptions, 0u);

    for (const GroupsCase& gc : cases) {
      SCOPED_TRACE("seed " + std::to_string(seed) + ", " + gc.name);
      EngineConfig small;
      small.max_num_batched_tokens = 16;
      small.max_batch_size = 6;
      const auto got = run_workload(work, 4, 30, small, gc.num_sliding_blocks, kWindow);
      const auto& m = got->result.metrics;
      EXPECT_GT(m.preemptions, 0u) << "the pool was meant to force preemptions";
      EXPECT_GT(m.prefix_hit_tokens, 0u);
      EXPECT_EQ(m.kv_blocks_used, 0) << "blocks leaked";
      EXPECT_EQ(m.kv_sliding_blocks_used, 0) << "sliding blocks leaked";
      EXPECT_EQ(m.kv_sliding_blocks_total, gc.num_sliding_blocks);
      EXPECT_EQ(m.num_running + m.num_waiting, 0);
      EXPECT_LE(got->runner.max_step_tokens, 16);
      EXPECT_LE(got->runner.max_step_seqs, 6);
      if (gc.num_sliding_blocks > 0) {
        EXPECT_LE(got->runner.max_sliding_live, (kWindow + 16 + 3) / 4 + 1);
      }
      EXPECT_EQ(m.requests_added, work.size());
      EXPECT_EQ(m.requests_finished_stop + m.requests_finished_length + m.requests_aborted + m.requests_failed,
                work.size());

      int cancelled = 0;
      for (size_t i = 0; i < work.size(); ++i) {
        SCOPED_TRACE("request " + std::to_string(i));
        const auto& r = got->result.items[i];
        const auto& e = ref->result.items[i];
        ASSERT_EQ(r.num_final_events, 1);
        EXPECT_EQ(r.num_events_after_final, 0);
        EXPECT_EQ(r.final_event.num_output_tokens, int(r.tokens.size()));
        if (r.final_event.finish == FinishReason::kAbort) {
          ++cancelled;
          EXPECT_NE(work[i].cancel_step, -1);
          ASSERT_LE(r.tokens.size(), e.tokens.size());
          EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), e.tokens.begin()));
        } else {
          EXPECT_EQ(r.tokens, e.tokens);
          EXPECT_EQ(r.final_event.finish, e.final_event.finish);
        }
      }
      EXPECT_GT(cancelled, 0);
    }
  }
}

TEST(Scheduler, SlidingGroupHoldsOnlyTheWindowOverALongGeneration) {
  // gpt-oss geometry: 16-token blocks, a 128-token window. A 300-token prompt (longer than the window) in
  // chunks of <= 48 tokens next to a short request, then 640 generated tokens: the sliding table never holds
  // more than ceil((128 + n) / 16) + 1 blocks in a step of n new tokens (checked by the fake every step), and
  // the tokens equal those of the one-group layout.
  std::vector<WorkItem> work(2);
  for (int i = 0; i < 300; ++i) work[0].request.prompt.push_back(1 + (i * 53) % 700);
  work[0].request.max_tokens = 640;
  work[0].request.stop_token_ids.clear();
  work[1].request.prompt = {7, 8, 9, 10, 11};
  work[1].request.max_tokens = 200;
  work[1].request.stop_token_ids.clear();
  work[1].arrive_step = 3;
  EngineConfig cfg;
  cfg.max_num_batched_tokens = 48;
  const auto one = run_workload(work, 16, 128, cfg, 0, 128);
  const auto two = run_workload(work, 16, 128, cfg, 24, 128);
  for (size_t i = 0; i < work.size(); ++i) {
    EXPECT_EQ(two->result.items[i].tokens.size(), size_t(work[i].request.max_tokens));
    EXPECT_EQ(two->result.items[i].tokens, one->result.items[i].tokens) << "request " << i;
  }
  EXPECT_LE(two->runner.max_sliding_live, (128 + 48 + 15) / 16 + 1);
  EXPECT_GE(two->runner.max_sliding_live, 128 / 16);  // the window really was held
  EXPECT_EQ(two->result.metrics.kv_sliding_blocks_used, 0);
  EXPECT_EQ(two->result.metrics.kv_blocks_used, 0);
}

TEST(Scheduler, DecodesFirstThenPrefillChunksWithinTheBudget) {
  FakeRunner runner(4, 64);
  EngineConfig cfg;
  cfg.max_num_batched_tokens = 8;
  cfg.check_invariants = true;
  EngineCore core(runner, nullptr, cfg);
  std::vector<WorkItem> work(2);
  work[0].request.prompt = {1, 2, 3};
  work[0].request.max_tokens = 20;
  work[0].request.stop_token_ids.clear();
  work[1].request.prompt.assign(40, 5);
  work[1].request.max_tokens = 2;
  work[1].arrive_step = 2;
  drive(core, work);
  ASSERT_TRUE(runner.violations.empty()) << runner.violations.front();
  // Step 0: A's prompt; step 1: A decodes. From step 2, B's 40 prompt tokens come in chunks of 7 next to
  // A's decode token, A first.
  int chunks = 0;
  for (size_t s = 2; s < runner.step_log.size(); ++s) {
    const auto& log = runner.step_log[s];
    if (log.size() < 2) continue;
    EXPECT_EQ(log[0], std::make_pair(uint64_t(1), 1)) << "step " << s;
    EXPECT_EQ(log[1].first, 2u);
    EXPECT_LE(log[1].second, 7);
    chunks += log[1].second == 7;
  }
  EXPECT_GE(chunks, 5);  // 40 tokens = 5 chunks of 7 + 5
  EXPECT_EQ(runner.tokens_computed[2], 40 + 1);
}

TEST(Scheduler, PrefixCacheHitSkipsThePrefill) {
  // Two groups (32-token window): a hit of 64 tokens needs sliding blocks 2 and 3 only (positions
  // [33, 64) are what the first computed token, at 64, reads); they are still cached.
  for (int sliding_blocks : {0, 32}) {
    for (bool caching : {true, false}) {
      SCOPED_TRACE(std::string(sliding_blocks ? "two groups" : "one group") + (caching ? ", caching" : ""));
      FakeRunner runner(16, 64, sliding_blocks, 32);
      EngineConfig cfg;
      cfg.enable_prefix_caching = caching;
      cfg.check_invariants = true;
      EngineCore core(runner, nullptr, cfg);
      std::vector<WorkItem> work(2);
      for (int i = 0; i < 70; ++i) work[0].request.prompt.push_back(1 + (i * 37) % 500);
      work[0].request.max_tokens = 4;
      work[0].request.stop_token_ids.clear();
      work[1] = work[0];
      work[1].arrive_step = 10;  // the first has finished by then
      const auto res = drive(core, work);
      ASSERT_TRUE(runner.violations.empty()) << runner.violations.front();
      EXPECT_EQ(res.items[0].tokens, res.items[1].tokens);
      // 70 prompt tokens + 3 decodes (the 4th token is never fed back).
      EXPECT_EQ(runner.tokens_computed[1], 73);
      if (caching) {
        // 4 full blocks (64 tokens) come from the cache: only 6 prompt tokens run.
        EXPECT_EQ(res.items[1].final_event.num_cached_tokens, 64);
        EXPECT_EQ(runner.tokens_computed[2], 6 + 3);
        EXPECT_DOUBLE_EQ(res.metrics.prefix_hit_rate(), 64.0 / 140.0);
      } else {
        EXPECT_EQ(res.items[1].final_event.num_cached_tokens, 0);
        EXPECT_EQ(runner.tokens_computed[2], 73);
      }
      EXPECT_EQ(res.metrics.kv_blocks_used, 0);
      EXPECT_EQ(res.metrics.kv_sliding_blocks_used, 0);
    }
  }
}

TEST(Scheduler, FullyCachedPromptStillComputesItsLastToken) {
  FakeRunner runner(4, 64);
  EngineCore core(runner, nullptr, EngineConfig{});
  std::vector<WorkItem> work(2);
  work[0].request.prompt = {1, 2, 3, 4, 5, 6, 7, 8};  // exactly 2 blocks
  work[0].request.max_tokens = 3;
  work[0].request.stop_token_ids.clear();
  work[1] = work[0];
  work[1].arrive_step = 5;
  const auto res = drive(core, work);
  ASSERT_TRUE(runner.violations.empty()) << runner.violations.front();
  EXPECT_EQ(res.items[1].final_event.num_cached_tokens, 4);  // block 1 is recomputed for its last token
  EXPECT_EQ(runner.tokens_computed[2], 4 + 2);
  EXPECT_EQ(res.items[0].tokens, res.items[1].tokens);
}

TEST(Scheduler, RejectsRequestsThatCanNeverFit) {
  FakeRunner runner(4, 10);  // 40 KV slots
  EngineConfig cfg;
  cfg.max_length = 100;
  EngineCore core(runner, nullptr, cfg);
  auto message = [&](int prompt_len, int max_tokens) -> std::string {
    Request r;
    r.prompt.assign(size_t(prompt_len), 3);
    r.max_tokens = max_tokens;
    try {
      core.validate(r);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string m = message(90, 20);
  EXPECT_NE(m.find("90"), std::string::npos) << m;
  EXPECT_NE(m.find("20"), std::string::npos) << m;
  EXPECT_NE(m.find("100"), std::string::npos) << m;
  m = message(100, -1);
  EXPECT_NE(m.find("100 tokens"), std::string::npos) << m;
  m = message(30, 20);  // 49 KV tokens = 13 blocks > 10
  EXPECT_NE(m.find("13 KV blocks"), std::string::npos) << m;
  EXPECT_NE(m.find("10 blocks"), std::string::npos) << m;
  m = message(41, -1);
  EXPECT_NE(m.find("41 tokens"), std::string::npos) << m;
  EXPECT_EQ(message(30, 11), "");  // 40 KV tokens: fits exactly
  EXPECT_NE(message(30, 0), "");
  Request bad;
  bad.prompt = {1, 2};
  bad.sampling.top_p = 0.0f;
  EXPECT_THROW(core.add(1, bad, nullptr), Error);
  bad.sampling.top_p = 1.0f;
  bad.prompt = {1, 300000};
  EXPECT_THROW(core.add(1, bad, nullptr), Error);
  EXPECT_FALSE(core.has_work());

  // Unset max_tokens: capped by the pool, finishes with kLength instead of stalling.
  std::vector<WorkItem> work(1);
  work[0].request.prompt.assign(30, 3);
  work[0].request.stop_token_ids.clear();
  const auto res = drive(core, work);
  EXPECT_EQ(res.items[0].final_event.finish, FinishReason::kLength);
  EXPECT_EQ(res.items[0].tokens.size(), 11u);
}

TEST(Scheduler, PriorityOrdersAdmissionAndPicksTheVictim) {
  FakeRunner runner(4, 64);
  EngineConfig cfg;
  cfg.max_batch_size = 1;  // one at a time: completion order = admission order
  cfg.check_invariants = true;
  EngineCore core(runner, nullptr, cfg);
  std::vector<WorkItem> work(4);
  const int prio[] = {0, 5, -1, 0};
  for (int i = 0; i < 4; ++i) {
    work[size_t(i)].request.prompt = {10 + i, 11, 12};
    work[size_t(i)].request.max_tokens = 2;
    work[size_t(i)].request.priority = prio[i];
  }
  drive(core, work);
  std::vector<uint64_t> order;
  for (const auto& step : runner.step_log)
    for (const auto& [id, n] : step)
      if (order.empty() || order.back() != id) order.push_back(id);
  EXPECT_EQ(order, (std::vector<uint64_t>{3, 1, 4, 2}));
}

}  // namespace
}  // namespace mxs
