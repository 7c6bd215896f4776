// The metrics mxserve exports on GET /metrics: HTTP-level counters kept by the server, the engine's own
// counters and gauges (read from Engine::metrics() at scrape time) and per-request latency histograms
// observed when a request finishes. Names are prefixed "mxserve_"; times are in seconds.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "engine/event_queue.h"
#include "engine/metrics.h"
#include "engine/request.h"
#include "server/metrics.h"

namespace mxs::server {

struct ServerMetrics {
  // engine_metrics: a snapshot source (nullptr until the model is loaded: engine metrics read as 0).
  explicit ServerMetrics(std::function<bool(EngineMetrics*)> engine_metrics);

  MetricsRegistry registry;
  Counter& http_requests;  // every request routed (any path)
  Counter& http_errors_4xx;
  Counter& http_errors_5xx;
  Counter& requests_rejected;   // 429: the waiting queue was full
  Counter& requests_cancelled;  // client disconnected before the end
  Counter& chat_requests;
  Counter& completion_requests;
  Counter& responses_requests;
  Counter& finished_stop;  // by OpenAI finish_reason
  Counter& finished_length;
  Counter& finished_tool_calls;
  Counter& finished_error;
  Counter& prompt_tokens;
  Counter& completion_tokens;
  Counter& reasoning_tokens;
  Counter& harmony_slips;  // model-output repairs made by the harmony parser
  Gauge& waiting;          // submitted, no token yet (the bounded queue of --max-queued-requests)
  Gauge& active;           // submitted, not finished
  Histogram& queue_time;
  Histogram& ttft;
  Histogram& time_to_first_answer;  // first content or tool-call token, i.e. after the reasoning
  Histogram& tpot;                  // mean time per output token after the first, per request
  Histogram& itl;                   // every gap between consecutive output tokens
  Histogram& e2e;

  // Observes the timing histograms from a final event. first_answer_index: index (into the generated
  // tokens) of the first answer token, or -1 when there was none.
  void observe_timings(const RequestTimings& t, int first_answer_index);
  // A harmony request's end (chat, responses): its finish reason ("stop", "length", "tool_calls"), its prompt, output
  // and reasoning tokens, the output parser's slips, and the timings (observe_timings).
  void count_harmony_finish(const std::string& finish_reason, const TokenEvent& final_event, int reasoning_tokens,
                            int64_t slips, int first_answer_index);
};

}  // namespace mxs::server
