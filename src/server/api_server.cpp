// Routes and the small endpoints (health, models, metrics, tokenize); chat and completions live in their
// own handlers. Every response passes through CountingExchange for the 4xx/5xx counters.
#include "server/api_server.h"

#include <ctime>

#include "common/error.h"
#include "common/log.h"
#include "engine/engine.h"
#include "server/chat_handler.h"
#include "server/chat_page.h"
#include "server/completions_handler.h"
#include "server/responses_handler.h"
#include "server/openai_format.h"
#include "text/harmony.h"
#include "text/json_token_mask.h"
#include "text/tokenizer.h"

namespace mxs::server {
namespace {

using nlohmann::json;

// Counts response statuses on the way out.
class CountingExchange : public HttpExchange {
 public:
  CountingExchange(std::shared_ptr<HttpExchange> inner, ServerMetrics& m) : inner_(std::move(inner)), m_(m) {}
  void respond(HttpResponse r) override {
    count(r.status);
    inner_->respond(std::move(r));
  }
  void start_stream(int status, std::string ct, std::vector<std::pair<std::string, std::string>> h) override {
    count(status);
    inner_->start_stream(status, std::move(ct), std::move(h));
  }
  bool send_chunk(std::string data) override { return inner_->send_chunk(std::move(data)); }
  void end_stream() override { inner_->end_stream(); }
  void on_disconnect(std::function<void()> fn) override { inner_->on_disconnect(std::move(fn)); }
  bool client_gone() const override { return inner_->client_gone(); }

 private:
  void count(int status) {
    if (status >= 500)
      m_.http_errors_5xx.inc();
    else if (status >= 400)
      m_.http_errors_4xx.inc();
  }
  std::shared_ptr<HttpExchange> inner_;
  ServerMetrics& m_;
};

}  // namespace

ApiServer::ApiServer(ApiServerOptions options) : options_(std::move(options)) {
  ctx_.max_queued_requests = options_.max_queued_requests;
  metrics_ = std::make_unique<ServerMetrics>([this](EngineMetrics* out) {
    Engine* e = ctx_.engine.load();
    if (!e) return false;
    *out = e->metrics();
    return true;
  });
  ctx_.metrics = metrics_.get();
  responses_ = std::make_unique<ResponseStore>(options_.responses_store);
  ctx_.responses = responses_.get();
  metrics_->registry.gauge_fn("mxserve_http_open_connections", "Open HTTP connections",
                              [this] { return http_ ? double(http_->open_connections()) : 0.0; });
  metrics_->registry.gauge_fn("mxserve_http_in_flight_requests", "HTTP requests being answered",
                              [this] { return http_ ? double(http_->in_flight_requests()) : 0.0; });
  router_ = std::make_unique<Router>(ApiKeyAuth(options_.api_key));
  add_routes();
  http_ = std::make_unique<HttpServer>(options_.http, [this](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    metrics_->http_requests.inc();
    router_->dispatch(std::move(req), std::make_shared<CountingExchange>(std::move(ex), *metrics_));
  });
  ctx_.post = [this](std::function<void()> fn) { http_->post(std::move(fn)); };
}

ApiServer::~ApiServer() {
  shutdown(0.0);
}

void ApiServer::start() {
  http_->start();
}

void ApiServer::set_model(Engine* engine, const Tokenizer* tokenizer, const std::string& model_name, int max_length) {
  ctx_.tokenizer = tokenizer;
  ctx_.model_name = model_name;
  ctx_.max_length = max_length;
  ctx_.json_masks = std::make_shared<const JsonTokenMask>(*tokenizer, engine->vocab_size());
  ctx_.created_unix = int64_t(std::time(nullptr));
  ctx_.engine.store(engine);  // publishes the fields above (seq_cst store; readers load engine first)
}

void ApiServer::shutdown(double grace_s, const std::function<void()>& abort_all) {
  http_->stop_accepting();
  if (!http_->wait_for_idle(grace_s) && abort_all) {
    abort_all();
    http_->wait_for_idle(2.0);
  }
  http_->shutdown(0.0);
}

void ApiServer::add_routes() {
  ServingContext& ctx = ctx_;
  Router& r = *router_;
  r.add("POST", "/v1/chat/completions", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    handle_chat_completions(ctx, std::move(req), std::move(ex));
  });
  r.add("POST", "/v1/completions", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    handle_completions(ctx, std::move(req), std::move(ex));
  });
  r.add("POST", "/v1/responses", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    handle_responses(ctx, std::move(req), std::move(ex));
  });
  for (const char* method : {"GET", "DELETE"})
    r.add(method, "/v1/responses/*", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
      handle_stored_response(ctx, std::move(req), std::move(ex));
    });
  r.add("GET", "/v1/models", [&ctx](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    if (!ctx.ready()) throw ApiException(model_loading_error());
    json model = {{"id", ctx.model_name},
                  {"object", "model"},
                  {"created", ctx.created_unix},
                  {"owned_by", "mxserve"},
                  {"max_model_len", ctx.max_length}};
    ex->respond(json_response(200, {{"object", "list"}, {"data", json::array({model})}}));
  });
  r.add("GET", "/", [](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    HttpResponse resp;
    resp.content_type = "text/html; charset=utf-8";
    resp.body = std::string(chat_page_html());
    ex->respond(std::move(resp));
  });
  r.add("GET", "/health", [&ctx](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    ex->respond(ctx.ready() ? json_response(200, {{"status", "ok"}}) : json_response(503, {{"status", "loading"}}));
  });
  ServerMetrics* metrics = metrics_.get();
  r.add("GET", "/metrics", [metrics](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    HttpResponse resp;
    resp.content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp.body = metrics->registry.render();
    ex->respond(std::move(resp));
  });
  // vLLM-style: {"prompt": text} (plain text, specials allowed when add_special_tokens is true, as for
  // /v1/completions) or {"messages": [...], "tools"?, "reasoning_effort"?} rendered through harmony.
  r.add("POST", "/tokenize", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    if (!ctx.ready()) throw ApiException(model_loading_error());
    const nlohmann::ordered_json body = parse_json_body(req.body);
    std::vector<int32_t> ids;
    if (body.contains("messages")) {
      ChatCompletionRequest chat = parse_chat_request(body);
      harmony::RenderOptions options;
      options.reasoning_effort = chat.reasoning_effort;
      try {
        ids = harmony::render_prompt_ids(*ctx.tokenizer, chat.messages, chat.tools, options);
      } catch (const mxs::Error& e) {
        throw_invalid_param("messages", e.what());
      }
    } else {
      auto p = body.find("prompt");
      if (p == body.end() || !p->is_string())
        throw_invalid_param("prompt", "prompt (a string) or messages is required");
      bool specials = true;
      if (auto a = body.find("add_special_tokens"); a != body.end() && !a->is_null()) {
        if (!a->is_boolean()) throw_invalid_param("add_special_tokens", "add_special_tokens must be a boolean");
        specials = a->get<bool>();
      }
      const std::string text = p->get<std::string>();
      ids = specials ? ctx.tokenizer->encode_with_specials(text) : ctx.tokenizer->encode(text);
    }
    ex->respond(json_response(200, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", ctx.max_length}}));
  });
  r.add("POST", "/detokenize", [&ctx](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    if (!ctx.ready()) throw ApiException(model_loading_error());
    const nlohmann::ordered_json body = parse_json_body(req.body);
    auto t = body.find("tokens");
    if (t == body.end() || !t->is_array()) throw_invalid_param("tokens", "tokens (an array of token ids) is required");
    std::vector<int32_t> ids;
    for (size_t i = 0; i < t->size(); ++i) {
      const auto& v = (*t)[i];
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= ctx.tokenizer->vocab_size() ||
          ctx.tokenizer->token_bytes(int32_t(v.get<int64_t>())).empty())
        throw_invalid_param("tokens", strfmt("tokens[%zu] is not a token id of this tokenizer", i));
      ids.push_back(int32_t(v.get<int64_t>()));
    }
    ex->respond(json_response(200, {{"prompt", ctx.tokenizer->decode(ids)}}));
  });
}

}  // namespace mxs::server
