// Sampler: implements the numbered steps of sampler.h, in that order.
#include "cpu/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"

namespace mxs::cpu {
namespace {

// max and log(sum exp(z - max)) of the raw logits.
void log_normalizer(std::span<const float> z, float* max_out, double* log_sum_out) {
  float m = -INFINITY;
  for (float v : z) m = std::max(m, v);
  double s = 0.0;
  for (float v : z) s += std::exp(double(v) - double(m));
  *max_out = m;
  *log_sum_out = std::log(s);
}

// "a before b": larger logit first, lower id on ties.
struct ByLogitDesc {
  const float* z;
  bool operator()(int32_t a, int32_t b) const { return z[a] > z[b] || (z[a] == z[b] && a < b); }
};

// The engine validates requests (SamplingParams::validate, engine layer); this only refuses what the math
// below cannot use, so that a bad value fails its sequence instead of producing garbage.
void check_usable(const SamplingParams& p) {
  auto bad = [](const char* name, double v) {
    throw Error(strfmt("sampler: %s = %g cannot be used (run SamplingParams::validate first)", name, v));
  };
  if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature)) bad("temperature", p.temperature);
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) bad("top_p", p.top_p);
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) bad("min_p", p.min_p);
  if (p.top_k < 0) bad("top_k", p.top_k);
  if (!(p.repetition_penalty > 0.0f) || !std::isfinite(p.repetition_penalty))
    bad("repetition_penalty", p.repetition_penalty);
  if (!std::isfinite(p.frequency_penalty)) bad("frequency_penalty", p.frequency_penalty);
  if (!std::isfinite(p.presence_penalty)) bad("presence_penalty", p.presence_penalty);
  if (p.top_logprobs < 0) bad("top_logprobs", p.top_logprobs);
}

}  // namespace

float raw_logprob(std::span<const float> logits, int32_t token) {
  float m;
  double ls;
  log_normalizer(logits, &m, &ls);
  return float(double(logits[size_t(token)]) - double(m) - ls);
}

SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> prompt_tokens, std::span<const int32_t> output_tokens,
                          std::span<const uint32_t> allowed) {
  check_usable(params);
  const int32_t vocab = int32_t(logits.size());
  MXS_CHECK(vocab > 0, "sampler: empty logits row");
  for (float v : logits) MXS_CHECK(!std::isnan(v), "sampler: the logits contain NaN");
  SampleResult result;

  // 0. logprobs of the raw logits.
  float raw_max = 0.0f;
  double raw_log_sum = 0.0;
  if (params.logprobs || params.top_logprobs > 0) log_normalizer(logits, &raw_max, &raw_log_sum);
  auto raw_lp = [&](int32_t id) { return float(double(logits[size_t(id)]) - double(raw_max) - raw_log_sum); };
  if (params.top_logprobs > 0) {
    std::vector<int32_t> ids(static_cast<size_t>(vocab));
    std::iota(ids.begin(), ids.end(), 0);
    const int n = std::min(params.top_logprobs, vocab);
    std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), ByLogitDesc{logits.data()});
    for (int i = 0; i < n; ++i) result.top.push_back({ids[size_t(i)], raw_lp(ids[size_t(i)])});
  }

  // 1-2. logit bias, then the penalties, on a copy.
  std::vector<float> z(logits.begin(), logits.end());
  auto check_id = [&](int32_t id) {
    MXS_CHECK(id >= 0 && id < vocab, strfmt("sampler: token id %d in the history is outside the vocabulary [0, %d)",
                                            id, vocab));
  };
  for (const LogitBias& e : step_logit_bias(params, output_tokens.size())) {
    MXS_CHECK(e.token >= 0 && e.token < vocab,
              strfmt("sampler: logit_bias token %d is outside the vocabulary [0, %d)", e.token, vocab));
    z[size_t(e.token)] = apply_logit_bias(z[size_t(e.token)], e.bias);
  }
  if (params.repetition_penalty != 1.0f) {
    std::unordered_set<int32_t> seen;
    for (auto span : {prompt_tokens, output_tokens})
      for (int32_t id : span) {
        check_id(id);
        if (!seen.insert(id).second) continue;
        float& v = z[size_t(id)];
        v = v > 0.0f ? v / params.repetition_penalty : v * params.repetition_penalty;
      }
  }
  if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
    std::unordered_map<int32_t, int> count;
    for (int32_t id : output_tokens) {
      check_id(id);
      ++count[id];
    }
    for (const auto& [id, c] : count)
      z[size_t(id)] -= float(c) * params.frequency_penalty + params.presence_penalty;
  }

  // 2b. the allowed set.
  if (!allowed.empty()) {
    MXS_CHECK(allowed.size() == (size_t(vocab) + 31) / 32,
              strfmt("sampler: the allowed-token mask has %zu words for %d logits", allowed.size(), vocab));
    for (int32_t i = 0; i < vocab; ++i)
      if (!(allowed[size_t(i) / 32] >> (i % 32) & 1u)) z[size_t(i)] = -INFINITY;
  }

  auto finish = [&](int32_t token) {
    result.token = token;
    if (params.logprobs) result.logprob = raw_lp(token);
    return result;
  };

  // 3. greedy.
  if (params.greedy()) {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; ++i)
      if (z[size_t(i)] > z[size_t(best)]) best = i;
    return finish(best);
  }

  // 4. temperature.
  for (float& v : z) v = v / params.temperature;

  // 5. top-k: the k best candidates.
  const ByLogitDesc by_logit{z.data()};
  std::vector<int32_t> cand(static_cast<size_t>(vocab));  // kept ids
  std::iota(cand.begin(), cand.end(), 0);
  if (params.top_k > 0 && params.top_k < vocab) {
    std::partial_sort(cand.begin(), cand.begin() + params.top_k, cand.end(), by_logit);
    cand.resize(size_t(params.top_k));
  }
  float z_max = -INFINITY;
  for (int32_t id : cand) z_max = std::max(z_max, z[size_t(id)]);
  MXS_CHECK(std::isfinite(z_max), "sampler: the largest logit is not finite after penalties/temperature");
  // 6. relative weights w = exp(z - z_max) = p / p_max, by id.
  std::vector<float> w(static_cast<size_t>(vocab), 0.0f);
  for (int32_t id : cand) w[size_t(id)] = std::exp(z[size_t(id)] - z_max);
  auto weight = [&](int32_t id) { return w[size_t(id)]; };

  // 7. top-p: walk the candidates best first, sorting only as far as the walk goes (chunks that double), until
  // their units reach the target.
  if (params.top_p < 1.0f) {
    MXS_CHECK(cand.size() <= size_t(kTopPMaxVocab), "sampler: top_p needs a vocabulary of at most 2^20 ids");
    uint64_t total = 0;
    for (int32_t id : cand) total += top_p_units(weight(id));
    const uint64_t target = top_p_target(params.top_p, total);
    uint64_t cum = 0;
    size_t n = 0, sorted_end = 0, chunk = 256;
    while (n < cand.size() && cum < target) {
      if (n == sorted_end) {
        const auto b = cand.begin() + std::ptrdiff_t(sorted_end);
        const size_t end = std::min(cand.size(), sorted_end + chunk);
        if (end < cand.size()) std::nth_element(b, cand.begin() + std::ptrdiff_t(end), cand.end(), by_logit);
        std::sort(b, cand.begin() + std::ptrdiff_t(end), by_logit);
        sorted_end = end;
        chunk *= 2;
      }
      cum += top_p_units(weight(cand[n++]));
    }
    cand.resize(n);
  }
  // 8. min-p.
  if (params.min_p > 0.0f) {
    std::erase_if(cand, [&](int32_t id) { return weight(id) < params.min_p; });
  }

  // 9. inverse-CDF draw over the kept candidates in ascending id order (steps 5 and 7 reorder them).
  if (params.top_k > 0 || params.top_p < 1.0f) std::sort(cand.begin(), cand.end());
  const double u = double(sample_uniform(params.seed, output_tokens.size()));
  double total = 0.0;
  for (int32_t id : cand) total += weight(id);
  const double target = u * total;
  double cum = 0.0;
  for (int32_t id : cand) {
    cum += weight(id);
    if (cum > target) return finish(id);
  }
  return finish(cand.back());
}

}  // namespace mxs::cpu
