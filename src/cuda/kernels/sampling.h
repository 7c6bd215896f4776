// On-GPU sampling, token for token the CPU reference (src/cpu/sampler.h, whose numbered steps these
// kernels follow): raw logprobs / top logprobs, logit bias, repetition then frequency/presence penalties, greedy
// argmax (lowest id on ties) or temperature -> order (z descending, ties -> lower id) -> top-k -> top-p ->
// min-p -> inverse-CDF draw over the kept ids in ascending id order with u = sample_uniform(seed, step).
// Only token ids and logprobs go back.
// No sort anywhere: top-k and top-p each keep a prefix of the order, found as its last element by a radix select
// (the k-th candidate; the candidate at which top-p's integer units reach their target: sums of integers do not
// depend on their order), so the kept set is a threshold test on (z, id); min-p is a test on w alone.
// Two ways to run a step: sampling_prepare (one CTA per row), or the spread path (sampling.cu, "Spread path"): every
// pass over a row on 128 CTAs, the selects' histograms summed across them. The same arithmetic, so the same token and
// logprobs bit for bit. A step of plain greedy rows (sampling_is_plain_greedy: the LM head's argmax key is the token)
// takes sampling_prepare's one launch; any other step the spread path.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

constexpr int kMaxTopLogprobs = 20;
// The draw's chunks of ids (one per thread of its 1024-thread CTA), and the largest vocabulary the spread kernels
// stage (1024 ids per chunk).
constexpr int kSpreadChunks = 1024;
constexpr int kSpreadMaxVocab = kSpreadChunks * 1024;

// One sampled sequence (POD, copied to the device each step).
struct SampleSeqParams {
  float temperature = 0.f, top_p = 1.f, min_p = 0.f;
  float frequency_penalty = 0.f, presence_penalty = 0.f, repetition_penalty = 1.f;
  int top_k = 0;
  int top_logprobs = 0;   // 0..20
  int want_logprob = 0;
  int bias_offset = 0, n_bias = 0;  // the step's logit bias entries (step_logit_bias) in bias_ids / bias_values
  int mask_offset = -1;  // >= 0: the allowed-token mask's first word in SamplingParamsDev::allowed (structured outputs)
  int rep_offset = 0, n_rep = 0;   // distinct ids of prompt + output in SamplingInputs::ids
  int out_offset = 0, n_out = 0;   // distinct output ids in ids, their counts in counts
  // >= 0: SamplingParamsDev::tokens[pending_index] is the sequence's last output token, which its lists above do not
  // hold yet (async scheduling: sampled in the previous step, not yet on the host); the penalties count it too.
  int pending_index = -1;
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

// A spread select's progress on one row (sampling.cu, sampling_spread_select): the key digits chosen so far and the
// units still to reach among the candidates that match them.
struct SpreadSelectState {
  uint32_t prefix, mask;
  unsigned long long rest;
};

// Workspaces of the spread path (sampling.cu), for `rows` sequences of `vocab` ids, carved from one zero-initialized
// allocation of spread_workspace_bytes(rows, vocab) (spread_workspace_at); the kernels leave the zeroed parts zeroed.
struct SpreadWorkspace {
  unsigned* row_max = nullptr;                // [rows][2] zeroed: the orderable max of z, the NaN flag
  int* row_last = nullptr;                    // [rows] zeroed: 1 + the largest kept id (rows with a cut)
  int* row_cut = nullptr;                     // [rows][kSpreadCuts][2]: each cut's last element (value bits, id)
  unsigned long long* select_hist = nullptr;  // [rows][256] zeroed: a select pass's units per digit
  unsigned* select_arrivals = nullptr;        // [rows] zeroed: CTAs done with a select pass
  SpreadSelectState* select_state = nullptr;  // [rows]
  unsigned* slice_counts = nullptr;           // [rows][kSpreadSelectCtas]: ids with the selected key per slice
  unsigned* penalized = nullptr;              // [rows][ceil(vocab / 32)] zeroed: bit i: z[i] is id i's penalized logit
  unsigned long long* row_best = nullptr;     // [rows] zeroed: greedy rows' argmax_key of the (penalized) logits
  unsigned* raw_max = nullptr;                // [rows] zeroed: the raw logits' orderable max (rows with logprobs)
  double* raw_sums = nullptr;                 // [rows][128]: the raw log-normalizer's sum per weights CTA
  int* top_count = nullptr;                   // [rows] zeroed: top logprobs gathered so far
  int32_t* top_ids = nullptr;                 // [rows][kMaxTopLogprobs]: the top logprobs' ids, in gather order
  double* chunk_sums = nullptr;               // [rows][kSpreadChunks]: the draw's chunk sums, id order
};
constexpr int kSpreadSelectCtas = 128;  // most CTAs per row of the select passes (each a contiguous slice of ids)
// The spread path's selects: 0 top-k and 1 top-p (on z), 2 top logprobs (the N best raw logits, by count).
constexpr int kSpreadCuts = 3;

struct SamplingParamsDev {
  const void* logits = nullptr;     // [n_seqs, vocab] bf16
  // Optional [n_argmax_rows >= n_seqs] argmax keys from the LM head (gemv_bf16.h): plain greedy rows
  // (sampling_is_plain_greedy) take their token from it and skip the pass over the vocabulary. The keys are
  // consumed: every row < n_argmax_rows is zeroed once read, so that the next step's LM head (which atomicMax-es into
  // them) starts from zeros without a memset between it and its predecessor (a memset node breaks the PDL chain: the
  // LM head could not load weights during the last MoE combine).
  unsigned long long* row_argmax = nullptr;
  int n_argmax_rows = 0;
  const SampleSeqParams* seqs = nullptr;  // [n_seqs]
  const int32_t* ids = nullptr;     // penalty id lists
  const int32_t* counts = nullptr;  // counts, parallel to ids (output lists)
  const int32_t* bias_ids = nullptr;    // logit bias entries: token ids (distinct per row)
  const float* bias_values = nullptr;   // their biases, parallel to bias_ids (-inf: banned)
  const uint32_t* allowed = nullptr;    // allowed-token masks, ceil(vocab / 32) words per masked row (mask_offset)
  const int32_t* tokens = nullptr;  // the step's input tokens (rows with SampleSeqParams::pending_index >= 0)
  float* z = nullptr;               // [n_seqs, vocab] fp32 workspace (penalized / tempered logits; the spread path's w)
  SampleResultDev* results = nullptr;  // [n_seqs]
  int n_seqs = 0, vocab = 0;
  // The spread path (sampling.cu, "Spread path") for every row when some row is not plain greedy
  // (sampling_is_plain_greedy) and the path can run (vocab <= kSpreadMaxVocab, `spread` carved); else sampling_prepare
  // for every row. false is always correct (sampling_prepare); true for plain greedy rows alone is correct too.
  bool spread_wanted = false;
  // Some row has a logit bias or a penalty (sampling_edits_logits): false skips the spread path's penalty kernel (true
  // is always correct).
  bool spread_penalties = true;
  // The spread path's selects to run: bit 0 when some row has top-k (sampling_has_top_k), bit 1 top-p
  // (sampling_has_top_p), bit 2 top logprobs. A clear bit skips that select's kernels; 7 is always correct.
  int spread_selects = 7;
  SpreadWorkspace spread;
};

// Cuts at temperature > 0: top-k (0 < top_k < vocab), top-p (< 1), min-p (> 0).
__host__ __device__ inline bool sampling_has_top_k(const SampleSeqParams& q, int vocab) {
  return q.temperature != 0.0f && q.top_k > 0 && q.top_k < vocab;
}
__host__ __device__ inline bool sampling_has_top_p(const SampleSeqParams& q) {
  return q.temperature != 0.0f && q.top_p < 1.0f;
}
__host__ __device__ inline bool sampling_has_cut(const SampleSeqParams& q, int vocab) {
  return sampling_has_top_k(q, vocab) || sampling_has_top_p(q) || (q.temperature != 0.0f && q.min_p > 0.0f);
}
// Steps 1a-2 of cpu/sampler.h rewrite some listed ids' logits: a logit bias or a penalty.
__host__ __device__ inline bool sampling_edits_logits(const SampleSeqParams& q) {
  return q.n_bias > 0 || q.repetition_penalty != 1.0f || q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f;
}
// A plain greedy row: its token is the argmax of the raw logits (the LM head's argmax key,
// SamplingParamsDev::row_argmax, when set), and nothing else is asked of it (no bias, no penalties, no allowed-token
// mask, no logprobs).
__host__ __device__ inline bool sampling_is_plain_greedy(const SampleSeqParams& q) {
  return q.temperature == 0.0f && !sampling_edits_logits(q) && q.mask_offset < 0 && !q.want_logprob &&
         q.top_logprobs == 0;
}

size_t spread_workspace_bytes(int rows, int vocab);
// The workspace carved from `base` (spread_workspace_bytes(rows, vocab) bytes, 256-byte aligned, zeroed by the caller
// once).
SpreadWorkspace spread_workspace_at(void* base, int rows, int vocab);

void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream);

// Device copy of mxs::sample_uniform, for the test that the two agree.
void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream);

}  // namespace mxs::cuda
