// One accepted generation request between the engine and its HTTP exchange. It reserves a slot in the
// bounded waiting queue (429 when full), submits the Request, cancels it when the client disconnects, and
// hands the engine's TokenEvents to the endpoint's on_event(), one at a time, on an io thread (never on the
// engine thread: formatting JSON and SSE must not slow the engine loop). It keeps itself alive until the
// final event has been handled. With `n` > 1 each choice is a session of a ChoiceGroup (choice_group.h), which
// answers the exchange for all of them.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/event_queue.h"
#include "engine/request.h"
#include "server/http_server.h"
#include "server/openai_schema.h"
#include "server/serving_context.h"

namespace mxs::server {

class ChoiceGroup;

class GenerationSession : public std::enable_shared_from_this<GenerationSession> {
 public:
  // `group`: this session is choice `choice` of a request with several (null: the request's only choice).
  GenerationSession(ServingContext& ctx, std::shared_ptr<HttpExchange> exchange, bool stream,
                    std::shared_ptr<ChoiceGroup> group = nullptr, int choice = 0);
  virtual ~GenerationSession() = default;

  // Throws ApiException: 429 (with retry_after_s) when the waiting queue is full, 400 when the engine
  // rejects the request. On success the response is under way (for a stream: headers + on_stream_start()).
  void start(Request request);
  // 429 (ApiException) unless the waiting queue has room for `n` more requests (a request's n choices); 400 naming
  // `n` when it never could.
  static void check_capacity(ServingContext& ctx, int n);

 protected:
  // The endpoint's formatting. on_event runs serially; the last call gets the event with finish set.
  virtual void on_stream_start() {}
  virtual void on_event(TokenEvent& event) = 0;

  // Ends generation early (e.g. a stop string matched); the final event follows with kAbort.
  void cancel();
  bool client_gone() const { return exchange_->client_gone(); }

  void send_event(const nlohmann::json& chunk);  // one SSE `data:` event
  // One SSE event with an `event: <name>` line (the Responses API's typed events).
  void send_named_event(const std::string& name, const nlohmann::json& data);
  // The end of a stream without `data: [DONE]` (the Responses API ends with its response.completed event).
  void end_stream();
  // How a failure ends a stream: by default an in-band {"error": ...} event and [DONE].
  virtual void stream_failed(const ApiError& error);
  // Stream: an in-band {"error": ...} event, [DONE], end of stream. Otherwise: the error response.
  void fail(const ApiError& error);
  // A final event that ended neither by stop nor by length (engine shutdown, a runner failure): counted as an
  // error and answered with 503 (shutdown) or 500, in-band when streaming.
  void fail_unfinished(const TokenEvent& final_event);
  // The end of a stream: `usage_chunk` (null: none), `data: [DONE]`, the end of the chunked body (with a group:
  // the group's, once its last choice ends).
  void finish_stream(nlohmann::json usage_chunk);
  void respond_json(nlohmann::json body);  // non-streaming 200 (with a group: this choice's part of it)
  int choice() const { return choice_; }   // the "index" of this session's choice

  ServingContext& ctx_;
  std::shared_ptr<HttpExchange> exchange_;
  const std::shared_ptr<ChoiceGroup> group_;
  const int choice_;
  const bool stream_;
  const int64_t created_;        // unix seconds, the same on every chunk
  const std::string id_suffix_;  // random id part shared by all chunks ("chatcmpl-" + it, "cmpl-" + it)

 private:
  friend class ChoiceGroup;  // cancels its choices
  void end_stream_done();    // `data: [DONE]` + end of the chunked body
  void schedule_drain();
  void drain();
  void release_waiting_slot();

  std::shared_ptr<EventQueue> events_ = std::make_shared<EventQueue>();
  std::shared_ptr<GenerationSession> self_;  // alive until the final event is handled
  std::mutex drain_mu_;                      // serialises start() and drain()
  std::atomic<bool> drain_scheduled_{false};
  std::atomic<uint64_t> request_id_{0};
  std::atomic<bool> cancel_requested_{false};
  bool holds_waiting_slot_ = false;
  bool first_event_seen_ = false;  // (choice 0 of a group starts the others at its first event)
  bool finished_ = false;
};

// A random alphanumeric id part (24 characters) for response ids.
std::string random_id();
// A random 64-bit sampling seed for requests without one.
uint64_t random_seed();

}  // namespace mxs::server
