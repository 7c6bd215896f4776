// On-GPU sampling, token for token the CPU reference (src/cpu/sampler.h, whose numbered steps these
// kernels follow): raw logprobs / top logprobs, repetition then frequency/presence penalties, greedy
// argmax (lowest id on ties) or temperature -> order (z descending, ties -> lower id) -> top-k -> top-p ->
// min-p -> inverse-CDF draw over the kept ids in ascending id order with u = sample_uniform(seed, step).
// Only token ids and logprobs go back.
// Three ways to find the kept set of a row at temperature > 0 (sampling_needs_sort picks):
//   - no cut (top_k 0 or >= vocab, top_p 1, min_p 0: the OpenAI default): every id is kept; the max of z is a
//     block reduction and the draw runs in the same CTA as the penalties, no order at all;
//   - top-k alone: an exact radix select of the k-th best (z, id), the threshold the sorted order would give;
//   - top-p or min-p: a stable descending radix sort (CUB) of the rows that need it (each on its own over the whole
//     GPU, or a segmented sort in which other rows are empty segments), then the cuts on the sorted order.
// The draw is one device function for all three, so a row gets the same token whichever way finds its
// kept set.
// Two ways to run them: one CTA per row (sampling_prepare, sampling_draw: any row), or, when every row of the step is
// a spread row (no penalties, no logprobs; the OpenAI defaults) and at most kRowSortMax of them have a cut, the spread
// path: every pass over a row on 128 CTAs, each cut row sorted on its own (sampling.cu, "Spread path"). The same
// arithmetic in the same order, so the same token bit for bit.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

constexpr int kMaxTopLogprobs = 20;
constexpr int kRowSortMax = 32;  // rows sorted one by one (SamplingParamsDev::sort_rows); more: the segmented sort
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

// Workspaces of the spread path (sampling.cu), for `rows` sequences, carved from one zero-initialized allocation of
// spread_workspace_bytes(rows) (spread_workspace_at); the kernels leave the zeroed parts zeroed.
struct SpreadWorkspace {
  unsigned* row_max = nullptr;    // [rows][2] zeroed: the orderable max of z, the NaN flag
  int* row_last = nullptr;        // [rows] zeroed: 1 + the largest kept id
  int* row_cut = nullptr;         // [rows][2]: the kept set's last element in the order (z as bits, id)
  double* row_total = nullptr;    // [rows]: the weights' sum over the order (top-p rows)
  double* chunk_sums = nullptr;   // [rows][kSpreadChunks]: the draw's chunk sums, id order
  double* sorted_sums = nullptr;  // [rows][kSpreadChunks]: chunk sums of w over the order (top-p rows)
  double* p_sums = nullptr;       // [rows][kSpreadChunks]: chunk sums of w / total over the order (top-p rows)
};

struct SamplingParamsDev {
  const void* logits = nullptr;     // [n_seqs, vocab] bf16
  // Optional [n_argmax_rows >= n_seqs] argmax keys from the LM head (gemv_bf16.h): greedy rows without penalties
  // or logprobs take their token from it and skip the pass over the vocabulary. The keys are consumed: every row
  // < n_argmax_rows is zeroed once read, so that the next step's LM head (which atomicMax-es into them) starts
  // from zeros without a memset between it and its predecessor (a memset node breaks the PDL chain: the LM head
  // could not load weights during the last MoE combine).
  unsigned long long* row_argmax = nullptr;
  int n_argmax_rows = 0;
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
  bool any_random = false;          // some sequence has temperature > 0
  // Some sequence needs the sorted order (sampling_needs_sort). false skips the sort and its kernels; true is
  // always correct (rows that do not need the sort are empty segments of it).
  bool any_sort = true;
  // The rows that need the sort, when the caller knows them (n_sort_rows >= 0, at most kRowSortMax): each is sorted
  // on its own by a radix sort over the whole GPU (~1.5 ms -> tens of us for one 201,088-id row: the segmented sort
  // runs one CTA per segment). -1: unknown, the segmented sort over every row (rows that do not need it are empty).
  int n_sort_rows = -1;
  int sort_rows[kRowSortMax] = {};
  // Every row is a spread row (sampling_is_spread; greedy ones need row_argmax) and the rows with a cut are listed
  // (n_cut_rows in [0, kRowSortMax], cut_rows): with any_random the spread kernels run instead of sampling_prepare
  // (vocab <= kSpreadMaxVocab, `spread` carved). false is always correct.
  bool all_spread = false;
  int n_cut_rows = -1;
  int cut_rows[kRowSortMax] = {};
  SpreadWorkspace spread;
};

// A row whose kept set needs the sorted order: temperature > 0 and top-p < 1 or min-p > 0 (with one id
// there is nothing to cut). No cut or top-k alone run without the sort.
__host__ __device__ inline bool sampling_needs_sort(const SampleSeqParams& q, int vocab) {
  return q.temperature != 0.0f && vocab > 1 && (q.top_p < 1.0f || q.min_p > 0.0f);
}
// A row at temperature > 0 cut by top-k alone (0 < top_k < vocab): the radix select.
__host__ __device__ inline bool sampling_top_k_select(const SampleSeqParams& q, int vocab) {
  return q.temperature != 0.0f && q.top_k > 0 && q.top_k < vocab && !sampling_needs_sort(q, vocab);
}

// A row with a cut: top-k, top-p or min-p (at temperature > 0).
__host__ __device__ inline bool sampling_has_cut(const SampleSeqParams& q, int vocab) {
  return sampling_needs_sort(q, vocab) || sampling_top_k_select(q, vocab);
}
// A spread row: no penalties, no logprobs (cuts allowed): sampled, or greedy with its token from the LM head's argmax
// key (SamplingParamsDev::row_argmax must then be set). When every row of a step is one and some row is sampled
// (SamplingParamsDev::all_spread, any_random), each sampled row's passes spread over many CTAs (sampling.cu, "Spread
// path"), its cut (if any) found on its own radix sort: the same arithmetic, the same token as sampling_prepare's path.
__host__ __device__ inline bool sampling_is_spread(const SampleSeqParams& q) {
  return q.repetition_penalty == 1.0f && q.frequency_penalty == 0.0f && q.presence_penalty == 0.0f &&
         !q.want_logprob && q.top_logprobs == 0;
}

size_t spread_workspace_bytes(int rows);
// The workspace carved from `base` (spread_workspace_bytes(rows) bytes, 256-byte aligned, zeroed by the caller once).
SpreadWorkspace spread_workspace_at(void* base, int rows);

// Bytes of CUB temp storage for max_seqs rows of vocab.
size_t sampling_sort_temp_bytes(int max_seqs, int vocab);
void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream);

// Device copy of mxs::sample_uniform, for the test that the two agree.
void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream);

}  // namespace mxs::cuda
