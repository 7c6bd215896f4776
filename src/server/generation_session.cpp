// Engine <-> HTTP bridge for one request (see generation_session.h).
#include "server/generation_session.h"

#include <ctime>
#include <random>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "server/router.h"
#include "server/server_metrics.h"
#include "server/sse.h"

namespace mxs::server {

namespace {
std::mt19937_64& thread_rng() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32)};
  return rng;
}
}  // namespace

std::string random_id() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string out(24, 'x');
  for (char& c : out) c = kAlphabet[thread_rng()() % (sizeof(kAlphabet) - 1)];
  return out;
}

uint64_t random_seed() {
  return thread_rng()();
}

GenerationSession::GenerationSession(ServingContext& ctx, std::shared_ptr<HttpExchange> exchange, bool stream)
    : ctx_(ctx),
      exchange_(std::move(exchange)),
      stream_(stream),
      created_(int64_t(std::time(nullptr))),
      id_suffix_(random_id()) {}

void GenerationSession::start(Request request) {
  Engine* engine = ctx_.engine.load();
  MXS_CHECK(engine != nullptr, "start() before the model is loaded");
  // The queue bound: a slot is taken here and given back at the request's first event (or its end).
  if (ctx_.waiting.fetch_add(1) >= ctx_.max_queued_requests) {
    ctx_.waiting.fetch_sub(1);
    ctx_.metrics->requests_rejected.inc();
    ApiError e;
    e.status = 429;
    e.type = "rate_limit_error";
    e.code = "too_many_requests";
    e.retry_after_s = 1;
    e.message = strfmt("the server is at capacity (%d requests waiting): retry later", ctx_.max_queued_requests);
    throw ApiException(std::move(e));
  }
  holds_waiting_slot_ = true;
  ctx_.metrics->waiting.set(double(ctx_.waiting.load()));

  // Hold drain_mu_ until the response has started, so that no event is formatted before the headers.
  std::lock_guard<std::mutex> lock(drain_mu_);
  std::weak_ptr<GenerationSession> weak = weak_from_this();
  events_->set_notify([weak] {
    if (auto s = weak.lock()) s->schedule_drain();
  });
  request.arrival_time = now_seconds();
  try {
    request_id_ = engine->submit(std::move(request), events_);
  } catch (const mxs::Error& e) {
    release_waiting_slot();
    throw_invalid_param("", e.what());
  }
  self_ = shared_from_this();
  ctx_.metrics->active.add(1);
  exchange_->on_disconnect([weak] {
    if (auto s = weak.lock()) {
      s->ctx_.metrics->requests_cancelled.inc();
      s->cancel();
    }
  });
  if (cancel_requested_) cancel();
  if (stream_) {
    exchange_->start_stream(200, "text/event-stream");
    on_stream_start();
  }
}

void GenerationSession::cancel() {
  cancel_requested_ = true;
  const uint64_t id = request_id_.load();
  Engine* engine = ctx_.engine.load();
  if (id != 0 && engine) engine->cancel(id);
}

void GenerationSession::schedule_drain() {
  if (drain_scheduled_.exchange(true)) return;
  ctx_.post([self = shared_from_this()] { self->drain(); });
}

void GenerationSession::release_waiting_slot() {
  if (!holds_waiting_slot_) return;
  holds_waiting_slot_ = false;
  ctx_.waiting.fetch_sub(1);
  ctx_.metrics->waiting.set(double(ctx_.waiting.load()));
}

void GenerationSession::drain() {
  std::lock_guard<std::mutex> lock(drain_mu_);
  drain_scheduled_ = false;
  TokenEvent event;
  while (!finished_ && events_->try_pop(&event)) {
    release_waiting_slot();
    if (event.finished()) finished_ = true;
    try {
      on_event(event);
    } catch (const std::exception& e) {  // a formatting bug must fail this request only
      MXS_LOG_ERROR("request %llu: %s", (unsigned long long)request_id_.load(), e.what());
      if (!finished_) cancel();
      ApiError err;
      err.status = 500;
      err.type = "server_error";
      err.message = strfmt("internal error while formatting the response: %s", e.what());
      fail(err);
    }
  }
  if (finished_ && self_) {
    ctx_.metrics->active.add(-1);
    self_.reset();  // the posted task that called drain() still holds a reference until it returns
  }
}

void GenerationSession::send_event(const nlohmann::json& chunk) {
  exchange_->send_chunk(sse_json(chunk));
}

void GenerationSession::end_stream_done() {
  exchange_->send_chunk(sse_done());
  exchange_->end_stream();
}

void GenerationSession::fail(const ApiError& error) {
  if (stream_) {
    send_event(error_json(error));
    end_stream_done();
  } else {
    exchange_->respond(error_response(error));
  }
}

void GenerationSession::fail_unfinished(const TokenEvent& ev) {
  ctx_.metrics->finished_error.inc();
  ApiError e;
  e.status = ev.finish == FinishReason::kAbort ? 503 : 500;
  e.type = "server_error";
  e.message = ev.finish == FinishReason::kAbort ? "the request was aborted: the server is shutting down"
                                                : "generation failed: " + ev.error;
  fail(e);
}

void GenerationSession::respond_json(const nlohmann::json& body) {
  exchange_->respond(json_response(200, body));
}

}  // namespace mxs::server
