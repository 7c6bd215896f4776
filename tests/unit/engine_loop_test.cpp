// The threaded Engine and the offline API over the FakeRunner: results equal a step-by-step EngineCore
// run, bounded concurrency, timings, cancellation from another thread, submitters on several threads,
// shutdown with requests in flight, and metrics.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "engine/engine.h"
#include "engine/offline.h"
#include "engine_fake_runner.h"
#include "engine_test_driver.h"

namespace mxs {
namespace {

using testing::FakeRunner;

std::vector<Request> make_requests(int n) {
  std::vector<Request> out;
  for (int i = 0; i < n; ++i) {
    Request r;
    for (int j = 0; j < 5 + (i * 7) % 23; ++j) r.prompt.push_back(1 + (i * 31 + j * 17) % 800);
    r.max_tokens = 4 + i % 9;
    r.sampling.temperature = i % 2 ? 0.7f : 0.0f;
    r.sampling.seed = uint64_t(i) * 11;
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<std::vector<int32_t>> reference_outputs(const std::vector<Request>& requests) {
  FakeRunner runner(4, 512);
  EngineCore core(runner, nullptr, EngineConfig{});
  std::vector<testing::WorkItem> work;
  for (const auto& r : requests) work.push_back({r, 0, -1});
  const auto res = testing::drive(core, work);
  std::vector<std::vector<int32_t>> out;
  for (const auto& item : res.items) out.push_back(item.tokens);
  return out;
}

TEST(EngineLoop, OfflineRunMatchesTheCoreAndRecordsTimings) {
  const auto requests = make_requests(16);
  const auto expected = reference_outputs(requests);
  for (int in_flight : {0, 3}) {
    FakeRunner runner(4, 64);
    EngineConfig cfg;
    cfg.max_num_batched_tokens = 32;
    cfg.check_invariants = true;
    Engine engine(runner, nullptr, cfg);
    OfflineOptions opt;
    opt.max_in_flight = in_flight;
    std::vector<int> streamed(requests.size(), 0);
    opt.on_event = [&](size_t i, const TokenEvent& ev) { streamed[i] += int(ev.token_ids.size()); };
    const OfflineRun run = run_offline(engine, requests, opt);
    engine.stop();
    ASSERT_TRUE(runner.violations.empty()) << runner.violations.front();
    if (in_flight) {
      EXPECT_LE(runner.max_step_seqs, in_flight);
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      const OfflineResult& r = run.results[i];
      EXPECT_EQ(r.tokens, expected[i]) << "request " << i;
      EXPECT_EQ(streamed[i], int(r.tokens.size()));
      EXPECT_EQ(r.finish, FinishReason::kLength);
      const RequestTimings& t = r.timings;
      EXPECT_GT(t.arrival, 0.0);
      EXPECT_GE(t.first_scheduled, t.arrival);
      EXPECT_GE(t.first_token, t.first_scheduled);
      ASSERT_EQ(t.token_times.size(), r.tokens.size());
      EXPECT_EQ(t.token_times.front(), t.first_token);
      EXPECT_GE(t.end, t.token_times.back());
    }
    EXPECT_EQ(run.num_output_tokens(), run.metrics.generation_tokens);
    EXPECT_EQ(run.metrics.requests_finished_length, requests.size());
    EXPECT_EQ(run.metrics.kv_blocks_used, 0);
    EXPECT_GT(run.metrics.kv_usage_peak, 0.0);
    EXPECT_GT(run.metrics.steps, 0u);
  }
}

TEST(EngineLoop, RejectedRequestIsReportedAndOthersRun) {
  FakeRunner runner(4, 16);
  EngineConfig cfg;
  cfg.max_length = 50;
  Engine engine(runner, nullptr, cfg);
  auto requests = make_requests(3);
  requests[1].prompt.assign(45, 1);
  requests[1].max_tokens = 10;
  const OfflineRun run = run_offline(engine, requests);
  EXPECT_EQ(run.results[1].finish, FinishReason::kError);
  EXPECT_NE(run.results[1].error.find("exceeds --max-length 50"), std::string::npos) << run.results[1].error;
  EXPECT_EQ(run.results[0].finish, FinishReason::kLength);
  EXPECT_EQ(run.results[2].finish, FinishReason::kLength);
}

TEST(EngineLoop, CancelFreesTheBlocksAtTheNextStep) {
  FakeRunner runner(4, 256);
  runner.sleep_us = 200;
  Engine engine(runner, nullptr, EngineConfig{});
  auto q = std::make_shared<EventQueue>();
  Request r;
  r.prompt = {5, 6, 7, 8, 9};
  r.max_tokens = 900;
  r.stop_token_ids.clear();
  const uint64_t id = engine.submit(r, q);
  TokenEvent ev;
  ASSERT_TRUE(q->pop(&ev, 10.0));
  EXPECT_FALSE(ev.finished());
  EXPECT_GT(engine.metrics().kv_blocks_used + 1, 1);
  engine.cancel(id);
  int tokens = 1;
  while (q->pop(&ev, 10.0) && !ev.finished()) tokens += int(ev.token_ids.size());
  ASSERT_TRUE(ev.finished());
  tokens += int(ev.token_ids.size());
  EXPECT_EQ(ev.finish, FinishReason::kAbort);
  EXPECT_LT(tokens, 900);
  EXPECT_EQ(ev.num_output_tokens, tokens);
  // Metrics are published before the events of a step.
  EXPECT_EQ(engine.metrics().kv_blocks_used, 0);
  EXPECT_EQ(engine.metrics().requests_aborted, 1u);
  engine.cancel(id);  // unknown now: ignored
  engine.cancel(12345);
}

TEST(EngineLoop, SubmittersOnSeveralThreadsAndShutdownAbortsTheRest) {
  const auto requests = make_requests(8);
  const auto expected = reference_outputs(requests);
  FakeRunner runner(4, 128);
  Engine engine(runner, nullptr, EngineConfig{});
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      auto q = std::make_shared<EventQueue>();
      for (int i = t; i < 8; i += 4) {
        const uint64_t id = engine.submit(requests[size_t(i)], q);
        std::vector<int32_t> tokens;
        TokenEvent ev;
        do {
          if (!q->pop(&ev, 10.0)) break;
          if (ev.request_id == id) tokens.insert(tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
        } while (!ev.finished());
        if (tokens != expected[size_t(i)]) ++mismatches;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);

  // Long requests in flight at shutdown: each gets one final kAbort event.
  runner.sleep_us = 1000;
  auto q = std::make_shared<EventQueue>();
  for (int i = 0; i < 3; ++i) {
    Request r = requests[size_t(i)];
    r.max_tokens = 400;  // 400 steps of 1 ms: still running at stop()
    r.stop_token_ids.clear();
    engine.submit(r, q);
  }
  engine.stop();
  int aborted = 0;
  for (const TokenEvent& ev : q->drain()) aborted += ev.finish == FinishReason::kAbort;
  EXPECT_EQ(aborted, 3);
  EXPECT_THROW(engine.submit(requests[0], q), Error);
}

}  // namespace
}  // namespace mxs
