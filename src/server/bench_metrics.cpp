// Metric math of `mxserve bench serve` (see bench_metrics.h for the definitions).
#include "server/bench_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>

#include "common/error.h"

namespace mxs::server::bench {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - double(lo)) * (v[hi] - v[lo]);
}

Distribution summarize(std::vector<double> values) {
  Distribution d;
  d.count = int(values.size());
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / double(values.size());
  d.median = percentile(values, 50);
  d.p90 = percentile(values, 90);
  d.p99 = percentile(values, 99);
  return d;
}

Slo parse_goodput(const std::string& spec) {
  Slo slo;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':');
    MXS_CHECK(colon != std::string::npos,
              strfmt("--goodput %s: '%s' is not NAME:MS (names: ttft, tpot, e2el)", spec.c_str(), item.c_str()));
    const std::string name = item.substr(0, colon);
    double ms = 0;
    try {
      ms = std::stod(item.substr(colon + 1));
    } catch (const std::exception&) {
      ms = -1;
    }
    MXS_CHECK(ms > 0, strfmt("--goodput %s: '%s' needs a positive number of milliseconds", spec.c_str(), item.c_str()));
    if (name == "ttft")
      slo.ttft_ms = ms;
    else if (name == "tpot")
      slo.tpot_ms = ms;
    else if (name == "e2el")
      slo.e2e_ms = ms;
    else
      throw Error(strfmt("--goodput %s: unknown objective '%s' (use ttft, tpot, e2el)", spec.c_str(), name.c_str()));
  }
  return slo;
}

double ttft_ms(const RequestRecord& r) {
  return r.chunk_times.empty() ? -1 : 1e3 * (r.chunk_times.front() - r.start);
}

double e2e_ms(const RequestRecord& r) { return 1e3 * (r.end - r.start); }

double tpot_ms(const RequestRecord& r) {
  if (r.output_tokens < 2 || r.chunk_times.empty()) return -1;
  return (e2e_ms(r) - ttft_ms(r)) / double(r.output_tokens - 1);
}

std::vector<double> itl_ms(const RequestRecord& r) {
  std::vector<double> gaps;
  for (size_t i = 1; i < r.chunk_times.size(); ++i) gaps.push_back(1e3 * (r.chunk_times[i] - r.chunk_times[i - 1]));
  return gaps;
}

Summary summarize_run(const std::vector<RequestRecord>& records, const Slo& slo) {
  Summary s;
  s.has_slo = slo.ttft_ms > 0 || slo.tpot_ms > 0 || slo.e2e_ms > 0;
  double t0 = std::numeric_limits<double>::infinity(), t1 = -t0;
  std::vector<double> ttft, tpot, itl, e2e, ttfa;
  std::map<long, double> tokens_per_second;  // 1 s bucket since t0 -> output tokens that arrived in it
  int good = 0;
  for (const RequestRecord& r : records) {
    t0 = std::min(t0, r.start);
    t1 = std::max(t1, r.end);
  }
  for (const RequestRecord& r : records) {
    if (!r.ok) {
      ++s.failed;
      continue;
    }
    ++s.completed;
    s.total_input_tokens += r.prompt_tokens;
    s.total_output_tokens += r.output_tokens;
    s.total_reasoning_tokens += r.reasoning_tokens;
    const double ft = ttft_ms(r), tp = tpot_ms(r), e = e2e_ms(r);
    if (ft >= 0) ttft.push_back(ft);
    if (tp >= 0) tpot.push_back(tp);
    e2e.push_back(e);
    if (r.first_answer >= 0) ttfa.push_back(1e3 * (r.first_answer - r.start));
    for (double g : itl_ms(r)) itl.push_back(g);
    // A chunk may carry several tokens: the request's tokens are spread evenly over its chunks.
    if (!r.chunk_times.empty()) {
      const double per_chunk = double(r.output_tokens) / double(r.chunk_times.size());
      for (double t : r.chunk_times) tokens_per_second[long(std::floor(t - t0))] += per_chunk;
    }
    const bool meets = (slo.ttft_ms <= 0 || (ft >= 0 && ft <= slo.ttft_ms)) &&
                       (slo.tpot_ms <= 0 || tp <= slo.tpot_ms) && (slo.e2e_ms <= 0 || e <= slo.e2e_ms);
    if (meets) ++good;
  }
  s.duration_s = records.empty() ? 0 : std::max(t1 - t0, 0.0);
  if (s.duration_s > 0) {
    s.request_throughput = s.completed / s.duration_s;
    s.output_throughput = double(s.total_output_tokens) / s.duration_s;
    s.total_token_throughput = double(s.total_input_tokens + s.total_output_tokens) / s.duration_s;
    if (s.has_slo) s.goodput = good / s.duration_s;
  }
  for (const auto& [bucket, tokens] : tokens_per_second) s.peak_output_throughput = std::max(s.peak_output_throughput, tokens);
  s.ttft = summarize(std::move(ttft));
  s.tpot = summarize(std::move(tpot));
  s.itl = summarize(std::move(itl));
  s.e2e = summarize(std::move(e2e));
  s.ttfa = summarize(std::move(ttfa));
  return s;
}

nlohmann::json to_json(const Distribution& d) {
  return {{"count", d.count}, {"mean_ms", d.mean}, {"median_ms", d.median}, {"p90_ms", d.p90}, {"p99_ms", d.p99}};
}

nlohmann::json to_json(const Summary& s) {
  nlohmann::json j = {{"completed", s.completed},
                      {"failed", s.failed},
                      {"duration_s", s.duration_s},
                      {"total_input_tokens", s.total_input_tokens},
                      {"total_output_tokens", s.total_output_tokens},
                      {"total_reasoning_tokens", s.total_reasoning_tokens},
                      {"request_throughput", s.request_throughput},
                      {"output_throughput", s.output_throughput},
                      {"total_token_throughput", s.total_token_throughput},
                      {"peak_output_throughput", s.peak_output_throughput},
                      {"goodput", s.has_slo ? nlohmann::json(s.goodput) : nlohmann::json(nullptr)},
                      {"ttft", to_json(s.ttft)},
                      {"tpot", to_json(s.tpot)},
                      {"itl", to_json(s.itl)},
                      {"e2el", to_json(s.e2e)},
                      {"ttfa", to_json(s.ttfa)}};
  return j;
}

}  // namespace mxs::server::bench
