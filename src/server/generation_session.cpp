// Engine <-> HTTP bridge for one request (see generation_session.h).
#include "server/generation_session.h"

#include <ctime>
#include <random>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "server/choice_group.h"
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

GenerationSession::GenerationSession(ServingContext& ctx, std::shared_ptr<HttpExchange> exchange, bool stream,
                                     std::shared_ptr<ChoiceGroup> group, int choice)
    : ctx_(ctx),
      exchange_(std::move(exchange)),
      group_(std::move(group)),
      choice_(choice),
      stream_(stream),
      created_(group_ ? group_->created() : int64_t(std::time(nullptr))),
      id_suffix_(group_ ? group_->id_suffix() : random_id()) {}

namespace {
[[noreturn]] void throw_at_capacity(ServingContext& ctx) {
  ctx.metrics->requests_rejected.inc();
  ApiError e;
  e.status = 429;
  e.type = "rate_limit_error";
  e.code = "too_many_requests";
  e.retry_after_s = 1;
  e.message = strfmt("the server is at capacity (%d requests waiting): retry later", ctx.max_queued_requests);
  throw ApiException(std::move(e));
}
}  // namespace

void GenerationSession::check_capacity(ServingContext& ctx, int n) {
  if (n > ctx.max_queued_requests)  // never servable: not a retry-later
    throw_invalid_param("n", strfmt("n = %d choices exceed the server's queue of %d requests (--max-queued-requests)",
                                    n, ctx.max_queued_requests));
  if (ctx.waiting.load() + n > ctx.max_queued_requests) throw_at_capacity(ctx);
}

void GenerationSession::start(Request request) {
  Engine* engine = ctx_.engine.load();
  MXS_CHECK(engine != nullptr, "start() before the model is loaded");
  // The queue bound: a slot is taken here and given back at the request's first event (or its end).
  if (ctx_.waiting.fetch_add(1) >= ctx_.max_queued_requests) {
    ctx_.waiting.fetch_sub(1);
    throw_at_capacity(ctx_);
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
  if (!group_)  // (a group watches the exchange for all its choices)
    exchange_->on_disconnect([weak] {
      if (auto s = weak.lock()) {
        s->ctx_.metrics->requests_cancelled.inc();
        s->cancel();
      }
    });
  if (cancel_requested_) cancel();
  if (stream_) {
    if (!group_ || choice_ == 0) exchange_->start_stream(200, "text/event-stream");  // (choice 0 starts first)
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
    if (group_ && choice_ == 0 && !first_event_seen_) {  // the prompt is computed and cached: the other choices
      first_event_seen_ = true;
      const bool ok = !event.finished() || event.finish == FinishReason::kStop || event.finish == FinishReason::kLength;
      if (ok) group_->start_deferred();
    }
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

void GenerationSession::send_named_event(const std::string& name, const nlohmann::json& data) {
  exchange_->send_chunk("event: " + name + "\n" + sse_json(data));
}

void GenerationSession::end_stream() { exchange_->end_stream(); }

void GenerationSession::stream_failed(const ApiError& error) {
  send_event(error_json(error));
  end_stream_done();
}

void GenerationSession::end_stream_done() {
  exchange_->send_chunk(sse_done());
  exchange_->end_stream();
}

void GenerationSession::finish_stream(nlohmann::json usage_chunk) {
  if (group_) {
    group_->stream_done(std::move(usage_chunk));
    return;
  }
  if (!usage_chunk.is_null()) send_event(usage_chunk);
  end_stream_done();
}

void GenerationSession::fail(const ApiError& error) {
  if (group_) {
    group_->fail(error);
    return;
  }
  if (stream_) {
    stream_failed(error);
  } else {
    exchange_->respond(error_response(error));
  }
}

void GenerationSession::fail_unfinished(const TokenEvent& ev) {
  if (group_ && group_->failed()) return;  // cancelled because another choice failed: that one answered
  ctx_.metrics->finished_error.inc();
  ApiError e;
  e.status = ev.finish == FinishReason::kAbort ? 503 : 500;
  e.type = "server_error";
  e.message = ev.finish == FinishReason::kAbort ? "the request was aborted: the server is shutting down"
                                                : "generation failed: " + ev.error;
  fail(e);
}

void GenerationSession::respond_json(nlohmann::json body) {
  if (group_) {
    group_->response_done(choice_, std::move(body));
    return;
  }
  exchange_->respond(json_response(200, body));
}

}  // namespace mxs::server
