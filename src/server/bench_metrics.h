// `mxserve bench serve` metric math, vLLM `bench serve` definitions: per-request timelines (seconds since the
// run started) in, TTFT / TPOT / ITL / E2E / time-to-first-answer distributions, throughputs and goodput out.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mxs::server::bench {

// One request as the client saw it. Times are seconds on one clock (the run's start is 0).
struct RequestRecord {
  bool ok = false;
  int http_status = 0;  // 0 when no response came (connect error, timeout)
  std::string error;    // why it failed; "" when ok
  double start = 0;     // request sent
  double end = 0;       // last byte of the stream read
  // Arrival times of the SSE chunks that carried generated output (reasoning, answer, tool call or raw
  // completion text); the role-only opener and the usage-only closer are not output and are not here.
  std::vector<double> chunk_times;
  double first_answer = -1;  // first chunk with answer content (after any reasoning); -1: none came
  int prompt_tokens = 0;     // from the usage chunk
  int output_tokens = 0;     // completion_tokens from the usage chunk (chunk count when usage is missing)
  int reasoning_tokens = 0;  // usage.completion_tokens_details.reasoning_tokens
};

// Mean, median, p90, p99 of one quantity (milliseconds). Percentiles interpolate linearly between order
// statistics (numpy's default), so p50 of {1, 2} is 1.5.
struct Distribution {
  int count = 0;
  double mean = 0, median = 0, p90 = 0, p99 = 0;
};
Distribution summarize(std::vector<double> values);
double percentile(std::vector<double> sorted, double q);  // q in [0, 100]; 0 for no values

// Service-level objectives for goodput (milliseconds; <= 0 = not set). A request is "good" when it
// succeeded and meets every set objective.
struct Slo {
  double ttft_ms = 0, tpot_ms = 0, e2e_ms = 0;
};
Slo parse_goodput(const std::string& spec);  // "ttft:500,tpot:50[,e2el:2000]"; throws mxs::Error

// Per-request derived quantities (milliseconds; negative when undefined).
double ttft_ms(const RequestRecord& r);  // first output chunk - start
double tpot_ms(const RequestRecord& r);  // (e2e - ttft) / (output_tokens - 1); undefined for < 2 tokens
double e2e_ms(const RequestRecord& r);
std::vector<double> itl_ms(const RequestRecord& r);  // gaps between consecutive output chunks

struct Summary {
  int completed = 0, failed = 0;
  double duration_s = 0;  // first request sent .. last response done
  long total_input_tokens = 0, total_output_tokens = 0, total_reasoning_tokens = 0;
  double request_throughput = 0;      // completed requests / s
  double output_throughput = 0;       // output tokens / s
  double total_token_throughput = 0;  // (input + output) tokens / s
  double peak_output_throughput = 0;  // most output tokens in one 1 s bucket of chunk arrivals
  double goodput = 0;                 // good requests / s (only when an SLO is set)
  bool has_slo = false;
  Distribution ttft, tpot, itl, e2e, ttfa;  // ttfa: time to first answer token
};
// duration_s = max(end) - min(start) over all records.
Summary summarize_run(const std::vector<RequestRecord>& records, const Slo& slo);

nlohmann::json to_json(const Distribution& d);
nlohmann::json to_json(const Summary& s);

}  // namespace mxs::server::bench
