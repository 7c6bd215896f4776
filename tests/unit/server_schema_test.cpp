// OpenAI request validation: what is accepted, and that every rejection is a 400 naming the right param.
#include <gtest/gtest.h>

#include <string>

#include "server/openai_schema.h"

namespace mxs::server {
namespace {

using Json = nlohmann::ordered_json;

ApiError chat_error(const std::string& body) {
  try {
    parse_chat_request(parse_json_body(body));
  } catch (const ApiException& e) {
    return e.error;
  }
  ADD_FAILURE() << "accepted: " << body;
  return {};
}

TEST(ServerSchema, ParsesAFullChatRequest) {
  const ChatCompletionRequest r = parse_chat_request(parse_json_body(R"({
    "model": "m", "messages": [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7, "max_completion_tokens": 12,
    "max_tokens": 99, "stop": ["x", "y"], "frequency_penalty": 0.5, "presence_penalty": -0.5,
    "logprobs": true, "top_logprobs": 3, "stream": true, "stream_options": {"include_usage": true},
    "reasoning_effort": "high", "n": 1, "user": "ignored",
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})"));
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "Hi");
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.9f);
  EXPECT_EQ(r.gen.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.05f);
  EXPECT_TRUE(r.gen.seed_given);
  EXPECT_EQ(r.gen.sampling.seed, 7u);
  EXPECT_EQ(r.gen.max_tokens, 12);  // max_completion_tokens wins over max_tokens
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"x", "y"}));
  EXPECT_TRUE(r.gen.sampling.logprobs);
  EXPECT_EQ(r.gen.sampling.top_logprobs, 3);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_EQ(r.reasoning_effort, harmony::ReasoningEffort::kHigh);
  EXPECT_EQ(r.tool_choice, ToolChoice::kNamed);
  EXPECT_EQ(r.tool_choice_name, "get_weather");
}

TEST(ServerSchema, DefaultsWhenFieldsAreAbsentOrNull) {
  const ChatCompletionRequest r = parse_chat_request(
      parse_json_body(R"({"messages": [{"role": "user", "content": "Hi"}], "temperature": null, "stop": "END"})"));
  EXPECT_EQ(r.model, "");
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_FALSE(r.gen.seed_given);
  EXPECT_EQ(r.gen.max_tokens, -1);
  EXPECT_EQ(r.gen.stop, std::vector<std::string>{"END"});
  EXPECT_FALSE(r.gen.stream);
  EXPECT_EQ(r.tool_choice, ToolChoice::kAuto);
  EXPECT_EQ(r.reasoning_effort, harmony::ReasoningEffort::kMedium);
}

TEST(ServerSchema, RejectionsNameTheParam) {
  const std::string msgs = R"("messages": [{"role": "user", "content": "Hi"}])";
  struct Case {
    std::string body, param;
  } cases[] = {
      {"{" + msgs + R"(, "temperature": "hot"})", "temperature"},
      {"{" + msgs + R"(, "temperature": 2.5})", "temperature"},
      {"{" + msgs + R"(, "top_p": 0})", "top_p"},
      {"{" + msgs + R"(, "max_tokens": 0})", "max_tokens"},
      {"{" + msgs + R"(, "max_tokens": 1.5})", "max_tokens"},
      {"{" + msgs + R"(, "max_completion_tokens": -3})", "max_completion_tokens"},
      {"{" + msgs + R"(, "n": 0})", "n"},
      {"{" + msgs + R"(, "n": 17})", "n"},
      {"{" + msgs + R"(, "stop": ["a","b","c","d","e"]})", "stop"},
      {"{" + msgs + R"(, "stop": 5})", "stop"},
      {"{" + msgs + R"(, "stream_options": {"include_usage": true}})", "stream_options"},
      {"{" + msgs + R"(, "stream": "yes"})", "stream"},
      {"{" + msgs + R"(, "top_logprobs": 2})", "top_logprobs"},
      {"{" + msgs + R"(, "logprobs": true, "top_logprobs": 21})", "top_logprobs"},
      {"{" + msgs + R"(, "reasoning_effort": "extreme"})", "reasoning_effort"},
      {"{" + msgs + R"(, "tool_choice": "required"})", "tool_choice"},
      {"{" + msgs +
           R"(, "tools": [{"type": "function", "function": {"name": "a"}}], "tool_choice": {"type": "function", "function": {"name": "b"}}})",
       "tool_choice"},
      {"{" + msgs + R"(, "frequency_penalty": 3})", "frequency_penalty"},
      {"{" + msgs + R"(, "model": 5})", "model"},
      {"{" + msgs + R"(, "response_format": {"type": "json_schema", "json_schema": {}}})", "response_format"},
      {"{" + msgs + R"(, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}})",
       "response_format"},  // no name
      {"{" + msgs +
           R"(, "response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {"type": "object"}}}})",
       "response_format"},
      {"{" + msgs +
           R"(, "response_format": {"type": "json_schema", "json_schema": {"name": "a", "description": 1, "schema": {"type": "object"}}}})",
       "response_format"},
      {"{" + msgs + R"(, "response_format": {"type": "yaml"}})", "response_format"},
      {"{" + msgs + R"(, "response_format": "json"})", "response_format"},
      {"{" + msgs + R"(, "logit_bias": [1, 2]})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"abc": 1}})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"-5": 1}})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"05": 1}})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"12345678901": 1}})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"5": 101}})", "logit_bias"},
      {"{" + msgs + R"(, "logit_bias": {"5": "up"}})", "logit_bias"},
      {"{" + msgs + R"(, "min_tokens": -1})", "min_tokens"},
      {"{" + msgs + R"(, "ignore_eos": 1})", "ignore_eos"},
      {"{" + msgs + R"(, "stop_token_ids": 5})", "stop_token_ids"},
      {"{" + msgs + R"(, "stop_token_ids": [5, "x"]})", "stop_token_ids"},
      {"{" + msgs + R"(, "stop_token_ids": [-1]})", "stop_token_ids"},
      {R"({"messages": []})", "messages"},
      {R"({"messages": "hi"})", "messages"},
      {R"({"model": "m"})", "messages"},
      {R"({"messages": [{"role": "bot", "content": "x"}]})", "messages[0].role"},
  };
  for (const auto& c : cases) {
    const ApiError e = chat_error(c.body);
    EXPECT_EQ(e.status, 400) << c.body;
    EXPECT_EQ(e.type, "invalid_request_error") << c.body;
    EXPECT_EQ(e.param, c.param) << c.body << " -> " << e.message;
    EXPECT_FALSE(e.message.empty());
  }
}

TEST(ServerSchema, LogitBiasMinTokensAndIgnoreEos) {
  const CompletionRequest r = parse_completion_request(parse_json_body(
      R"({"prompt": "x", "logit_bias": {"200002": -100, "0": 2.5, "17": 100}, "min_tokens": 3, "max_tokens": 8,
          "ignore_eos": true})"));
  const auto& lb = r.gen.sampling.logit_bias;
  ASSERT_EQ(lb.size(), 3u);
  EXPECT_EQ(lb[0].token, 200002);
  EXPECT_FLOAT_EQ(lb[0].bias, -100.0f);
  EXPECT_EQ(lb[1].token, 0);
  EXPECT_FLOAT_EQ(lb[1].bias, 2.5f);
  EXPECT_EQ(lb[2].token, 17);
  EXPECT_EQ(r.gen.sampling.min_tokens, 3);
  EXPECT_TRUE(r.gen.ignore_eos);
  const Request q = engine_request_of(r.gen);
  EXPECT_TRUE(q.ignore_stop_tokens);
  EXPECT_EQ(q.max_tokens, 8);
  EXPECT_EQ(q.sampling.logit_bias.size(), 3u);
  EXPECT_NO_THROW(check_generation_options(r.gen, 201088));
  // What needs the model: ids below the vocabulary, min_tokens <= max_tokens.
  auto param_of = [](const GenerationOptions& g, int vocab) {
    try {
      check_generation_options(g, vocab);
    } catch (const ApiException& e) {
      EXPECT_EQ(e.error.status, 400);
      return e.error.param;
    }
    return std::string();
  };
  EXPECT_EQ(param_of(r.gen, 200002), "logit_bias");
  GenerationOptions g = r.gen;
  g.sampling.min_tokens = 9;
  EXPECT_EQ(param_of(g, 201088), "min_tokens");
  g.max_tokens = -1;  // unset: any min_tokens (the engine bounds the output by the context)
  EXPECT_EQ(param_of(g, 201088), "");
  // Defaults: no bias, no min_tokens, stop tokens honoured.
  const CompletionRequest d = parse_completion_request(parse_json_body(R"({"prompt": "x", "logit_bias": null})"));
  EXPECT_TRUE(d.gen.sampling.logit_bias.empty());
  EXPECT_EQ(d.gen.sampling.min_tokens, 0);
  EXPECT_FALSE(engine_request_of(d.gen).ignore_stop_tokens);
  // stop_token_ids: added to the harmony stop tokens (once each); ids past the vocabulary are a 400.
  const CompletionRequest st =
      parse_completion_request(parse_json_body(R"({"prompt": "x", "stop_token_ids": [13, 200002, 13]})"));
  EXPECT_EQ(engine_request_of(st.gen).stop_token_ids,
            (std::vector<int32_t>{tok::kReturn, tok::kCall, tok::kEndOfText, 13}));
  EXPECT_EQ(param_of(st.gen, 12), "stop_token_ids");
  // response_format json_object, and what it cannot be combined with.
  const ChatCompletionRequest j = parse_chat_request(parse_json_body(
      R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}})"));
  EXPECT_TRUE(j.gen.json_object);
  EXPECT_EQ(param_of(j.gen, 201088), "");
  GenerationOptions jg = j.gen;
  jg.ignore_eos = true;
  EXPECT_EQ(param_of(jg, 201088), "ignore_eos");
  jg = j.gen;
  jg.sampling.min_tokens = 2;
  EXPECT_EQ(param_of(jg, 201088), "min_tokens");
  EXPECT_FALSE(parse_chat_request(parse_json_body(
      R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text"}})")).gen.json_object);
  // json_schema: compiled at parse time; what the subset does not hold is a 400 naming the keyword.
  const ChatCompletionRequest js = parse_chat_request(parse_json_body(R"({"messages": [{"role": "user", "content": "x"}],
      "response_format": {"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
        "additionalProperties": false}}}})"));
  ASSERT_NE(js.gen.json_schema, nullptr);
  EXPECT_TRUE(js.gen.structured());
  // ... and kept as given for the prompt's "# Response Formats" section (the client's key order).
  EXPECT_EQ(js.gen.json_schema_format.name, "w");
  EXPECT_EQ(js.gen.json_schema_format.description, "");
  EXPECT_EQ(js.gen.json_schema_format.schema.dump(),
            R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"],)"
            R"("additionalProperties":false})");
  const ApiError bad = chat_error(R"({"messages": [{"role": "user", "content": "x"}], "response_format": {"type":
      "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"a": {"type": "string",
      "format": "email"}}}}}})");
  EXPECT_EQ(bad.param, "response_format");
  EXPECT_NE(bad.message.find("/properties/a: keyword 'format' is not supported"), std::string::npos) << bad.message;
}

TEST(ServerSchema, MalformedBodiesAre400s) {
  for (const char* body : {"", "{", "[1,2]", "\"text\"", "{\"a\":}", "nul"}) {
    try {
      parse_json_body(body);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const ApiException& e) {
      EXPECT_EQ(e.error.status, 400);
      EXPECT_EQ(e.error.code, "invalid_json");
    }
  }
  // Deep nesting is refused before the parser recurses into it.
  std::string deep(100000, '[');
  EXPECT_THROW(parse_json_body(deep), ApiException);
  // Brackets inside strings do not count.
  EXPECT_NO_THROW(parse_json_body("{\"a\": \"" + std::string(1000, '[') + "\"}"));
}

TEST(ServerSchema, CompletionPrompts) {
  CompletionRequest r =
      parse_completion_request(parse_json_body(R"({"prompt": "Hello", "logprobs": 2, "echo": true})"));
  EXPECT_EQ(r.prompt, "Hello");
  EXPECT_FALSE(r.prompt_is_ids);
  EXPECT_TRUE(r.gen.sampling.logprobs);
  EXPECT_EQ(r.gen.sampling.top_logprobs, 2);
  EXPECT_TRUE(r.echo);
  r = parse_completion_request(parse_json_body(R"({"prompt": [1, 2, 3]})"));
  EXPECT_TRUE(r.prompt_is_ids);
  EXPECT_EQ(r.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  r = parse_completion_request(parse_json_body(R"({"prompt": ["one"]})"));
  EXPECT_EQ(r.prompt, "one");
  for (const char* bad : {R"({})", R"({"prompt": ""})", R"({"prompt": ["a", "b"]})", R"({"prompt": [1, -2]})",
                          R"({"prompt": 7})", R"({"prompt": "x", "logprobs": 9})"}) {
    try {
      parse_completion_request(parse_json_body(bad));
      ADD_FAILURE() << "accepted: " << bad;
    } catch (const ApiException& e) {
      EXPECT_EQ(e.error.status, 400) << bad;
      EXPECT_TRUE(e.error.param == "prompt" || e.error.param == "logprobs") << bad << " " << e.error.param;
    }
  }
}

TEST(ServerSchema, ErrorEnvelope) {
  ApiError e;
  e.status = 404;
  e.message = "no such model";
  e.param = "model";
  e.code = "model_not_found";
  const nlohmann::json j = error_json(e);
  EXPECT_EQ(
      j.dump(),
      R"({"error":{"code":"model_not_found","message":"no such model","param":"model","type":"invalid_request_error"}})");
  ApiError bare;
  bare.message = "m";
  const nlohmann::json k = error_json(bare);
  EXPECT_TRUE(k["error"]["param"].is_null());
  EXPECT_TRUE(k["error"]["code"].is_null());
}

}  // namespace
}  // namespace mxs::server
