// The whole server stack (HTTP -> schema -> harmony render -> Engine -> harmony parser -> JSON/SSE) over a
// scripted ModelRunner that "generates" a fixed harmony token sequence, so that the mapping of reasoning,
// content and tool calls onto the OpenAI surface can be checked exactly (the random demo model cannot).
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <mutex>

#include "engine/engine.h"
#include "model/mkmodel.h"
#include "server/api_server.h"
#include "text/tokenizer.h"

namespace mxs::server {
namespace {

namespace asio = boost::asio;
using nlohmann::json;

// Emits script[k] as the k-th generated token of every sequence (EOS after the script).
class ScriptedRunner : public ModelRunner {
 public:
  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return {16, 512}; }
  std::string name() const override { return "scripted"; }
  void set_script(std::vector<int32_t> s) {
    std::lock_guard<std::mutex> lock(mu_);
    script_ = std::move(s);
  }
  void step(const StepBatch& batch, StepOutput* out) override {
    std::lock_guard<std::mutex> lock(mu_);
    out->samples.clear();
    for (const SequenceStep& s : batch.seqs) {
      if (!s.sample) continue;
      SampleOutput o;
      o.seq_id = s.seq_id;
      const size_t k = s.output_tokens.size();
      o.token = k < script_.size() ? script_[k] : 199999;
      o.logprob = -0.25f;
      for (int i = 0; i < s.sampling->top_logprobs; ++i) o.top.push_back({o.token, -0.25f});
      out->samples.push_back(std::move(o));
    }
  }

 private:
  ModelConfig config_;
  std::mutex mu_;
  std::vector<int32_t> script_;
};

struct HttpResult {
  int status = 0;
  std::string headers, body;
};

// Undoes chunked transfer coding.
std::string dechunk(const std::string& s) {
  std::string out;
  size_t pos = 0;
  while (pos < s.size()) {
    const size_t eol = s.find("\r\n", pos);
    const size_t n = std::stoul(s.substr(pos, eol - pos), nullptr, 16);
    if (n == 0) break;
    out += s.substr(eol + 2, n);
    pos = eol + 2 + n + 2;
  }
  return out;
}

HttpResult http_request(int port, const std::string& method, const std::string& path, const std::string& body) {
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect({asio::ip::make_address("127.0.0.1"), uint16_t(port)});
  const std::string req = method + " " + path +
                          " HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n"
                          "Content-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  asio::write(sock, asio::buffer(req));
  std::string raw;
  boost::system::error_code ec;
  char buf[4096];
  while (size_t n = sock.read_some(asio::buffer(buf), ec)) raw.append(buf, n);
  HttpResult r;
  const size_t head_end = raw.find("\r\n\r\n");
  r.headers = raw.substr(0, head_end);
  r.status = std::stoi(raw.substr(9, 3));
  r.body = raw.substr(head_end + 4);
  if (r.headers.find("Transfer-Encoding: chunked") != std::string::npos) r.body = dechunk(r.body);
  return r;
}

HttpResult http_post(int port, const std::string& path, const std::string& body) {
  return http_request(port, "POST", path, body);
}

std::vector<json> sse_events(const std::string& body, bool* done) {
  std::vector<json> out;
  *done = false;
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t end = body.find("\n\n", pos);
    const std::string ev = body.substr(pos, end - pos);
    pos = end + 2;
    EXPECT_EQ(ev.rfind("data: ", 0), 0u) << ev;
    if (ev == "data: [DONE]") {
      *done = true;
      EXPECT_EQ(pos, body.size()) << "[DONE] is last";
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

class ServerChat : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = find_tokenizer_json();
    if (path.empty()) GTEST_SKIP() << "no tokenizer.json (run scripts/fetch-tokenizer.sh)";
    tok_ = Tokenizer::from_file(path);
    EngineConfig ec;
    ec.max_length = 4096;
    engine_ = std::make_unique<Engine>(runner_, tok_.get(), ec);
    ApiServerOptions opt;
    opt.http.port = 0;
    server_ = std::make_unique<ApiServer>(opt);
    server_->start();
    server_->set_model(engine_.get(), tok_.get(), "scripted", engine_->config().max_length);
  }
  void TearDown() override {
    if (server_) server_->shutdown(1.0, [this] { engine_->stop(); });
    if (engine_) engine_->stop();
    server_.reset();
    engine_.reset();
  }
  void script(const std::string& harmony_text) { runner_.set_script(tok_->encode_with_specials(harmony_text)); }
  json chat(json body) {
    body["messages"] = json::array({{{"role", "user"}, {"content", "Weather in Paris?"}}});
    HttpResult r = http_post(server_->port(), "/v1/chat/completions", body.dump());
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body);
  }

  ScriptedRunner runner_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ApiServer> server_;
};

constexpr const char* kAnswer =
    "<|channel|>analysis<|message|>User asks about weather. Answer briefly.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>It is sunny in Paris.<|return|>";
constexpr const char* kToolCall =
    "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
    "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
    "{\"city\":\"Paris\"}<|call|>";

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
