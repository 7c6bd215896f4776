// Token sampling from one row of logits, the reference the CUDA sampler must reproduce token for token.
// Stop tokens and stop strings are the engine's business, not the sampler's.
//
// Exact order of operations (z = the fp32 copy of the bf16 logits, V entries):
//   0. logprobs (if asked): log-softmax of the RAW z (before any penalty or temperature), computed as
//      z_i - max - log(sum_j exp(z_j - max)) with the sum in double. top_logprobs: the N best raw logits,
//      descending, ties -> lower id.
//   1a. logit bias: for each entry (i, b) of step_logit_bias(params, output.size()) (engine/sampling_params.h: the
//      request's logit_bias, and -inf for its min_tokens_ids while fewer than min_tokens tokens are generated):
//        z_i = apply_logit_bias(z_i, b)   (z_i + b in fp32; b = -inf sets -inf)
//   1b. repetition penalty (HF/vLLM), over the distinct ids of prompt + output:
//        z_i = z_i > 0 ? z_i / r : z_i * r
//   2. frequency / presence penalties (OpenAI), over the output ids, c_i = count of i in output:
//        z_i -= c_i * frequency_penalty + (c_i > 0 ? presence_penalty : 0)
//   2b. allowed set (structured outputs; SequenceStep::allowed_tokens, when given): z_i = -inf for every id whose
//      bit is clear.
//   3. greedy (temperature == 0): the argmax of z, first (lowest) id on ties. Done; steps 4-8 skipped.
//   4. temperature: z_i = z_i / T (fp32 division).
//   5. top-k (0 < k < V): keep the k best candidates, "best" = larger z, ties -> lower id.
//   6. weights: w_i = exp(z_i - z_max) in fp32 (z_max over the kept candidates), i.e. p_i / p_max.
//   7. top-p (< 1): in integer units u_i = top_p_units(w_i) = floor(w_i 2^43) (engine/sampling_params.h), U = the
//      sum over the kept candidates, target = top_p_target(top_p, U) = ceil(top_p U) (>= 1, <= U): keep the shortest
//      prefix of the order of 5 whose units reach the target (so the best one, u = 2^43, always stays). Integer sums
//      do not depend on their order, which lets the GPU find the cut by a radix select instead of a sort; w < 2^-43
//      (p < 1.2e-13 p_max) counts nothing.
//   8. min-p (> 0): keep the candidates with w_i >= min_p (the best one, w = 1, always stays).
//   9. draw: u = sample_uniform(seed, output_tokens.size()); walk the kept candidates in ASCENDING ID order,
//      cumulative w in double; pick the first whose cumulative weight is > u * W' (W' = sum of the kept w, in
//      double); the last kept candidate if rounding leaves none. The id order needs no sort of the vocabulary.
//   Summation order inside the double totals is not part of the contract: it only matters when u falls
//   within ~1e-12 of a boundary of the CDF.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/model_runner.h"
#include "engine/sampling_params.h"

namespace mxs::cpu {

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;           // of `token` under the raw logits (when params.logprobs)
  std::vector<TokenLogprob> top;  // params.top_logprobs best under the raw logits
};

// logits: [vocab] fp32. `params` should have passed SamplingParams::validate() (the engine does it when a
// request is admitted); values the math cannot use (e.g. top_p = 0) and NaN logits throw mxs::Error.
// allowed: bitmask words over the vocabulary (step 2b), or empty.
SampleResult sample_token(std::span<const float> logits, const SamplingParams& params,
                          std::span<const int32_t> prompt_tokens, std::span<const int32_t> output_tokens,
                          std::span<const uint32_t> allowed = {});

// log-softmax of the raw logits at one id (step 0 above).
float raw_logprob(std::span<const float> logits, int32_t token);

}  // namespace mxs::cpu
