// JsonObjectConstraint (response_format json_object) on the real tokenizer (skipped without it): plain framing
// (completions) allows exactly the tokens that extend the object, then only the end tokens; harmony framing (chat)
// leaves the reasoning free but for <|return|>, starts the object at the final channel's header only, and rejects a
// token the mask did not allow. Through the engine on the CPU runner: random sampled completions are JSON objects,
// and async scheduling gives the synchronous engine's tokens with unconstrained requests alongside.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "engine/offline.h"
#include "text_json_test_fixture.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs {
namespace {

bool bit(const std::vector<uint32_t>& m, int32_t t) { return m[size_t(t) / 32] >> (t % 32) & 1u; }
int count(const std::vector<uint32_t>& m) {
  int n = 0;
  for (uint32_t w : m) n += __builtin_popcount(w);
  return n;
}

using JsonConstraintTest = test::JsonTokenizerTest;

TEST_F(JsonConstraintTest, PlainFramingAllowsTheObjectThenOnlyTheEndTokens) {
  JsonObjectConstraint c(masks_, JsonAcceptor{}, /*harmony=*/false, {tok::kReturn, tok::kEndOfText});
  std::vector<uint32_t> mask, expected;
  JsonAcceptor ref;  // the masks without the constraint's cache
  for (int32_t t : tok_->encode("{\"name\": \"Ada Lovelace, mathematician\", \"tags\": [1, 2.5, true]}")) {
    ASSERT_TRUE(c.allowed(&mask));
    masks_->allowed(ref, &expected);
    ASSERT_EQ(mask, expected);
    ASSERT_TRUE(ref.feed(tok_->token_bytes(t)));
    ASSERT_TRUE(bit(mask, t)) << tok_->token_bytes(t);
    EXPECT_FALSE(bit(mask, tok::kReturn));
    ASSERT_TRUE(c.accept(t));
  }
  EXPECT_TRUE(c.document_complete());
  ASSERT_TRUE(c.allowed(&mask));
  EXPECT_EQ(count(mask), 2);
  EXPECT_TRUE(bit(mask, tok::kReturn) && bit(mask, tok::kEndOfText));
  EXPECT_TRUE(c.accept(tok::kReturn));

  JsonObjectConstraint d(masks_, JsonAcceptor{}, false, {tok::kReturn});
  EXPECT_FALSE(d.accept(tok_->encode("hello")[0]));  // a token the mask never allows
}

TEST_F(JsonConstraintTest, HarmonyFramingConstrainsOnlyTheFinalAnswer) {
  JsonObjectConstraint c(masks_, JsonAcceptor{}, /*harmony=*/true, {tok::kReturn});
  std::vector<uint32_t> mask;
  auto feed = [&](const std::vector<int32_t>& ids) {
    for (int32_t t : ids) {
      ASSERT_TRUE(c.allowed(&mask));
      ASSERT_TRUE(bit(mask, t)) << t;
      ASSERT_TRUE(c.accept(t)) << t;
    }
  };
  // Reasoning: free text (not JSON) and any special but <|return|>.
  feed({tok::kChannel});
  feed(tok_->encode("analysis"));
  feed({tok::kMessage});
  ASSERT_TRUE(c.allowed(&mask));
  EXPECT_FALSE(bit(mask, tok::kReturn));
  EXPECT_GT(count(mask), 200000);
  feed(tok_->encode("We need JSON. Not {valid"));
  feed({tok::kEnd, tok::kStart});
  feed(tok_->encode("assistant"));
  EXPECT_FALSE(c.in_document());
  feed({tok::kChannel});
  feed(tok_->encode("final"));
  feed({tok::kMessage});
  EXPECT_TRUE(c.in_document());
  ASSERT_TRUE(c.allowed(&mask));
  EXPECT_FALSE(bit(mask, tok_->encode("We")[0]));
  EXPECT_LT(count(mask), 5000);  // '{' and whitespace-led tokens
  feed(tok_->encode("{\"ok\":true}"));
  ASSERT_TRUE(c.allowed(&mask));
  EXPECT_EQ(count(mask), 1);
  EXPECT_TRUE(c.accept(tok::kReturn));

  // A tool call's header stays free; a final header with a <|constrain|> suffix starts the document.
  auto header = [&](JsonObjectConstraint& k, const std::string& channel, bool constrain) {
    ASSERT_TRUE(k.accept(tok::kChannel));
    for (int32_t t : tok_->encode(channel)) ASSERT_TRUE(k.accept(t));
    if (constrain) {
      ASSERT_TRUE(k.accept(tok::kConstrain));
      for (int32_t t : tok_->encode("json")) ASSERT_TRUE(k.accept(t));
    }
    ASSERT_TRUE(k.accept(tok::kMessage));
  };
  JsonObjectConstraint tool(masks_, JsonAcceptor{}, true, {tok::kReturn});
  header(tool, "commentary to=functions.get_weather ", true);
  EXPECT_FALSE(tool.in_document());
  JsonObjectConstraint suffixed(masks_, JsonAcceptor{}, true, {tok::kReturn});
  header(suffixed, "final ", true);
  EXPECT_TRUE(suffixed.in_document());
  EXPECT_FALSE(suffixed.accept(tok::kReturn));  // (no object yet: the turn cannot end)
}

// The engine on the CPU reference runner (the tiny demo model's size, random weights): sampled completions under the
// constraint are JSON objects whenever they end with a stop token, and prefixes of one when they run out of tokens.
TEST_F(JsonConstraintTest, EngineSamplesJsonObjects) {
  ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/3);
  cpu::CpuRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = 256;
  cpu::CpuRunner runner(rw->weights, opt);
  EngineConfig ec;
  ec.async_scheduling = true;  // (constrained sequences take stand-ins too: their masks are deferred)
  Engine engine(runner, tok_.get(), ec);
  std::vector<Request> requests(6);
  for (size_t i = 0; i < requests.size(); ++i) {
    Request& q = requests[i];
    q.prompt = tok_->encode("Reply in JSON:");
    q.max_tokens = 48;
    q.sampling.temperature = 1.0f, q.sampling.seed = 40 + i;
    // Push the closing brace up in half of them, so that some objects close within max_tokens.
    if (i % 2) q.sampling.logit_bias = {{tok_->encode("}")[0], 8.0f}, {tok_->encode("\"}")[0], 8.0f}};
    q.constraint = json_object_constraint(masks_, false, {tok::kReturn, tok::kEndOfText});
  }
  // Unconstrained requests alongside. Async scheduling overlaps the steps that sample constrained sequences too (the
  // masks of step N + 1 handed to the runner once N's samples are in), and every token matches the synchronous
  // engine's.
  for (int i = 0; i < 3; ++i) {
    Request q = requests[0];
    q.constraint = nullptr, q.sampling.seed = 90 + uint64_t(i), q.max_tokens = 30;
    requests.push_back(q);
  }
  const OfflineRun run = run_offline(engine, requests);
  {
    cpu::CpuRunner sync_runner(rw->weights, opt);
    EngineConfig sc;
    sc.async_scheduling = false;
    Engine sync_engine(sync_runner, tok_.get(), sc);
    const OfflineRun sync = run_offline(sync_engine, requests);
    for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(run.results[i].tokens, sync.results[i].tokens) << i;
  }
  EXPECT_GT(run.metrics.overlapped_steps, 30u);
  requests.resize(6);
  int closed = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    const OfflineResult& r = run.results[i];
    ASSERT_NE(r.finish, FinishReason::kError) << r.error;
    std::vector<int32_t> body = r.tokens;
    if (r.finish == FinishReason::kStop) body.pop_back();
    std::string text;  // the raw bytes (decode would replace a split UTF-8 character)
    for (int32_t t : body) text += tok_->token_bytes(t);
    if (r.finish == FinishReason::kStop) {
      EXPECT_TRUE(nlohmann::json::accept(text) && nlohmann::json::parse(text).is_object()) << text;
      ++closed;
    } else {
      JsonAcceptor a;
      EXPECT_TRUE(a.feed(text)) << text;
    }
  }
  EXPECT_GT(closed, 0);
}

}  // namespace
}  // namespace mxs
