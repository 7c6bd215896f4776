// The whole server stack (HTTP -> schema -> harmony render -> Engine -> harmony parser -> JSON/SSE) over a
// scripted ModelRunner that "generates" a fixed harmony token sequence, so that the mapping of reasoning,
// content and tool calls onto the OpenAI surface can be checked exactly (the random demo model cannot).
#include <gtest/gtest.h>

#include "server_scripted_fixture.h"

namespace mxs::server {
namespace {

using nlohmann::json;
using test::HttpResult;
using test::kAnswer;
using test::kToolCall;
using test::http_post;
using test::http_request;

std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  const std::vector<std::string> blocks = test::sse_blocks(body);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const std::string& ev = blocks[i];
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    if (ev == "data: [DONE]") {
      *done = true;
      EXPECT_EQ(i + 1, blocks.size()) << "[DONE] is last";
      break;
    }
    out.push_back(json::parse(ev.substr(6)));
  }
  return out;
}

TEST(ServerLoading, HealthIs503UntilTheModelIsSet) {
  ApiServerOptions opt;
  opt.http.port = 0;
  ApiServer server(opt);
  server.start();
  HttpResult h = http_request(server.port(), "GET", "/health", "");
  EXPECT_EQ(h.status, 503);
  EXPECT_EQ(json::parse(h.body)["status"], "loading");
  HttpResult c = http_post(server.port(), "/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}]})");
  EXPECT_EQ(c.status, 503);
  EXPECT_EQ(json::parse(c.body)["error"]["code"], "model_loading");
  EXPECT_EQ(http_request(server.port(), "GET", "/metrics", "").status, 200);
  server.shutdown(1.0);
}

class ServerChat : public test::ScriptedServerTest {
 protected:
  json chat(json body) {
    body["messages"] = json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}});
    HttpResult r = http_post(server_->port(), "/v1/chat/completions", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body);
  }
};


const json kTools = json::parse(R"([{"type":"function","function":{"name":"get_weather","parameters":
  {"type":"object","properties":{"city":{"type":"string"}}}}}])");

TEST_F(ServerChat, SeparatesReasoningFromContent) {
  script(kAnswer);
  const json r = chat({{"max_tokens", 100}});
  const json& m = r["choices"][0]["message"];
  EXPECT_EQ(m["content"], "It is sunny in Paris.");
  EXPECT_EQ(m["reasoning_content"], "User asks about weather. Answer briefly.");
  EXPECT_EQ(m["reasoning"], m["reasoning_content"]);
  EXPECT_FALSE(m.contains("tool_calls"));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  const int n = int(tok_->encode_with_specials(kAnswer).size());
  EXPECT_EQ(r["usage"]["completion_tokens"], n);
  const int reasoning = r["usage"]["completion_tokens_details"]["reasoning_tokens"];
  EXPECT_GT(reasoning, 5);
  EXPECT_LT(reasoning, n - 5);
}

TEST_F(ServerChat, StreamsReasoningContentAndUsage) {
  script(kAnswer);
  HttpResult r = http_post(server_->port(), "/v1/chat/completions",
                           json{{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})},
                                {"stream", true},
                                {"stream_options", {{"include_usage", true}}}}
                               .dump());
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.headers.find("Content-Type: text/event-stream"), std::string::npos);
  bool done = false;
  const std::vector<json> ev = sse_events(r.body, &done);
  ASSERT_TRUE(done);
  ASSERT_GE(ev.size(), 4u);
  EXPECT_EQ(ev[0]["choices"][0]["delta"]["role"], "assistant");
  std::string reasoning, reasoning2, content;
  for (size_t i = 0; i + 2 < ev.size(); ++i) {
    EXPECT_EQ(ev[i]["id"], ev[0]["id"]);
    const json& d = ev[i]["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("reasoning")) reasoning2 += d["reasoning"].get<std::string>();
    if (d.contains("content")) content += d["content"].get<std::string>();
    EXPECT_TRUE(ev[i]["choices"][0]["finish_reason"].is_null());
  }
  EXPECT_EQ(reasoning, "User asks about weather. Answer briefly.");
  EXPECT_EQ(reasoning2, reasoning);
  EXPECT_EQ(content, "It is sunny in Paris.");
  EXPECT_EQ(ev[ev.size() - 2]["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(ev.back()["choices"].empty());
  EXPECT_EQ(ev.back()["usage"]["completion_tokens"], int(tok_->encode_with_specials(kAnswer).size()));
}

TEST_F(ServerChat, ToolCallsNonStreamingAndStreaming) {
  script(kToolCall);
  const json r = chat({{"tools", kTools}});
  const json& m = r["choices"][0]["message"];
  EXPECT_EQ(r["choices"][0]["finish_reason"], "tool_calls");
  EXPECT_TRUE(m["content"].is_null());
  EXPECT_EQ(m["reasoning_content"], "Need the weather tool.");
  ASSERT_EQ(m["tool_calls"].size(), 1u);
  EXPECT_EQ(m["tool_calls"][0]["type"], "function");
  EXPECT_EQ(m["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_EQ(m["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
  EXPECT_EQ(m["tool_calls"][0]["id"].get<std::string>().rfind("call_", 0), 0u);

  HttpResult s = http_post(
      server_->port(), "/v1/chat/completions",
      json{{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"tools", kTools}, {"stream", true}}
          .dump());
  bool done = false;
  const std::vector<json> ev = sse_events(s.body, &done);
  ASSERT_TRUE(done);
  std::string args, name, id;
  for (const json& e : ev) {
    const json& d = e["choices"][0]["delta"];
    if (!d.contains("tool_calls")) continue;
    for (const json& t : d["tool_calls"]) {
      EXPECT_EQ(t["index"], 0);
      if (t.contains("id")) id += t["id"].get<std::string>();
      if (t["function"].contains("name")) name += t["function"]["name"].get<std::string>();
      args += t["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(args, "{\"city\":\"Paris\"}");
  EXPECT_EQ(id.rfind("call_", 0), 0u);
  EXPECT_EQ(ev.back()["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(ServerChat, ToolChoiceNoneDropsCalls) {
  script(kToolCall);
  const json r = chat({{"tools", kTools}, {"tool_choice", "none"}});
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(r["choices"][0]["message"].contains("tool_calls"));
}

TEST_F(ServerChat, StopStringsCutTheContentOnly) {
  script(kAnswer);
  // "weather" occurs in the reasoning only: it must not stop anything. "sunny" cuts the answer.
  const json r = chat({{"stop", json::array({"weather", "sunny"})}});
  EXPECT_EQ(r["choices"][0]["message"]["content"], "It is ");
  EXPECT_EQ(r["choices"][0]["message"]["reasoning_content"], "User asks about weather. Answer briefly.");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerChat, LengthLimitFlushesWhatWasOpen) {
  script(kAnswer);
  const json r = chat({{"max_tokens", 5}, {"logprobs", true}, {"top_logprobs", 2}});
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 5);
  EXPECT_TRUE(r["choices"][0]["logprobs"]["content"].is_array());
  // Logprob entries belong to content tokens only; 5 tokens end inside the reasoning.
  EXPECT_TRUE(r["choices"][0]["logprobs"]["content"].empty());
  const json full = chat({{"logprobs", true}, {"top_logprobs", 2}});
  const json& entries = full["choices"][0]["logprobs"]["content"];
  ASSERT_FALSE(entries.empty());
  std::string joined;
  for (const json& e : entries) {
    joined += e["token"].get<std::string>();
    EXPECT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_FLOAT_EQ(e["logprob"].get<float>(), -0.25f);
  }
  EXPECT_EQ(joined, "It is sunny in Paris.");
}

TEST_F(ServerChat, ContextLengthAndUnknownModel) {
  script(kAnswer);
  HttpResult r =
      http_post(server_->port(), "/v1/chat/completions",
                json{{"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}, {"max_tokens", 5000}}.dump());
  EXPECT_EQ(r.status, 400);
  const json e = json::parse(r.body)["error"];
  EXPECT_EQ(e["code"], "context_length_exceeded");
  EXPECT_NE(e["message"].get<std::string>().find("4096"), std::string::npos);
  EXPECT_NE(e["message"].get<std::string>().find("5000"), std::string::npos);
  r = http_post(server_->port(), "/v1/chat/completions",
                json{{"model", "gpt-9"}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}}.dump());
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(json::parse(r.body)["error"]["param"], "model");
}

}  // namespace
}  // namespace mxs::server
