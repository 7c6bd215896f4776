// The scripted server the endpoint tests share (server_chat_test.cpp, server_responses_test.cpp): the whole server
// stack (HTTP -> schema -> harmony render -> Engine -> harmony parser -> JSON/SSE) over a ModelRunner that
// "generates" a fixed harmony token sequence, so that the mapping of reasoning, content and tool calls onto the
// OpenAI surfaces can be checked exactly (the random demo model cannot); and a blocking HTTP/1.1 client.
#pragma once
#include <gtest/gtest.h>

#include <boost/asio.hpp>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "model/mkmodel.h"
#include "server/api_server.h"
#include "text/tokenizer.h"

namespace mxs::server::test {

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
inline std::string dechunk(const std::string& s) {
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

inline HttpResult http_request(int port, const std::string& method, const std::string& path, const std::string& body) {
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

// The events of an SSE body (the text of each, between blank lines).
inline std::vector<std::string> sse_blocks(const std::string& body) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < body.size();) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos, end - pos));
    pos = end == std::string::npos ? body.size() : end + 2;
  }
  return out;
}

inline HttpResult http_post(int port, const std::string& path, const std::string& body) {
  return http_request(port, "POST", path, body);
}

// Scripts: reasoning then an answer; reasoning then a call to get_weather.
constexpr const char* kAnswer =
    "<|channel|>analysis<|message|>User asks about weather. Answer briefly.<|end|>"
    "<|start|>assistant<|channel|>final<|message|>It is sunny in Paris.<|return|>";
constexpr const char* kToolCall =
    "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
    "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
    "{\"city\":\"Paris\"}<|call|>";

// A server on an ephemeral port with the scripted runner behind its engine (max_length 4096); skipped without
// the tokenizer.
class ScriptedServerTest : public ::testing::Test {
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

  ScriptedRunner runner_;
  std::unique_ptr<Tokenizer> tok_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ApiServer> server_;
};

}  // namespace mxs::server::test
