#include "engine/sampling_params.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace mxs {

void SamplingParams::validate() const {
  auto bad = [](const char* name, double v, const char* range) {
    throw Error(strfmt("%s = %g is out of range: must be %s", name, v, range));
  };
  if (!std::isfinite(temperature) || temperature < 0.0f || temperature > 100.0f)
    bad("temperature", temperature, "in [0, 100] (0 = greedy)");
  if (!std::isfinite(top_p) || top_p <= 0.0f || top_p > 1.0f) bad("top_p", top_p, "in (0, 1]");
  if (top_k < 0) bad("top_k", top_k, ">= 0 (0 = off)");
  if (!std::isfinite(min_p) || min_p < 0.0f || min_p > 1.0f) bad("min_p", min_p, "in [0, 1]");
  if (!std::isfinite(frequency_penalty) || frequency_penalty < -2.0f || frequency_penalty > 2.0f)
    bad("frequency_penalty", frequency_penalty, "in [-2, 2]");
  if (!std::isfinite(presence_penalty) || presence_penalty < -2.0f || presence_penalty > 2.0f)
    bad("presence_penalty", presence_penalty, "in [-2, 2]");
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f || repetition_penalty > 2.0f)
    bad("repetition_penalty", repetition_penalty, "in (0, 2]");
  if (top_logprobs < 0 || top_logprobs > 20) bad("top_logprobs", top_logprobs, "in [0, 20]");
  if (logit_bias.size() > size_t(kMaxLogitBias))
    throw Error(strfmt("logit_bias has %zu entries: at most %d are allowed", logit_bias.size(), kMaxLogitBias));
  std::vector<int32_t> tokens;
  for (const LogitBias& e : logit_bias) {
    if (e.token < 0) throw Error(strfmt("logit_bias: token %d is not a token id", e.token));
    if (!std::isfinite(e.bias) || e.bias < -100.0f || e.bias > 100.0f)
      throw Error(strfmt("logit_bias: the bias of token %d is %g: must be in [-100, 100]", e.token, double(e.bias)));
    tokens.push_back(e.token);
  }
  std::sort(tokens.begin(), tokens.end());
  if (auto d = std::adjacent_find(tokens.begin(), tokens.end()); d != tokens.end())
    throw Error(strfmt("logit_bias: token %d appears twice", *d));
  if (min_tokens < 0) bad("min_tokens", min_tokens, ">= 0");
  if (min_tokens_ids.size() > size_t(kMaxMinTokensIds))
    throw Error(strfmt("min_tokens applies to %zu stop tokens: at most %d are allowed", min_tokens_ids.size(),
                       kMaxMinTokensIds));
  for (int32_t id : min_tokens_ids)
    if (id < 0) throw Error(strfmt("min_tokens: stop token %d is not a token id", id));
}

}  // namespace mxs
