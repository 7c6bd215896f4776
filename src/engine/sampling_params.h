// Per-request sampling parameters and the counter-based random numbers every backend shares, so that a
// request with a seed samples the same tokens on the CPU and the CUDA backend (same seed, same output).
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

// The top-p helpers below are compiled for the GPU too (src/cuda/kernels/sampling_*.cu): one definition for both.
#if defined(__CUDACC__)
#define MXS_HOST_DEVICE __host__ __device__
#else
#define MXS_HOST_DEVICE
#endif

namespace mxs {

// One entry of a request's logit_bias (OpenAI): `bias` is added to the token's raw logit before the penalties. A
// bias of -inf (only min_tokens makes one: step_logit_bias) sets the logit to -inf instead: the token cannot be drawn.
struct LogitBias {
  int32_t token = 0;
  float bias = 0.0f;
};

struct SamplingParams {
  static constexpr int kMaxLogitBias = 1024;    // logit_bias entries per request
  static constexpr int kMaxMinTokensIds = 64;   // min_tokens_ids per request

  float temperature = 1.0f;        // 0 => greedy (argmax, first index on ties)
  float top_p = 1.0f;              // (0, 1]
  int top_k = 0;                   // 0 => off
  float min_p = 0.0f;              // [0, 1]
  float frequency_penalty = 0.0f;  // [-2, 2], OpenAI semantics, over generated tokens
  float presence_penalty = 0.0f;   // [-2, 2], over generated tokens
  float repetition_penalty = 1.0f; // (0, 2], HF/vLLM semantics, over prompt + generated tokens
  uint64_t seed = 0;               // always set: the engine draws one when the request has none
  bool logprobs = false;           // return the sampled token's logprob
  int top_logprobs = 0;            // [0, 20]: also the top-N alternatives
  std::vector<LogitBias> logit_bias;  // distinct tokens, biases in [-100, 100], at most kMaxLogitBias (OpenAI)
  // vLLM's min_tokens: while fewer than min_tokens tokens have been generated, the tokens of min_tokens_ids cannot be
  // drawn (their logits are -inf). The engine sets min_tokens_ids to the request's stop tokens when it admits it.
  int min_tokens = 0;
  std::vector<int32_t> min_tokens_ids;

  bool greedy() const { return temperature == 0.0f; }
  // Throws mxs::Error naming the parameter and its allowed range.
  void validate() const;
};

// The logit edits of the step that draws generated token number `step` (0-based; cpu/sampler.h step 1): logit_bias,
// and while step < min_tokens the min_tokens_ids at -inf (replacing their logit_bias entry). One entry per token: the
// logit_bias order, then the min_tokens_ids that logit_bias does not hold. Every backend stages these entries.
// (Header-only: the CPU and CUDA runners, which do not link the engine library, stage these.)
inline std::vector<LogitBias> step_logit_bias(const SamplingParams& p, uint64_t step) {
  std::vector<LogitBias> out = p.logit_bias;
  if (p.min_tokens <= 0 || step >= uint64_t(p.min_tokens)) return out;
  for (int32_t id : p.min_tokens_ids) {
    bool found = false;
    for (LogitBias& e : out)
      if (e.token == id) e.bias = -INFINITY, found = true;
    if (!found) out.push_back({id, -INFINITY});
  }
  return out;
}
// A logit after its entry (-inf bans the token; anything else is added in fp32).
MXS_HOST_DEVICE inline float apply_logit_bias(float logit, float bias) {
  return bias == -INFINITY ? bias : logit + bias;
}

// splitmix64: the mixing function behind sample_uniform (also usable in device code: plain integer math).
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The uniform number in [0, 1) that picks the `step`-th generated token of a request with `seed`.
inline float sample_uniform(uint64_t seed, uint64_t step) {
  const uint64_t r = splitmix64(seed ^ splitmix64(step + 0x5851f42d4c957f2dull));
  return float(r >> 40) * (1.0f / 16777216.0f);  // 24 random bits
}

// Top-p's arithmetic (cpu/sampler.h step 7): integers, so that any summation order gives the same sums and the
// GPU can find the cut by a radix select over the whole GPU instead of a sort. A kept candidate of relative weight
// w = p / p_max in [0, 1] counts floor(w 2^43) units (w < 2^-43 counts 0); the top-p cut keeps the shortest prefix of
// the order whose units reach top_p_target(top_p, total units of the candidates). 2^43 keeps a vocabulary of up to
// kTopPMaxVocab candidates below 2^63 units.
constexpr int kTopPUnitBits = 43;
constexpr int kTopPMaxVocab = 1 << 20;
MXS_HOST_DEVICE inline uint64_t top_p_units(float w) { return uint64_t(double(w) * double(1ull << kTopPUnitBits)); }
// ceil(top_p * total) in double arithmetic, at least 1 (the best candidate always stays), at most total.
MXS_HOST_DEVICE inline uint64_t top_p_target(float top_p, uint64_t total) {
  const uint64_t t = uint64_t(::ceil(double(top_p) * double(total)));
  return t < 1 ? 1 : (t > total ? total : t);
}

}  // namespace mxs
