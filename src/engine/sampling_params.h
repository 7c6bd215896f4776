// Per-request sampling parameters and the counter-based random numbers every backend shares, so that a
// request with a seed samples the same tokens on the CPU and the CUDA backend (same seed, same output).
#pragma once
#include <cstdint>
#include <string>

namespace mxs {

struct SamplingParams {
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

  bool greedy() const { return temperature == 0.0f; }
  // Throws mxs::Error naming the parameter and its allowed range.
  void validate() const;
};

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

}  // namespace mxs
