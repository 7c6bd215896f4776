// The OpenAI-compatible API server: HTTP server + routes + shared serving state. It listens before the
// model is loaded (GET /health answers 503 "loading", /v1/* 503 model_loading), and serves once set_model()
// is called. Routes: POST /v1/chat/completions, POST /v1/responses (+ GET / DELETE /v1/responses/{id}),
// POST /v1/completions, GET /v1/models, GET /health, GET /metrics, POST /tokenize, POST /detokenize.
#pragma once
#include <memory>
#include <string>

#include "server/http_server.h"
#include "server/response_store.h"
#include "server/router.h"
#include "server/serving_context.h"

namespace mxs::server {

struct ApiServerOptions {
  HttpServerOptions http;
  std::string api_key;  // "" = no auth
  int max_queued_requests = 1024;
  size_t responses_store = 1000;  // stored Responses API responses (least recently used dropped); 0: none
};

class ApiServer {
 public:
  explicit ApiServer(ApiServerOptions options);
  ~ApiServer();

  void start();  // binds (throws mxs::Error) and serves /health (503) right away
  int port() const { return http_->port(); }

  // Starts serving `model_name`. engine and tokenizer must stay valid until shutdown() returned and the
  // engine has been stopped (the engine's event callbacks reach into this server).
  void set_model(Engine* engine, const Tokenizer* tokenizer, const std::string& model_name, int max_length);

  // Graceful: stop accepting, let in-flight requests finish for up to grace_s; then `abort_all` (e.g.
  // Engine::stop) ends the rest, whose clients get a proper end (an in-band error event on a stream, a 503
  // otherwise) for up to 2 s more; then whatever is left is closed. Idempotent.
  void shutdown(double grace_s, const std::function<void()>& abort_all = {});

  ServerMetrics& metrics() { return *metrics_; }
  HttpServer& http() { return *http_; }

 private:
  void add_routes();

  ApiServerOptions options_;
  ServingContext ctx_;
  std::unique_ptr<ResponseStore> responses_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<HttpServer> http_;
};

}  // namespace mxs::server
