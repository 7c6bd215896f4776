// Registration of mxserve's metrics (see server_metrics.h).
#include "server/server_metrics.h"

namespace mxs::server {

ServerMetrics::ServerMetrics(std::function<bool(EngineMetrics*)> engine_metrics)
    : http_requests(registry.counter("mxserve_http_requests_total", "HTTP requests received")),
      http_errors_4xx(registry.counter("mxserve_http_responses_4xx_total", "HTTP responses with a 4xx status")),
      http_errors_5xx(registry.counter("mxserve_http_responses_5xx_total", "HTTP responses with a 5xx status")),
      requests_rejected(registry.counter("mxserve_requests_rejected_total",
                                         "Requests refused with 429 because the waiting queue was full")),
      requests_cancelled(
          registry.counter("mxserve_requests_cancelled_total", "Requests cancelled because the client went away")),
      chat_requests(registry.counter("mxserve_chat_requests_total", "Accepted /v1/chat/completions requests")),
      completion_requests(registry.counter("mxserve_completion_requests_total", "Accepted /v1/completions requests")),
      responses_requests(registry.counter("mxserve_responses_requests_total", "Accepted /v1/responses requests")),
      finished_stop(
          registry.counter("mxserve_requests_finished_stop_total", "Requests finished with finish_reason stop")),
      finished_length(
          registry.counter("mxserve_requests_finished_length_total", "Requests finished with finish_reason length")),
      finished_tool_calls(registry.counter("mxserve_requests_finished_tool_calls_total",
                                           "Requests finished with finish_reason tool_calls")),
      finished_error(registry.counter("mxserve_requests_failed_total", "Requests that failed after being accepted")),
      prompt_tokens(registry.counter("mxserve_prompt_tokens_total", "Prompt tokens of finished requests")),
      completion_tokens(registry.counter("mxserve_completion_tokens_total", "Generated tokens of finished requests")),
      reasoning_tokens(
          registry.counter("mxserve_reasoning_tokens_total", "Generated tokens that went to reasoning (analysis)")),
      harmony_slips(registry.counter("mxserve_harmony_parser_slips_total",
                                     "Malformed harmony output repaired or dropped by the parser")),
      waiting(registry.gauge("mxserve_requests_waiting", "Requests submitted that have not produced a token yet")),
      active(registry.gauge("mxserve_requests_active", "Requests submitted and not finished")),
      queue_time(
          registry.histogram("mxserve_request_queue_time_seconds", "Arrival to first scheduling", latency_buckets_s())),
      ttft(registry.histogram("mxserve_time_to_first_token_seconds", "Arrival to the first generated token",
                              latency_buckets_s())),
      time_to_first_answer(registry.histogram("mxserve_time_to_first_answer_token_seconds",
                                              "Arrival to the first content or tool-call token (after reasoning)",
                                              latency_buckets_s())),
      tpot(registry.histogram("mxserve_time_per_output_token_seconds",
                              "Mean time per output token after the first, per request", token_time_buckets_s())),
      itl(registry.histogram("mxserve_inter_token_latency_seconds", "Time between consecutive output tokens",
                             token_time_buckets_s())),
      e2e(registry.histogram("mxserve_e2e_request_latency_seconds", "Arrival to the last token", latency_buckets_s())) {
  auto field = [engine_metrics](double (*get)(const EngineMetrics&)) {
    return [engine_metrics, get]() -> double {
      EngineMetrics m;
      return engine_metrics && engine_metrics(&m) ? get(m) : 0.0;
    };
  };
  registry.gauge_fn("mxserve_engine_requests_running", "Sequences running in the engine (last step)",
                    field([](const EngineMetrics& m) { return double(m.num_running); }));
  registry.gauge_fn("mxserve_engine_requests_waiting", "Sequences waiting in the engine's queue (last step)",
                    field([](const EngineMetrics& m) { return double(m.num_waiting); }));
  registry.gauge_fn("mxserve_kv_cache_usage_ratio", "Fraction of KV blocks referenced by sequences",
                    field([](const EngineMetrics& m) { return m.kv_usage; }));
  registry.gauge_fn("mxserve_kv_cache_blocks_used", "KV blocks referenced by sequences (cached free blocks excluded)",
                    field([](const EngineMetrics& m) { return double(m.kv_blocks_used); }));
  registry.gauge_fn("mxserve_kv_cache_blocks_total", "KV blocks in the pool",
                    field([](const EngineMetrics& m) { return double(m.kv_blocks_total); }));
  registry.gauge_fn("mxserve_prefix_cache_hit_rate", "Prompt tokens served by the prefix cache / tokens looked up",
                    field([](const EngineMetrics& m) { return m.prefix_hit_rate(); }));
  registry.counter_fn("mxserve_prefix_cache_queries_tokens_total", "Prompt tokens looked up in the prefix cache",
                      field([](const EngineMetrics& m) { return double(m.prefix_query_tokens); }));
  registry.counter_fn("mxserve_prefix_cache_hits_tokens_total", "Prompt tokens found in the prefix cache",
                      field([](const EngineMetrics& m) { return double(m.prefix_hit_tokens); }));
  registry.counter_fn("mxserve_engine_generation_tokens_total", "Tokens sampled by the engine",
                      field([](const EngineMetrics& m) { return double(m.generation_tokens); }));
  registry.counter_fn("mxserve_engine_computed_tokens_total",
                      "Tokens run through the model (prefill, decode, recompute)",
                      field([](const EngineMetrics& m) { return double(m.computed_tokens); }));
  registry.counter_fn("mxserve_engine_preemptions_total", "Sequences preempted for lack of KV blocks",
                      field([](const EngineMetrics& m) { return double(m.preemptions); }));
  registry.counter_fn("mxserve_engine_requests_aborted_total", "Requests aborted in the engine (cancel, shutdown)",
                      field([](const EngineMetrics& m) { return double(m.requests_aborted); }));
  registry.counter_fn("mxserve_engine_steps_total", "Engine steps run",
                      field([](const EngineMetrics& m) { return double(m.steps); }));
}

void ServerMetrics::observe_timings(const RequestTimings& t, int first_answer_index) {
  if (t.first_scheduled > 0) queue_time.observe(t.queue_s());
  if (t.first_token > 0) ttft.observe(t.ttft_s());
  if (first_answer_index >= 0 && size_t(first_answer_index) < t.token_times.size())
    time_to_first_answer.observe(t.token_times[size_t(first_answer_index)] - t.arrival);
  if (t.token_times.size() >= 2) tpot.observe(t.mean_tpot_s());
  for (size_t i = 1; i < t.token_times.size(); ++i) itl.observe(t.token_times[i] - t.token_times[i - 1]);
  if (t.end > 0) e2e.observe(t.e2e_s());
}

void ServerMetrics::count_harmony_finish(const std::string& finish_reason, const TokenEvent& ev, int reasoning,
                                         int64_t slips, int first_answer_index) {
  if (finish_reason == "length")
    finished_length.inc();
  else if (finish_reason == "tool_calls")
    finished_tool_calls.inc();
  else
    finished_stop.inc();
  prompt_tokens.inc(ev.num_prompt_tokens);
  completion_tokens.inc(ev.num_output_tokens);
  reasoning_tokens.inc(reasoning);
  harmony_slips.inc(double(slips));
  observe_timings(ev.timings, first_answer_index);
}

}  // namespace mxs::server
