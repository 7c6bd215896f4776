// ToolCallConstraint (engine/tool_call_constraint.h) on the real tokenizer (skipped without it): messages that call no
// known tool stay free (no mask, and no deferred mask between messages); a header naming a tool, with the recipient
// before or after <|channel|>, opens its arguments, which must be an object of its schema (any object where the subset
// cannot compile it), then only <|call|>; the named and required prefills start where the prompt leaves off. Through
// the engine on the CPU runner: a forced call's sampled arguments are documents of the tool's schema, the same tokens
// with async scheduling on and off.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "engine/tool_call_constraint.h"
#include "text/special_tokens.h"
#include "text_json_schema_reference.h"
#include "text_json_test_fixture.h"

namespace mxs {
namespace {

using Json = nlohmann::json;

const Json kWeather = Json::parse(R"({"type": "object", "required": ["city"], "additionalProperties": false,
  "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}}})");

class ToolCallConstraintTest : public test::JsonTokenizerTest {
 protected:
  std::shared_ptr<const std::vector<ToolArguments>> tools() const {
    auto t = std::make_shared<std::vector<ToolArguments>>();
    t->push_back({"get_weather", JsonSchema::compile(kWeather)});
    t->push_back({"loose", nullptr});  // (a schema the subset could not compile: any object)
    return t;
  }
  // Feeds harmony text (specials included) token by token; every token must be accepted and, where a mask is given,
  // allowed by it. Returns whether the last mask restricted anything.
  bool feed(ToolCallConstraint& c, const std::string& text) {
    bool restricted = false;
    for (int32_t t : tok_->encode_with_specials(text)) {
      std::vector<uint32_t> mask;
      restricted = c.allowed(&mask);
      if (restricted) {
        EXPECT_TRUE(mask[size_t(t) / 32] >> (t % 32) & 1u) << "token " << t << " in " << text;
      }
      EXPECT_TRUE(c.accept(t)) << "token " << t << " in " << text;
    }
    return restricted;
  }
};

TEST_F(ToolCallConstraintTest, OnlyArgumentsOfKnownToolsAreConstrained) {
  ToolCallConstraint c(masks_, tools(), "", ToolCallConstraint::Start::kAuto);  // tool_choice auto: the prompt ends with <|start|>assistant
  std::vector<uint32_t> mask;
  EXPECT_FALSE(feed(c, "<|channel|>analysis<|message|>Think about { and ]."));
  EXPECT_FALSE(c.may_restrict_after_next());  // inside a message body: the next token cannot open a call
  EXPECT_FALSE(feed(c, "<|end|><|start|>assistant<|channel|>commentary to=functions.unknown <|constrain|>json"));
  EXPECT_FALSE(c.may_restrict_after_next());  // a header that names no tool: <|message|> opens no call
  EXPECT_FALSE(feed(c, "<|message|>not json at all<|call|>"));  // an unknown tool: free
  // The recipient before <|channel|>, as the model may write it.
  feed(c, "<|start|>assistant to=functions.get_weather<|channel|>commentary json");
  EXPECT_TRUE(c.may_restrict_after_next());  // <|message|> would open the call
  feed(c, "<|message|>");
  ASSERT_TRUE(c.in_arguments());
  ASSERT_TRUE(c.allowed(&mask));
  EXPECT_FALSE(mask[size_t(tok::kCall) / 32] >> (tok::kCall % 32) & 1u);  // no call before the object
  EXPECT_FALSE(c.accept(tok_->encode("[")[0]));                             // an array is not the object
}

TEST_F(ToolCallConstraintTest, ArgumentsFollowTheSchemaThenOnlyCall) {
  ToolCallConstraint c(masks_, tools(), "", ToolCallConstraint::Start::kAuto);
  feed(c, "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>");
  ASSERT_TRUE(c.in_arguments());
  EXPECT_TRUE(feed(c, R"({"unit": "c", "city": "Paris"})"));
  std::vector<uint32_t> mask;
  ASSERT_TRUE(c.allowed(&mask));
  int allowed = 0;
  for (uint32_t w : mask) allowed += __builtin_popcount(w);
  EXPECT_EQ(allowed, 1);
  EXPECT_TRUE(c.accept(tok::kCall));
  // The mask in an argument state equals a token-by-token check; the schema's bounds hold (maxLength 12).
  ToolCallConstraint d(masks_, tools(), " commentary to=functions.get_weather  json",
                       ToolCallConstraint::Start::kArguments);
  feed(d, R"({"city": "Saint-Denis-)");  // 12 code points: only the closing quote may come
  ASSERT_TRUE(d.allowed(&mask));
  const auto schema = JsonSchema::compile(kWeather);
  JsonSchemaAcceptor ref(schema.get());
  ASSERT_TRUE(ref.feed(std::string_view(R"({"city": "Saint-Denis-)")));
  std::vector<uint32_t> expected;
  masks_->allowed(ref, &expected);
  EXPECT_EQ(mask, expected);
  allowed = 0;
  EXPECT_EQ(mask_mismatches(ref, &allowed), 0);
  EXPECT_FALSE(mask[size_t(tok_->encode("a")[0]) / 32] >> (tok_->encode("a")[0] % 32) & 1u);
  EXPECT_FALSE(d.accept(tok_->encode("a")[0]));  // a 13th code point
  // A tool whose schema the subset could not compile: any object.
  ToolCallConstraint e(masks_, tools(), " commentary to=functions.loose  json", ToolCallConstraint::Start::kArguments);
  EXPECT_TRUE(feed(e, R"({"anything": [1, {"x": null}]})"));
  EXPECT_TRUE(e.accept(tok::kCall));
}

// tool_choice required: after `to=functions.` only a tool's name, then ` <|constrain|>json<|message|>`.
TEST_F(ToolCallConstraintTest, TheRequiredPrefillHoldsTheNameToATool) {
  ToolCallConstraint c(masks_, tools(), " commentary to=functions.", ToolCallConstraint::Start::kRequired);
  EXPECT_TRUE(c.may_restrict_after_next());
  std::vector<uint32_t> mask;
  ASSERT_TRUE(c.allowed(&mask));
  auto allowed = [&](int32_t t) { return bool(mask[size_t(t) / 32] >> (t % 32) & 1u); };
  EXPECT_TRUE(allowed(tok_->encode("get")[0]));
  EXPECT_TRUE(allowed(tok_->encode("lo")[0]));
  EXPECT_FALSE(allowed(tok_->encode("set")[0]));
  EXPECT_FALSE(allowed(tok::kMessage));
  EXPECT_FALSE(c.accept(tok_->encode("set")[0]));
  ToolCallConstraint d(masks_, tools(), " commentary to=functions.", ToolCallConstraint::Start::kRequired);
  EXPECT_TRUE(feed(d, "get_weather <|constrain|>json<|message|>"));
  EXPECT_TRUE(d.in_arguments());
  EXPECT_THROW(ToolCallConstraint(masks_, tools(), " commentary to=functions.nope  json",
                                  ToolCallConstraint::Start::kArguments),
               mxs::Error);
}

// A forced call on the tiny model with random weights: the arguments the engine samples are documents of the schema
// (closed by <|call|>) or, cut by max_tokens, prefixes of one; async scheduling gives the same tokens.
TEST_F(ToolCallConstraintTest, EngineSamplesArgumentsOfTheSchema) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/9);
  cpu::CpuRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = 256;
  std::vector<Request> requests(6);
  for (size_t i = 0; i < requests.size(); ++i) {
    Request& q = requests[i];
    q.prompt = tok_->encode_with_specials(
        "<|start|>user<|message|>Weather?<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather "
        "<|constrain|>json<|message|>");
    q.max_tokens = 64;
    q.sampling.temperature = i == 0 ? 0.0f : 1.0f, q.sampling.seed = 21 + i;
    q.stop_token_ids = {tok::kCall};
    q.constraint = tool_call_constraint(masks_, tools(), " commentary to=functions.get_weather  json",
                                        ToolCallConstraint::Start::kArguments);
  }
  std::vector<std::vector<int32_t>> tokens[2];
  for (int async = 0; async < 2; ++async) {
    cpu::CpuRunner runner(rw->weights, opt);
    EngineConfig ec;
    ec.async_scheduling = async == 1;
    Engine engine(runner, tok_.get(), ec);
    for (const OfflineResult& r : run_offline(engine, requests).results) {
      ASSERT_NE(r.finish, FinishReason::kError) << r.error;
      tokens[async].push_back(r.tokens);
    }
  }
  EXPECT_EQ(tokens[0], tokens[1]);
  int closed = 0;
  const auto schema = JsonSchema::compile(kWeather);
  for (const std::vector<int32_t>& t : tokens[1]) {
    std::string text;
    const bool call = !t.empty() && t.back() == tok::kCall;
    for (size_t i = 0; i + (call ? 1 : 0) < t.size(); ++i) text += tok_->token_bytes(t[i]);
    if (!call) {
      JsonSchemaAcceptor a(schema.get());
      EXPECT_TRUE(a.feed(text)) << text;
      continue;
    }
    ++closed;
    EXPECT_TRUE(test::conforms(Json::parse(text), kWeather)) << text;
  }
  EXPECT_GT(closed, 0);
}

}  // namespace
}  // namespace mxs
