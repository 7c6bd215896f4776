// Device code shared by the two ways to sample a step (sampling.h): sampling_prepare.cu (one CTA per row) and
// sampling_spread.cu (every pass over a row on many CTAs). The counter-based RNG, arg-reductions, the one-CTA kernels'
// shared memory (the spread draw uses it too), the kept sets, the draw's walk (draw_pick), the radix keys and
// histograms of the selects, the penalties (penalize_row), and the LM head's argmax keys. Both paths run the same arithmetic in the same order
// through these, which is what makes their tokens and logprobs the same bit for bit.
#pragma once
#include <cstdint>

#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/sampling.h"
#include "engine/sampling_params.h"

namespace mxs::cuda::sampling_detail {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t splitmix64_dev(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Same bits as mxs::sample_uniform (engine/sampling_params.h).
__device__ __forceinline__ float sample_uniform_dev(uint64_t seed, uint64_t step) {
  const uint64_t r = splitmix64_dev(seed ^ splitmix64_dev(step + 0x5851f42d4c957f2dull));
  return float(r >> 40) * (1.0f / 16777216.0f);
}

// w = exp(z - z_max) rounded to fp32 from a double exp: the correctly rounded value, as glibc's expf
// nearly always gives, so that the weights (and the draw) match the CPU sampler.
__device__ __forceinline__ float weight_of(float z, float z_max) { return float(exp(double(z - z_max))); }

// "a before b": larger value first, lower id on ties. Used for arg-reductions.
struct Best {
  float v;
  int id;
};
__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.id < 0) return a;
  if (a.id < 0) return b;
  return (b.v > a.v || (b.v == a.v && b.id < a.id)) ? b : a;
}

__device__ __forceinline__ Best shfl_xor(Best b, int o) {
  return Best{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.id, o)};
}
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int o) {
  return __shfl_xor_sync(0xffffffffu, v, o);
}

// Reduction over the whole block (kThreads threads); every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* s_buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  __syncthreads();
  if (lane == 0) s_buf[warp] = v;
  __syncthreads();
  T r = s_buf[0];
  for (int i = 1; i < int(blockDim.x / 32); ++i) r = op(r, s_buf[i]);
  return r;
}

constexpr int kRadixBins = 256;  // radix select: 8 bits of the key per pass
constexpr int kHistCopies = 8;   // histogram copies (warp % 8) against shared atomic contention
constexpr int kUnitParts = 3;    // 32-bit planes of a histogram of 64-bit units (hist_add_units)
constexpr int kStageIds = 8;     // ids per thread in one tile of for_chunk_staged
// The spread path's geometry (below, "Spread path"), which sampling_prepare's logprob sums follow too.
constexpr int kSpreadThreads = 256;
constexpr int kChunksPerCta = 8;  // draw_ascending chunks per CTA of the chunk-sum kernels
constexpr int kWeightsCtas = kSpreadChunks / kChunksPerCta;
__device__ __forceinline__ int spread_chunk(int V) { return (V + kSpreadChunks - 1) / kSpreadChunks; }

struct Shared {
  Best best[32];
  double dsum[32];
  float fmax[32];
  int flag[32];
  int32_t top_ids[kMaxTopLogprobs];
  double chunk_prefix[kThreads];
  double raw_log_sum;
  float raw_max;
  int last, pick;                       // draw_ascending
  // chunk_walk_range: first / last "between" chunk, first "above" one; [3] pads it to its own 16 bytes, so that a
  // vector load of the three touches no other field (racecheck saw one cover `pick`)
  alignas(16) int range[4];
  int sel_digit, sel_id;
  unsigned long long sel_rest;
  union alignas(8) {
    unsigned hist[kHistCopies][kUnitParts][kRadixBins];  // select_reaching
    float stage[kThreads * (kStageIds + 1)];             // for_chunk_staged, the walks (row stride kStageIds + 1)
  };
};

// Thread 0 turns sh.chunk_prefix (one double per thread, in thread order) into its exclusive prefix and
// returns the total in sh.dsum[0]: the same serial order wherever it runs, so equal inputs give equal sums.
__device__ __forceinline__ void exclusive_chunk_prefix(Shared& sh) {
  double acc = 0.0;
  for (int i = 0; i < int(blockDim.x); ++i) {
    const double v = sh.chunk_prefix[i];
    sh.chunk_prefix[i] = acc;
    acc += v;
  }
  sh.dsum[0] = acc;
}

// Kept sets, tested on an id's value in the array the draw walks (z) and its id. A prefix of the order (z
// descending, ties -> lower id) is a threshold test against its last element (z_b, id_b): z > z_b, or z == z_b and
// id <= id_b.
struct KeptAll {
  __device__ bool operator()(float, int) const { return true; }
};
struct KeptThreshold {
  float z_b;
  int id_b;
  __device__ bool operator()(float z, int i) const { return z > z_b || (z == z_b && i <= id_b); }
};
constexpr KeptThreshold kKeepAll{-INFINITY, 0x7fffffff};  // every id (z >= -inf; at -inf, any id)
// The kept set of a row with cuts: the prefix top-k / top-p leave (a threshold), and min-p on w (sampler.h step 8; w
// never increases along the order, so this is still a prefix).
struct KeptCut {
  KeptThreshold prefix;
  float min_p, z_max;
  __device__ bool operator()(float z, int i) const {
    return prefix(z, i) && (min_p <= 0.0f || weight_of(z, z_max) >= min_p);
  }
};

// The chunks a walk over n ids can stop in. The walks start chunk t at its exclusive prefix (sh.chunk_prefix[t];
// sh.dsum[0] the total) and add the same nonnegative terms in the same order as the chunk sums did, stopping where the
// running sum passes `level` (> level, or >= with reach). Since the prefix never decreases, the chunks fall into
// three runs:
//   - below: prefix[t + 1] (1 + eps) < level. The walk's sum over the chunk and prefix[t + 1] are the same n <= chunk
//     terms added in two orders, each within (1 + 2^-53)^n of the exact sum, so the walk ends within (1 + eps) of
//     prefix[t + 1] (eps = (4 chunk + 4) 2^-53 > 2n 2^-53 with margin): it never passes the level;
//   - above: prefix[t] already passes it: the walk stops at the chunk's first step;
//   - between: the one or two chunks a caller walks exactly (chunk_walk_stage + one thread).
// Sets sh.range = {first between, last between (-1: none), first above (kThreads: none)}.
__device__ inline void chunk_walk_range(int n, int chunk, double level, bool reach, Shared& sh) {
  const int t = threadIdx.x;
  const double eps = double(4 * chunk + 4) * 0x1p-53;
  const double lo = sh.chunk_prefix[t], hi = t + 1 < kThreads ? sh.chunk_prefix[t + 1] : sh.dsum[0];
  const bool has_ids = t * chunk < n;
  const bool above = has_ids && (reach ? lo >= level : lo > level);
  const bool between = has_ids && !above && hi * (1.0 + eps) >= level;
  if (t == 0) sh.range[0] = kThreads, sh.range[1] = -1, sh.range[2] = kThreads;
  __syncthreads();
  if (between) atomicMin(&sh.range[0], t), atomicMax(&sh.range[1], t);
  if (above) atomicMin(&sh.range[2], t);
  __syncthreads();
}
// Chunk c of src ([c * chunk, min(n, (c + 1) * chunk))) into sh.stage[0, len), for one thread to walk. Returns len.
__device__ inline int chunk_walk_stage(const float* src, int n, int chunk, int c, Shared& sh) {
  const int cb = c * chunk, len = min(n, cb + chunk) - cb;
  __syncthreads();
  for (int i = threadIdx.x; i < len; i += blockDim.x) sh.stage[i] = src[cb + i];
  __syncthreads();
  return len;
}

// 9. The draw: u = sample_uniform(seed, step); walk the kept candidates (kept(z, i)) in ascending id order with the
// cumulative w in double, pick the first whose cumulative weight is > u * W' (W' = sum of the kept w), else the last
// kept one. Thread t of the kThreads CTA owns chunk t of the ids; chunk sums in double in id order, exclusive prefix
// over the chunks in order by thread 0. Every path sums with this block size, so equal kept sets give bit-identical
// sums and the same token. Returns the token in every thread.
// src: the values kept() tests and weight() turns into w (z with weight_of(z, z_max), or the w themselves: the spread
// path). The chunk sums come from the caller (spread) or for_chunk_staged (here, draw_ascending_w).
template <typename Kept, typename Weight>
__device__ int draw_pick(const float* src, int V, Kept kept, Weight weight, int last_kept, const SampleSeqParams& q,
                         Shared& sh) {
  const int chunk = (V + kThreads - 1) / kThreads;
  const double target = double(sample_uniform_dev(q.seed, q.step)) * sh.dsum[0];
  if (threadIdx.x == 0) sh.pick = V;
  chunk_walk_range(V, chunk, target, false, sh);
  const int first_between = sh.range[0], last_between = sh.range[1], first_above = sh.range[2];
  for (int c = first_between; c <= last_between; ++c) {  // uniform (shared values)
    const int len = chunk_walk_stage(src, V, chunk, c, sh);
    if (threadIdx.x == 0) {  // draw_ascending's walk of chunk c
      double cum = sh.chunk_prefix[c];
      for (int j = 0; j < len; ++j) {
        const float v = sh.stage[j], w = kept(v, c * chunk + j) ? weight(v) : 0.0f;
        if (w == 0.0f) continue;
        cum += double(w);
        if (cum > target) {
          sh.pick = c * chunk + j;
          break;
        }
      }
    }
    __syncthreads();
    if (sh.pick != V) return sh.pick;
  }
  // No crossing before the "above" chunks: the first kept id with a nonzero weight from there on.
  for (int i0 = first_above < kThreads ? first_above * chunk : V; i0 < V; i0 += blockDim.x) {
    const int i = i0 + threadIdx.x;
    bool nonzero = false;
    if (i < V) {
      const float v = src[i];
      nonzero = kept(v, i) && weight(v) != 0.0f;
    }
    if (nonzero) atomicMin(&sh.pick, i);
    if (__syncthreads_or(nonzero)) break;
  }
  __syncthreads();
  return sh.pick != V ? sh.pick : last_kept;
}

// Radix key of z for "larger first": unsigned order = float order, -0 folded onto +0 so that equal floats
// (the order's ties) have equal keys. z has no NaN here.
__device__ __forceinline__ uint32_t select_key(float v) { return orderable_bits(v == 0.0f ? 0.0f : v); }

// Select histograms of 64-bit units (top-p's are < 2^44) in shared memory as three 32-bit planes of 15 / 15 / 14 bits
// ([kUnitParts][kRadixBins]): a shared atomicAdd on 64 bits is a compare-and-swap loop, and a row's digits crowd into
// a few bins (the first pass's top byte is the sign and the exponent's high bits), so the loops contended (one CTA's
// 4-pass top-k 307 -> 1,038 us, a 64-row spread pass 0 431 us). Every plane's bin stays below 2^32 for up to 2^17
// adds (a one-CTA copy: V <= 2^20 over 8 copies; a spread slice: <= 2^17, kMinSpreadRowCtas). Counts (top-k) touch only
// plane 0.
__device__ __forceinline__ void hist_add_units(unsigned* hist, int d, unsigned long long u) {
  atomicAdd(&hist[d], unsigned(u & 0x7fffu));
  if (u >> 15) {
    atomicAdd(&hist[kRadixBins + d], unsigned((u >> 15) & 0x7fffu));
    atomicAdd(&hist[2 * kRadixBins + d], unsigned(u >> 30));
  }
}
__device__ __forceinline__ unsigned long long hist_units(const unsigned* hist, int d) {
  return static_cast<unsigned long long>(hist[d]) + (static_cast<unsigned long long>(hist[kRadixBins + d]) << 15) +
         (static_cast<unsigned long long>(hist[2 * kRadixBins + d]) << 30);
}

// Steps 1a-2 of cpu/sampler.h on one row, by one CTA (every thread calls it; it synchronizes): the logit bias entries
// (distinct ids), then repetition over the distinct prompt + output ids, then frequency / presence over the distinct
// output ids with their counts, the same float operations in the same order as the CPU. `pending` (>= 0) is an output
// token the lists do not hold yet (SampleSeqParams::pending_index): it joins the repetition set if it is not in it,
// and adds one to its output count (or enters with count 1). value(id) is an id's logit as the row stands (edited or
// not), store(id, v) writes its edited value. s_pend: two ints of shared scratch.
template <typename Value, typename Store>
__device__ void penalize_row(const SampleSeqParams& q, const int32_t* ids, const int32_t* counts,
                             const int32_t* bias_ids, const float* bias_values, int pending, Value value, Store store,
                             int* s_pend) {
  for (int i = threadIdx.x; i < q.n_bias; i += blockDim.x) {
    const int id = bias_ids[q.bias_offset + i];
    store(id, apply_logit_bias(value(id), bias_values[q.bias_offset + i]));
  }
  const bool rep = q.repetition_penalty != 1.0f, out = q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f;
  auto repeat = [&](int id) {
    const float v = value(id);
    store(id, v > 0.0f ? v / q.repetition_penalty : v * q.repetition_penalty);
  };
  auto count = [&](int id, int n) { store(id, value(id) - (float(n) * q.frequency_penalty + q.presence_penalty)); };
  if (threadIdx.x == 0) s_pend[0] = 0, s_pend[1] = -1;  // pending: in the repetition list; its output-list slot
  __syncthreads();  // (and the biased values are visible to the whole CTA)
  if (pending >= 0) {
    if (rep)
      for (int i = threadIdx.x; i < q.n_rep; i += blockDim.x)
        if (ids[q.rep_offset + i] == pending) s_pend[0] = 1;
    if (out)
      for (int i = threadIdx.x; i < q.n_out; i += blockDim.x)
        if (ids[q.out_offset + i] == pending) s_pend[1] = i;  // (distinct ids: at most one slot)
  }
  __syncthreads();
  if (rep) {
    for (int i = threadIdx.x; i < q.n_rep; i += blockDim.x) repeat(ids[q.rep_offset + i]);
    if (pending >= 0 && s_pend[0] == 0 && threadIdx.x == 0) repeat(pending);
  }
  __syncthreads();  // (the repetition's values are visible to the whole CTA)
  if (out) {
    for (int i = threadIdx.x; i < q.n_out; i += blockDim.x)
      count(ids[q.out_offset + i], counts[q.out_offset + i] + (i == s_pend[1] ? 1 : 0));
    if (pending >= 0 && s_pend[1] < 0 && threadIdx.x == 0) count(pending, 1);
  }
  __syncthreads();
}

// Row s's LM-head argmax key (0 when there is none), consumed: the row is zeroed, and row 0's caller also zeroes
// the rows past the step's sequences, so that the next step's LM head (atomicMax) starts from zeros. One thread.
__device__ __forceinline__ unsigned long long take_argmax_key(const SamplingParamsDev& p, int s) {
  if (!p.row_argmax) return 0ull;
  unsigned long long key = 0ull;
  if (s < p.n_argmax_rows) key = p.row_argmax[s], p.row_argmax[s] = 0ull;
  if (s == 0)
    for (int r = p.n_seqs; r < p.n_argmax_rows; ++r) p.row_argmax[r] = 0ull;  // rows without a sequence
  return key;
}

// A plain greedy row (sampling_is_plain_greedy): its token is its LM-head argmax key's id (error 1 without a key, or
// when that logit is NaN). One thread.
__device__ __forceinline__ void greedy_from_key(unsigned long long key, const bf16_t* logits, SampleResultDev& res) {
  res.token = 0x7fffffff - int(key & 0xffffffffu);
  res.error = key == 0ull || isnan(to_f32(logits[res.token])) ? 1 : 0;
}

}  // namespace mxs::cuda::sampling_detail
