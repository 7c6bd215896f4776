// Stop conditions and per-request failures: stop tokens (harmony defaults, ignore_stop_tokens), stop
// strings on detokenized text (cut before the match, never streamed past it, across token boundaries and
// inside UTF-8), max_tokens, a sampler error that fails one request only, and SamplingParams' checks of logit_bias
// and min_tokens.
#include <gtest/gtest.h>

#include "common/error.h"
#include "engine/output_text.h"
#include "engine_fake_runner.h"
#include "engine_test_driver.h"

namespace mxs {
namespace {

using testing::drive;
using testing::FakeRunner;
using testing::FakeTokenizer;
using testing::WorkItem;

WorkItem item(std::vector<int32_t> prompt, int max_tokens) {
  WorkItem w;
  w.request.prompt = std::move(prompt);
  w.request.max_tokens = max_tokens;
  return w;
}

TEST(Stop, DefaultStopTokensAreReturnCallEndOfTextNotEnd) {
  const auto ids = default_stop_token_ids();
  EXPECT_EQ(ids, (std::vector<int32_t>{200002, 200012, 199999}));
}

TEST(Stop, StopTokenEndsTheRequestUnlessIgnored) {
  FakeRunner runner(4, 256);
  runner.stop_period = 5;
  EngineCore core(runner, nullptr, EngineConfig{});
  std::vector<WorkItem> work;
  for (int i = 0; i < 8; ++i) work.push_back(item({1 + i, 2, 3}, 40));
  auto ignoring = work;
  for (auto& w : ignoring) w.request.ignore_stop_tokens = true;
  const auto res = drive(core, work);
  int stopped = 0;
  for (const auto& r : res.items) {
    if (r.final_event.finish == FinishReason::kStop) {
      ++stopped;
      EXPECT_EQ(r.final_event.stop_token, tok::kReturn);
      EXPECT_EQ(r.tokens.back(), tok::kReturn);  // the stop token is reported (it has no text)
    } else {
      EXPECT_EQ(r.final_event.finish, FinishReason::kLength);
      EXPECT_EQ(r.tokens.size(), 40u);
    }
  }
  EXPECT_GT(stopped, 0);

  FakeRunner runner2(4, 256);
  runner2.stop_period = 5;
  EngineCore core2(runner2, nullptr, EngineConfig{});
  const auto res2 = drive(core2, ignoring);
  for (size_t i = 0; i < work.size(); ++i) {
    EXPECT_EQ(res2.items[i].final_event.finish, FinishReason::kLength);
    EXPECT_EQ(res2.items[i].tokens.size(), 40u);
    // Same tokens up to where the first run stopped.
    EXPECT_TRUE(std::equal(res.items[i].tokens.begin(), res.items[i].tokens.end(), res2.items[i].tokens.begin()));
  }
}

TEST(Stop, StopStringCutsTheTextAndIsNeverStreamed) {
  FakeTokenizer tok;
  // Reference text without stop strings.
  FakeRunner ref_runner(4, 256);
  EngineCore ref_core(ref_runner, &tok, EngineConfig{});
  const auto ref = drive(ref_core, {item({7, 8, 9}, 30)});
  const std::string full = ref.items[0].text;
  ASSERT_GT(full.size(), 30u);
  EXPECT_EQ(ref.items[0].final_event.finish, FinishReason::kLength);

  // Stop strings taken from the middle of that text, at several offsets (they straddle token boundaries
  // at some of them); a second, later stop string must lose to the earlier one.
  for (size_t at : {5u, 12u, 20u}) {
    const std::string stop = full.substr(at, 5);
    const size_t first = full.find(stop);
    FakeRunner runner(4, 256);
    EngineCore core(runner, &tok, EngineConfig{});
    auto w = item({7, 8, 9}, 30);
    w.request.stop_strings = {full.substr(full.size() - 4), stop};
    const auto res = drive(core, {w});
    const auto& r = res.items[0];
    EXPECT_EQ(r.final_event.finish, FinishReason::kStop);
    EXPECT_EQ(r.final_event.stop_string, stop);
    EXPECT_EQ(r.text, full.substr(0, first)) << "stop " << stop;
    std::string streamed;
    for (const auto& d : r.text_deltas) streamed += d;
    EXPECT_EQ(streamed, r.text);
    // Generation stopped at the token that completed the match.
    ASSERT_LE(r.tokens.size(), ref.items[0].tokens.size());
    EXPECT_TRUE(std::equal(r.tokens.begin(), r.tokens.end(), ref.items[0].tokens.begin()));
    EXPECT_EQ(tok.decode(std::vector<int32_t>(r.tokens.begin(), r.tokens.end() - 1), true).find(stop),
              std::string::npos);
  }
}

TEST(Stop, StopStringsNeedATokenizer) {
  FakeRunner runner(4, 64);
  EngineCore core(runner, nullptr, EngineConfig{});
  Request r;
  r.prompt = {1, 2};
  r.stop_strings = {"x"};
  EXPECT_THROW(core.validate(r), Error);
}

TEST(OutputText, HoldsBackAPossibleStopPrefixAndRespectsUtf8) {
  FakeTokenizer tok;
  // FakeTokenizer texts: 2 = "cde", 3 = "d", 4 = "ef", 51 = "z"; 1001 + 1002 = the two bytes of "é".
  OutputText t;
  t.init(&tok, {"\xC3\xA9z"});  // "éz"
  EXPECT_EQ(t.feed(1001), "");  // incomplete UTF-8: nothing yet
  EXPECT_EQ(t.feed(1002), "");  // "é" could start the stop string: held back
  EXPECT_EQ(t.feed(51), "");    // "éz": matched, cut before it
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.text(), "");
  EXPECT_EQ(t.flush(), "");

  OutputText u;
  u.init(&tok, {"\xC3\xA9z"});
  u.feed(1001);
  u.feed(1002);
  EXPECT_EQ(u.feed(4), "\xC3\xA9");  // "éef": all but the last 2 bytes (the longest stop - 1)
  EXPECT_FALSE(u.stopped());
  EXPECT_EQ(u.flush(), "ef");

  // The hold-back boundary never splits a UTF-8 character.
  OutputText w;
  w.init(&tok, {"abc"});
  w.feed(1001);
  EXPECT_EQ(w.feed(1002), "");
  EXPECT_EQ(w.feed(3), "");  // "éd": the boundary would fall inside "é"
  EXPECT_EQ(w.feed(51), "\xC3\xA9");
  EXPECT_EQ(w.flush(), "dz");

  OutputText v;
  v.init(&tok, {"abcdef"});
  EXPECT_EQ(v.feed(3), "");
  EXPECT_EQ(v.feed(4), "");   // "def"
  EXPECT_EQ(v.feed(2), "d");  // "defcde": release all but the last 5 bytes
  EXPECT_EQ(v.flush(), "efcde");
}

TEST(Failure, ASamplerErrorFailsOnlyThatRequest) {
  FakeRunner runner(4, 256);
  runner.fail_token = 999;
  EngineCore core(runner, nullptr, EngineConfig{});
  std::vector<WorkItem> work = {item({1, 2, 3}, 10), item({4, 999, 5}, 10), item({6, 7}, 10)};
  const auto res = drive(core, work);
  EXPECT_EQ(res.items[1].final_event.finish, FinishReason::kError);
  EXPECT_EQ(res.items[1].final_event.error, "injected sampler failure");
  EXPECT_TRUE(res.items[1].tokens.empty());
  for (size_t i : {0u, 2u}) {
    EXPECT_EQ(res.items[i].final_event.finish, FinishReason::kLength);
    EXPECT_EQ(res.items[i].tokens.size(), 10u);
  }
  EXPECT_EQ(res.metrics.requests_failed, 1u);
  EXPECT_EQ(res.metrics.kv_blocks_used, 0);
}

TEST(SamplingParams, ValidateNamesBadLogitBiasAndMinTokens) {
  auto msg = [](SamplingParams p) {
    try {
      p.validate();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  SamplingParams p;
  p.logit_bias = {{3, 101.0f}};
  EXPECT_NE(msg(p).find("logit_bias"), std::string::npos) << msg(p);
  p.logit_bias = {{3, 1.0f}, {4, 2.0f}, {3, -1.0f}};
  EXPECT_NE(msg(p).find("token 3 appears twice"), std::string::npos) << msg(p);
  p.logit_bias = {{-1, 1.0f}};
  EXPECT_NE(msg(p).find("not a token id"), std::string::npos) << msg(p);
  p.logit_bias.assign(size_t(SamplingParams::kMaxLogitBias) + 1, LogitBias{});
  EXPECT_NE(msg(p).find("at most"), std::string::npos) << msg(p);
  p.logit_bias = {{3, -100.0f}, {4, 100.0f}};
  EXPECT_EQ(msg(p), "");
  p.min_tokens = -1;
  EXPECT_NE(msg(p).find("min_tokens"), std::string::npos) << msg(p);
}

}  // namespace
}  // namespace mxs
