// On-GPU sampling, token for token the CPU reference (src/cpu/sampler.h, whose numbered steps these
// kernels follow): raw logprobs / top logprobs, repetition then frequency/presence penalties, greedy
// argmax (lowest id on ties) or temperature -> order (z descending, ties -> lower id) -> top-k -> top-p ->
// min-p -> inverse-CDF draw over the kept ids in ascending id order with u = sample_uniform(seed, step).
// Only token ids and logprobs go back.
// The order is a stable segmented radix sort (CUB), run only when a sequence in the step samples.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

constexpr int kMaxTopLogprobs = 20;

// One sampled sequence (POD, copied to the device each step).
struct SampleSeqParams {
  float temperature = 0.f, top_p = 1.f, min_p = 0.f;
  float frequency_penalty = 0.f, presence_penalty = 0.f, repetition_penalty = 1.f;
  int top_k = 0;
  int top_logprobs = 0;   // 0..20
  int want_logprob = 0;
  int rep_offset = 0, n_rep = 0;   // distinct ids of prompt + output in SamplingInputs::ids
  int out_offset = 0, n_out = 0;   // distinct output ids in ids, their counts in counts
  uint64_t seed = 0;
  uint64_t step = 0;      // number of tokens generated so far (the RNG counter)
};

struct SampleResultDev {
  int32_t token;
  float logprob;
  int32_t top_ids[kMaxTopLogprobs];
  float top_lp[kMaxTopLogprobs];
  int32_t error;  // 0 ok, 1 NaN in the logits, 2 non-finite max after penalties/temperature
};

struct SamplingParamsDev {
  const void* logits = nullptr;     // [n_seqs, vocab] bf16
  // Optional [n_seqs] argmax keys from the LM head (gemv_bf16.h): greedy rows without penalties or logprobs
  // take their token from it and skip the pass over the vocabulary.
  const unsigned long long* row_argmax = nullptr;
  const SampleSeqParams* seqs = nullptr;  // [n_seqs]
  const int32_t* ids = nullptr;     // penalty id lists
  const int32_t* counts = nullptr;  // counts, parallel to ids (output lists)
  float* z = nullptr;               // [n_seqs, vocab] fp32 workspace (penalized / tempered logits)
  float* z_sorted = nullptr;        // [n_seqs, vocab] fp32 workspace
  int32_t* order_in = nullptr;      // [n_seqs, vocab] workspace
  int32_t* order = nullptr;         // [n_seqs, vocab] workspace
  const int32_t* segment_offsets = nullptr;  // [max_seqs + 1] = s * vocab
  void* sort_temp = nullptr;
  size_t sort_temp_bytes = 0;
  SampleResultDev* results = nullptr;  // [n_seqs]
  int n_seqs = 0, vocab = 0;
  bool any_random = false;          // some sequence has temperature > 0: run the sort + draw
};

// Bytes of CUB temp storage for max_seqs rows of vocab.
size_t sampling_sort_temp_bytes(int max_seqs, int vocab);
void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream);

// Device copy of mxs::sample_uniform, for the test that the two agree.
void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream);

}  // namespace mxs::cuda
