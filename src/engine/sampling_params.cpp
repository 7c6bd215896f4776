#include "engine/sampling_params.h"

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
}

}  // namespace mxs
