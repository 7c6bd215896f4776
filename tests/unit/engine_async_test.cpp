// Async scheduling (EngineConfig::async_scheduling, docs/ARCHITECTURE.md): the engine submits step N + 1
// before step N's samples reach the host, decodes "the token sampled in N" through
// SequenceStep::input_from_last_sample, and discards the N + 1 samples of sequences that finished at N.
// Every test runs the same scripted workload with async off and on and requires the same per-request
// outputs: tokens, text, finish reason, stop token / string, output counts; the scheduler and block manager
// invariants are checked after every step (drive()), and the fake runner checks each step's KV reads and
// history. Covered: stop tokens and stop strings mid-batch, max_tokens = 1, new requests arriving while
// others decode, preemption in a small pool, sampler errors, aborts, seeded sampling, penalties (overlapped too: the
// runner counts the pending token), the real CPU runner (greedy and seeded) with two KV groups, and the default
// runner's deferred masks (structured outputs: SequenceStep::allowed_tokens_deferred, ModelRunner::supply_masks).
#include <gtest/gtest.h>

#include <algorithm>

#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine_fake_runner.h"
#include "engine_forwarding_runner.h"
#include "engine_test_driver.h"

namespace mxs {
namespace {

using testing::DriveResult;
using testing::drive;
using testing::FakeRunner;
using testing::FakeTokenizer;
using testing::WorkItem;

// Counts the stand-in decodes the runner was handed (the default two-phase path resolves them).
class CountingRunner : public test::ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  void submit(const StepBatch& batch) override {
    for (const SequenceStep& q : batch.seqs) {
      if (!q.input_from_last_sample) continue;
      ++from_last_sample;
      if (q.num_tokens != 1 || batch.tokens[size_t(q.token_offset)] != 0) ++bad_stand_ins;
    }
    ModelRunner::submit(batch);
  }
  int from_last_sample = 0;
  int bad_stand_ins = 0;
};

struct FakeRun {
  DriveResult res;
  int from_last_sample = 0;
};

FakeRun run_fake(const std::vector<WorkItem>& work, bool on, int num_blocks, int stop_period, int32_t fail_token,
             int max_batched = 64, const Tokenizer* tokenizer = nullptr) {
  FakeRunner fake(4, num_blocks);
  fake.stop_period = stop_period;
  fake.fail_token = fail_token;
  CountingRunner runner(fake);
  EngineConfig ec;
  ec.max_num_batched_tokens = max_batched;
  ec.check_invariants = true;
  ec.async_scheduling = on;
  FakeRun r;
  {
    EngineCore core(runner, tokenizer, ec);
    r.res = drive(core, work);
  }
  EXPECT_TRUE(fake.violations.empty()) << fake.violations.front();
  EXPECT_EQ(runner.bad_stand_ins, 0);
  r.from_last_sample = runner.from_last_sample;
  return r;
}

void expect_same_outputs(const DriveResult& off, const DriveResult& on, const std::vector<WorkItem>& work) {
  ASSERT_EQ(off.items.size(), on.items.size());
  for (size_t i = 0; i < off.items.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    const auto& a = off.items[i];
    const auto& b = on.items[i];
    EXPECT_EQ(b.num_final_events, 1);
    EXPECT_EQ(b.num_events_after_final, 0);
    if (work[i].cancel_step >= 0) continue;  // AbortWhileAStepIsInFlight checks these
    EXPECT_EQ(a.final_event.finish, b.final_event.finish) << b.final_event.error;
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(a.text, b.text);
    EXPECT_EQ(a.final_event.stop_token, b.final_event.stop_token);
    EXPECT_EQ(a.final_event.stop_string, b.final_event.stop_string);
    EXPECT_EQ(a.final_event.num_output_tokens, b.final_event.num_output_tokens);
    EXPECT_EQ(b.final_event.num_output_tokens, int(b.tokens.size()));
  }
}

// 28 requests: prompts of 2..33 tokens, max_tokens 1..60, arrivals spread over 30 steps, greedy and seeded.
std::vector<WorkItem> fake_workload() {
  std::vector<WorkItem> work;
  for (int r = 0; r < 28; ++r) {
    WorkItem w;
    for (int i = 0; i < 2 + (r * 7) % 32; ++i) w.request.prompt.push_back(1 + (r * 31 + i * 17) % 900);
    w.request.max_tokens = r % 5 == 0 ? 1 : 2 + (r * 13) % 59;
    w.arrive_step = (r * 11) % 31;
    if (r % 3 == 1) {
      w.request.sampling.temperature = 1.0f;
      w.request.sampling.seed = 1000 + uint64_t(r);
    } else {
      w.request.sampling.temperature = 0.0f;
    }
    work.push_back(std::move(w));
  }
  return work;
}

TEST(EngineAsync, SameOutputsWithStopsLengthsArrivalsAndPreemption) {
  const auto work = fake_workload();
  // A roomy pool, then one of 40 blocks of 4 tokens (160 tokens for ~1,000 of context): preemptions.
  for (int blocks : {1024, 40}) {
    SCOPED_TRACE("blocks " + std::to_string(blocks));
    const FakeRun off = run_fake(work, false, blocks, /*stop_period=*/23, /*fail_token=*/-1);
    const FakeRun on = run_fake(work, true, blocks, 23, -1);
    expect_same_outputs(off.res, on.res, work);
    EXPECT_EQ(off.res.metrics.overlapped_steps, 0u);
    EXPECT_EQ(off.from_last_sample, 0);
    EXPECT_GT(on.res.metrics.overlapped_steps, 0u);
    EXPECT_GT(on.from_last_sample, 100);
    EXPECT_EQ(on.res.metrics.generation_tokens, off.res.metrics.generation_tokens);
    EXPECT_EQ(on.res.metrics.requests_finished_stop, off.res.metrics.requests_finished_stop);
    EXPECT_GT(off.res.metrics.requests_finished_stop, 0u);
    if (blocks == 40) {
      EXPECT_GT(off.res.metrics.preemptions, 0u);
      EXPECT_GT(on.res.metrics.preemptions, 0u);
    }
    // Every block is back once the work drained (retired sequences released theirs).
    EXPECT_EQ(on.res.metrics.kv_blocks_used, 0);
  }
}

TEST(EngineAsync, SameOutputsWithStopStringsAndSamplerErrors) {
  FakeTokenizer tokenizer;
  auto work = fake_workload();
  for (size_t i = 0; i < work.size(); ++i) {
    if (i % 4 == 2) work[i].request.stop_strings = {"qr"};
    if (i % 4 == 3) work[i].request.stop_strings = {"k", "zz"};
  }
  // Requests 6 and 20 carry the injected failure token in their prompt: they fail at their first sample.
  work[6].request.prompt.push_back(950);
  work[20].request.prompt.push_back(950);
  const FakeRun off = run_fake(work, false, 1024, 0, 950, 64, &tokenizer);
  const FakeRun on = run_fake(work, true, 1024, 0, 950, 64, &tokenizer);
  expect_same_outputs(off.res, on.res, work);
  EXPECT_EQ(on.res.items[6].final_event.finish, FinishReason::kError);
  EXPECT_TRUE(on.res.items[6].tokens.empty());
  int by_string = 0;
  for (const auto& it : on.res.items) by_string += !it.final_event.stop_string.empty();
  EXPECT_GT(by_string, 2);
  EXPECT_GT(on.res.metrics.overlapped_steps, 0u);
}

TEST(EngineAsync, AbortWhileAStepIsInFlight) {
  auto work = fake_workload();
  for (size_t i = 0; i < work.size(); i += 4) work[i].cancel_step = work[i].arrive_step + 3;
  work[1].cancel_step = work[1].arrive_step;  // aborted before its first step
  const FakeRun off = run_fake(work, false, 1024, 23, -1);
  const FakeRun on = run_fake(work, true, 1024, 23, -1);
  // Requests that finished before their cancel step finish the same way in both modes.
  for (size_t i = 0; i < work.size(); ++i) {
    if (work[i].cancel_step < 0) continue;
    const auto& a = off.res.items[i];
    const auto& b = on.res.items[i];
    EXPECT_EQ(b.num_final_events, 1) << i;
    EXPECT_EQ(b.num_events_after_final, 0) << i;
    if (a.final_event.finish != FinishReason::kAbort) continue;
    EXPECT_EQ(b.final_event.finish, FinishReason::kAbort) << i;
    EXPECT_EQ(b.final_event.num_output_tokens, int(b.tokens.size())) << i;
  }
  // An aborted request's tokens are a prefix of what it generates when not aborted.
  auto uncancelled = work;
  for (auto& w : uncancelled) w.cancel_step = -1;
  const FakeRun full = run_fake(uncancelled, false, 1024, 23, -1);
  for (size_t i = 0; i < work.size(); ++i) {
    const auto& b = on.res.items[i].tokens;
    const auto& f = full.res.items[i].tokens;
    ASSERT_LE(b.size(), f.size()) << i;
    EXPECT_TRUE(std::equal(b.begin(), b.end(), f.begin())) << i;
  }
  expect_same_outputs(off.res, on.res, work);  // the others: identical
  EXPECT_EQ(on.res.metrics.kv_blocks_used, 0);
  EXPECT_GT(on.res.metrics.requests_aborted, 3u);
}

// Requests with penalties overlap like the others (before session 30 they fell back to synchronous steps): the
// stand-in's history reaches the runner as output_tokens + [the pending token].
TEST(EngineAsync, PenaltiesOverlapLikeOtherSteps) {
  auto work = fake_workload();
  for (auto& w : work) w.request.sampling.frequency_penalty = 0.5f;
  const FakeRun on = run_fake(work, true, 1024, 23, -1);
  const FakeRun off = run_fake(work, false, 1024, 23, -1);
  expect_same_outputs(off.res, on.res, work);
  EXPECT_GT(on.res.metrics.overlapped_steps, 10u);
  EXPECT_GT(on.from_last_sample, 10);
}

// The default two-phase path: a stand-in with no sample in the previous step fails that sequence only.
TEST(EngineAsync, DefaultSubmitReportsAMissingPreviousSample) {
  FakeRunner fake(4, 16);
  const std::vector<int32_t> table = {0, 1}, other_table = {2, 3};
  const std::vector<int32_t> prompt = {5, 6, 7};
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  auto seq = [&](uint64_t id, int ctx, bool from_last) {
    SequenceStep q;
    q.seq_id = id, q.num_tokens = 1, q.context_len = ctx, q.block_table = table, q.sample = true;
    q.sampling = &greedy, q.prompt_tokens = prompt, q.input_from_last_sample = from_last;
    return q;
  };
  StepBatch first;  // seq 1: its whole prompt
  first.tokens = prompt, first.positions = {0, 1, 2};
  first.seqs = {seq(1, 3, false)};
  first.seqs[0].num_tokens = 3;
  fake.submit(first);
  StepBatch second;  // seq 1: its sample from `first`; seq 2 was not in `first`
  second.tokens = {0, 0}, second.positions = {3, 3};
  second.seqs = {seq(1, 4, true), seq(2, 4, true)};
  second.seqs[1].token_offset = 1;
  second.seqs[1].block_table = other_table;
  StepOutput out1, out2;
  fake.collect(&out1);
  fake.submit(second);
  fake.collect(&out2);
  ASSERT_EQ(out1.samples.size(), 1u);
  ASSERT_EQ(out2.samples.size(), 2u);
  EXPECT_TRUE(out2.samples[0].ok);
  EXPECT_FALSE(out2.samples[1].ok);
  EXPECT_THROW(fake.collect(&out2), std::logic_error);
}

// The real CPU runner: greedy and seeded (top-p, top-k) requests, stop tokens picked from a first run so that
// they hit mid-batch, max_tokens = 1, a penalty request, arrivals while others decode, preemptions in a small
// pool, two KV groups. Bit-identical tokens and logprobs.
TEST(EngineAsync, CpuRunnerSameTokensGreedyAndSeeded) {
  const ModelConfig cfg = cpu::small_test_config(/*vocab=*/512);
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/11);
  std::vector<WorkItem> work;
  for (int r = 0; r < 14; ++r) {
    WorkItem w;
    for (int i = 0; i < 3 + (r * 23) % 60; ++i) w.request.prompt.push_back((r * 131 + i * 29 + 7) % cfg.vocab_size);
    w.request.max_tokens = r == 3 || r == 9 ? 1 : 5 + (r * 5) % 19;
    w.request.stop_token_ids.clear();
    w.arrive_step = (r * 5) % 17;
    if (r % 2 == 1) {
      w.request.sampling.temperature = 0.8f;
      w.request.sampling.top_p = 0.9f;
      w.request.sampling.top_k = r % 4 == 1 ? 40 : 0;
      w.request.sampling.seed = 77 + uint64_t(r);
      w.request.sampling.logprobs = true;
    } else {
      w.request.sampling.temperature = 0.0f;
    }
    if (r == 4) w.request.sampling.repetition_penalty = 1.3f;
    work.push_back(std::move(w));
  }
  auto run = [&](const std::vector<WorkItem>& items, bool on, int sliding_blocks, uint64_t* overlapped) {
    cpu::CpuRunnerOptions opt;
    opt.block_size = 16;
    opt.num_blocks = 20;
    opt.num_sliding_blocks = sliding_blocks;
    cpu::CpuRunner runner(rw->weights, opt);
    EngineConfig ec;
    ec.max_num_batched_tokens = 48;
    ec.check_invariants = true;
    ec.async_scheduling = on;
    EngineCore core(runner, nullptr, ec);
    DriveResult res = drive(core, items);
    if (overlapped) *overlapped = res.metrics.overlapped_steps;
    EXPECT_GT(res.metrics.preemptions, 0u);
    return res;
  };
  // Stop tokens: the 3rd generated token of every third request (found by a first synchronous run).
  const DriveResult probe = run(work, false, 0, nullptr);
  int with_stop = 0;
  for (size_t i = 0; i < work.size(); i += 3)
    if (probe.items[i].tokens.size() > 3) {
      work[i].request.stop_token_ids = {probe.items[i].tokens[2]};
      ++with_stop;
    }
  ASSERT_GT(with_stop, 2);
  for (int sliding_blocks : {0, 12}) {
    SCOPED_TRACE("sliding blocks " + std::to_string(sliding_blocks));
    uint64_t overlapped = 0;
    const DriveResult off = run(work, false, sliding_blocks, nullptr);
    const DriveResult on = run(work, true, sliding_blocks, &overlapped);
    expect_same_outputs(off, on, work);
    EXPECT_GT(overlapped, 10u);
    int stopped = 0;
    for (const auto& it : on.items) stopped += it.final_event.finish == FinishReason::kStop;
    EXPECT_GE(stopped, with_stop);
    EXPECT_EQ(on.items[3].tokens.size(), 1u);
  }
}

// The default submit() with a deferred mask keeps a copy of the step and runs it in supply_masks(), with the mask and
// the history as they were at submit() (the caller reuses its memory in between); misuse throws.
TEST(DeferredMasks, TheDefaultRunnerRunsTheStepAtSupply) {
  struct Recorder : ModelRunner {
    ModelConfig c;
    int steps = 0;
    std::vector<uint32_t> mask_seen;
    std::vector<int32_t> history_seen;
    const ModelConfig& config() const override { return c; }
    KvCacheLayout kv_layout() const override { return {16, 8}; }
    std::string name() const override { return "recorder"; }
    void step(const StepBatch& b, StepOutput* out) override {
      ++steps;
      for (const SequenceStep& q : b.seqs) {
        mask_seen.assign(q.allowed_tokens.begin(), q.allowed_tokens.end());
        history_seen.assign(q.output_tokens.begin(), q.output_tokens.end());
        SampleOutput o;
        o.seq_id = q.seq_id, o.token = 7 + steps;
        out->samples.push_back(o);
      }
    }
  } r;
  SamplingParams sp;
  std::vector<int32_t> table = {0}, history = {5};
  StepBatch b;
  b.tokens = {1}, b.positions = {0};
  SequenceStep q;
  q.seq_id = 1, q.num_tokens = 1, q.context_len = 1, q.block_table = table, q.sample = true, q.sampling = &sp;
  q.output_tokens = history;
  b.seqs = {q};
  r.submit(b);  // N
  b.positions = {1}, b.seqs[0].context_len = 2;
  b.seqs[0].input_from_last_sample = b.seqs[0].allowed_tokens_deferred = true;
  r.submit(b);  // N + 1: its input is N's sample, its mask comes later
  EXPECT_EQ(r.steps, 1);
  history[0] = 99;  // (the caller's memory, reused)
  EXPECT_THROW(r.submit(b), std::logic_error);
  StepOutput out;
  r.collect(&out);
  EXPECT_EQ(out.samples.at(0).token, 8);
  EXPECT_THROW(r.collect(&out), std::logic_error);  // N + 1 waits for its mask
  const std::vector<uint32_t> mask = {0x5u, 0x0u, 0x1u};
  EXPECT_THROW(r.supply_masks({}), std::logic_error);  // one deferred sequence: one mask
  r.supply_masks({mask});
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.mask_seen, mask);
  EXPECT_EQ(r.history_seen, (std::vector<int32_t>{5, 8}));  // the copy, and N's sample
  r.collect(&out);
  EXPECT_EQ(out.samples.at(0).token, 9);
  EXPECT_THROW(r.supply_masks({mask}), std::logic_error);
}

}  // namespace
}  // namespace mxs
