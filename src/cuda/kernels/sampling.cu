// Sampling kernels (see sampling.h). sampling_prepare: one CTA per sequence: copies the bf16 logits to fp32,
// raw log-normalizer (double sum) for logprobs, penalties, greedy argmax, temperature; rows without top-p or
// min-p finish there (the max of z by a block reduction, top-k by a radix select, then the draw). A CUB radix
// sort orders the rows with top-p or min-p (each on its own when the caller lists them, else one segmented sort in
// which the others are empty segments); sampling_draw cuts that order (top-k, top-p, min-p) and draws. Every draw is
// draw_ascending: the kept candidates in ascending id order, double prefix sums by chunk of ids. The spread path
// (below, "Spread path") runs the same arithmetic over many CTAs per row.
#include "cuda/kernels/sampling.h"

#include <algorithm>
#include <cstdlib>

#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {
namespace {

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

// for (i = threadIdx.x; i < n; i += blockDim.x) visit(load(i), i), with kRowUnroll loads in flight per thread: a
// row pass in one CTA is latency-bound (32 warps per SM; ~200 dependent L2 round trips per thread at V = 201,088
// when each iteration waits for its own load). Each thread visits its ids in the same order as the plain loop.
constexpr int kRowUnroll = 8;
template <typename Load, typename Visit>
__device__ __forceinline__ void for_row(int n, Load load, Visit visit) {
  using T = decltype(load(0));
  for (int i0 = threadIdx.x; i0 < n; i0 += kRowUnroll * blockDim.x) {
    T v[kRowUnroll];
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < n) v[u] = load(i);
    }
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) {
      const int i = i0 + u * int(blockDim.x);
      if (i < n) visit(v[u], i);
    }
  }
}

__device__ Best block_argmax(const float* z, int n, Best* s_buf, int exclude_mask_count, const int32_t* excluded) {
  Best b{0.f, -1};
  for_row(n, [&](int i) { return z[i]; }, [&](float v, int i) {
    bool skip = false;
    for (int k = 0; k < exclude_mask_count; ++k) skip |= excluded[k] == i;
    if (!skip) b = better(b, Best{v, i});
  });
  return block_reduce(b, [](Best x, Best y) { return better(x, y); }, s_buf);
}

constexpr int kRadixBins = 256;  // radix select: 8 bits of the key per pass
constexpr int kHistCopies = 8;   // histogram copies (warp % 8) against shared atomic contention
constexpr int kStageIds = 8;     // ids per thread in one tile of for_chunk_staged

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
  int sel_digit, sel_rank, sel_id;
  union {
    unsigned hist[kHistCopies][kRadixBins];         // select_top_k
    float stage[kThreads * (kStageIds + 1)];        // for_chunk_staged, the walks (row stride kStageIds + 1)
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

// Thread t's chunk of ids [t * chunk, min(n, (t + 1) * chunk)) of src, visited in id order: visit(v, i). The chunk
// loops are the draws' summation order, but a thread reading its own chunk puts a warp's loads chunk floats apart (at
// V = 201,088: 197, so 32 L1 wavefronts per load, ~100 us per pass over a row). So the CTA stages tiles of kStageIds
// ids per thread in shared memory (a warp's load covers four threads' 8 contiguous ids) and each thread reads its
// ids back conflict-free (row stride kStageIds + 1). Every thread of the kThreads CTA must call it.
template <typename Visit>
__device__ void for_chunk_staged(const float* src, int n, int chunk, Shared& sh, Visit visit) {
  const int t = threadIdx.x;
  for (int j0 = 0; j0 < chunk; j0 += kStageIds) {
    __syncthreads();  // the previous tile (or the union's other use) is done
#pragma unroll
    for (int k = 0; k < kStageIds; ++k) {
      const int l = k * kThreads + t, owner = l / kStageIds, j = j0 + l % kStageIds, i = owner * chunk + j;
      sh.stage[owner * (kStageIds + 1) + l % kStageIds] = j < chunk && i < n ? src[i] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kStageIds; ++k) {
      const int j = j0 + k, i = t * chunk + j;
      if (j < chunk && i < n) visit(sh.stage[t * (kStageIds + 1) + k], i);
    }
  }
  __syncthreads();
}

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
__device__ void chunk_walk_range(int n, int chunk, double level, bool reach, Shared& sh) {
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
__device__ int chunk_walk_stage(const float* src, int n, int chunk, int c, Shared& sh) {
  const int cb = c * chunk, len = min(n, cb + chunk) - cb;
  __syncthreads();
  for (int i = threadIdx.x; i < len; i += blockDim.x) sh.stage[i] = src[cb + i];
  __syncthreads();
  return len;
}

// 7. top-p on a sorted row: the first position i >= 1 whose cumulative p before it reaches top_p, else kept. With
// sh.chunk_prefix the exclusive prefix of the chunk sums of w / total over positions [0, kept) of zs (chunk = ceil(V /
// kThreads)); walked only where it can stop (chunk_walk_range): the first "between" chunk that does, else the first
// "above" chunk's start. Every thread of the kThreads CTA calls it and gets the cut (sh.pick is its scratch).
__device__ int top_p_cut(const float* zs, int kept, int chunk, float z_max, double total, float top_p, Shared& sh) {
  chunk_walk_range(kept, chunk, double(top_p), true, sh);
  const int first_between = sh.range[0], last_between = sh.range[1], first_above = sh.range[2];
  const int no_cut_before = first_above < kThreads ? min(kept, first_above * chunk) : kept;
  if (threadIdx.x == 0) sh.pick = no_cut_before;
  for (int c = first_between; c <= last_between; ++c) {  // uniform (shared values)
    const int len = chunk_walk_stage(zs, kept, chunk, c, sh);
    if (threadIdx.x == 0) {
      double cum = sh.chunk_prefix[c];
      for (int j = 0; j < len; ++j) {
        const int i = c * chunk + j;
        if (i >= 1 && cum >= double(top_p)) {
          sh.pick = min(sh.pick, i);
          break;
        }
        cum += double(weight_of(sh.stage[j], z_max)) / total;
      }
    }
    __syncthreads();
    if (sh.pick != no_cut_before) break;
  }
  __syncthreads();
  const int cut = max(1, sh.pick);  // (the best candidate always stays: 0 only if top_p <= 0, which validation rejects)
  __syncthreads();  // every thread has read it before sh.pick is written again
  return cut;
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
template <typename Kept, typename Weight>
__device__ int draw_ascending_w(const float* src, int V, Kept kept, Weight weight, const SampleSeqParams& q,
                                Shared& sh) {
  const int chunk = (V + kThreads - 1) / kThreads;
  if (threadIdx.x == 0) sh.last = -1;
  double cs = 0.0;
  int last = -1;
  for_chunk_staged(src, V, chunk, sh, [&](float v, int i) {
    if (!kept(v, i)) return;
    cs += double(weight(v));
    last = i;
  });
  sh.chunk_prefix[threadIdx.x] = cs;
  if (last >= 0) atomicMax(&sh.last, last);
  __syncthreads();
  if (threadIdx.x == 0) exclusive_chunk_prefix(sh);
  __syncthreads();
  return draw_pick(src, V, kept, weight, sh.last, q, sh);
}
template <typename Kept>
__device__ int draw_ascending(const float* z, int V, float z_max, Kept kept, const SampleSeqParams& q, Shared& sh) {
  return draw_ascending_w(z, V, kept, [&](float v) { return weight_of(v, z_max); }, q, sh);
}

// Radix key of z for "larger first": unsigned order = float order, -0 folded onto +0 so that equal floats
// (the order's ties) have equal keys. z has no NaN here.
__device__ __forceinline__ uint32_t select_key(float v) { return orderable_bits(v == 0.0f ? 0.0f : v); }

// 5. top-k without a sort: the k-th candidate of the order (1 <= k < V), i.e. the element the sorted path reads
// at order[k - 1], found exactly. Radix select on select_key, 8 bits a pass from the top (4 passes over the row;
// each counts the candidates that match the digits chosen so far), which gives the k-th key K and the rank r of
// the k-th candidate among the ids with key K; ties go to lower ids, so id_b is the r-th such id in ascending
// order (a block scan of per-chunk counts). Every thread gets the threshold.
__device__ KeptThreshold select_top_k(const float* z, int V, int k, Shared& sh) {
  uint32_t prefix = 0, mask = 0;
  int rank = k;  // rank of the wanted candidate among those matching prefix/mask, best first
  unsigned* hist_flat = &sh.hist[0][0];
  unsigned* my_hist = sh.hist[(threadIdx.x >> 5) % kHistCopies];
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kHistCopies * kRadixBins; i += blockDim.x) hist_flat[i] = 0u;
    __syncthreads();
    for_row(V, [&](int i) { return z[i]; }, [&](float v, int) {
      const uint32_t key = select_key(v);
      if ((key & mask) == prefix) atomicAdd(&my_hist[(key >> shift) & (kRadixBins - 1)], 1u);
    });
    __syncthreads();
    for (int d = threadIdx.x; d < kRadixBins; d += blockDim.x) {  // column d only: no race
      unsigned c = 0;
      for (int h = 0; h < kHistCopies; ++h) c += sh.hist[h][d];
      sh.hist[0][d] = c;
    }
    __syncthreads();
    if (threadIdx.x == 0) {  // the digit holding the rank-th candidate, from the largest digit down
      int above = 0, d = kRadixBins - 1;
      for (; d > 0; --d) {
        const int c = int(sh.hist[0][d]);
        if (above + c >= rank) break;
        above += c;
      }
      sh.sel_digit = d;
      sh.sel_rank = rank - above;
    }
    __syncthreads();
    prefix |= uint32_t(sh.sel_digit) << shift;
    mask |= uint32_t(kRadixBins - 1) << shift;
    rank = sh.sel_rank;
  }
  // prefix = K; the rank-th id (ascending) with key K. Per-thread counts over contiguous id chunks, exclusive
  // block scan of the counts (ints: exact), then the chunk that holds it, staged, walked by its owner.
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  int cnt = 0;
  for_chunk_staged(z, V, chunk, sh, [&](float v, int) { cnt += select_key(v) == prefix; });
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = cnt;
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  __syncthreads();
  if (lane == 31) sh.flag[warp] = incl;
  __syncthreads();
  int before = incl - cnt;
  for (int w = 0; w < warp; ++w) before += sh.flag[w];
  const bool owner = before < rank && rank <= before + cnt;
  if (owner) sh.sel_digit = threadIdx.x;  // (the digit is no longer needed) the owner of the chunk
  __syncthreads();
  const int c = sh.sel_digit, len = chunk_walk_stage(z, V, chunk, c, sh);
  if (owner) {
    int seen = before;
    for (int j = 0; j < len; ++j)
      if (select_key(sh.stage[j]) == prefix && ++seen == rank) {
        sh.sel_id = c * chunk + j;
        break;
      }
  }
  __syncthreads();
  const int id_b = sh.sel_id;
  return KeptThreshold{z[id_b], id_b};
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

// A greedy row without penalties or logprobs: its token is its LM-head argmax key's id (error 1 without a key, or
// when that logit is NaN). One thread.
__device__ __forceinline__ void greedy_from_key(unsigned long long key, const bf16_t* logits, SampleResultDev& res) {
  res.token = 0x7fffffff - int(key & 0xffffffffu);
  res.error = key == 0ull || isnan(to_f32(logits[res.token])) ? 1 : 0;
}

__global__ void __launch_bounds__(kThreads) sampling_prepare(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float* z = p.z + size_t(s) * V;
  SampleResultDev& res = p.results[s];
  // (thread 0) this row's LM-head argmax key, zeroed for the next step
  const unsigned long long key = threadIdx.x == 0 ? take_argmax_key(p, s) : 0ull;
  if (p.row_argmax && q.temperature == 0.0f && sampling_is_spread(q)) {
    if (threadIdx.x == 0) greedy_from_key(key, logits, res);
    return;
  }

  int has_nan = 0;
  float mx = -INFINITY;
  for_row(V, [&](int i) { return to_f32(logits[i]); }, [&](float v, int i) {
    has_nan |= isnan(v);
    mx = fmaxf(mx, v);
    z[i] = v;
  });
  has_nan = block_reduce(has_nan, [](int a, int b) { return a | b; }, sh.flag);
  if (has_nan) {
    if (threadIdx.x == 0) res.error = 1, res.token = -1;
    return;
  }
  // 0. raw log-normalizer (for logprobs): max, then the double sum of exp(z - max).
  if (q.want_logprob || q.top_logprobs > 0) {
    mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
    double sum = 0.0;
    for_row(V, [&](int i) { return z[i]; }, [&](float v, int) { sum += exp(double(v) - double(mx)); });
    sum = block_reduce(sum, [](double a, double b) { return a + b; }, sh.dsum);
    if (threadIdx.x == 0) sh.raw_max = mx, sh.raw_log_sum = log(sum);
    __syncthreads();
    // top logprobs: the N best raw logits, descending, ties -> lower id.
    for (int k = 0; k < q.top_logprobs; ++k) {
      const Best b = block_argmax(z, V, sh.best, k, sh.top_ids);
      if (threadIdx.x == 0) {
        sh.top_ids[k] = b.id;
        res.top_ids[k] = b.id;
        res.top_lp[k] = float(double(b.v) - double(sh.raw_max) - sh.raw_log_sum);
      }
      __syncthreads();
    }
  }
  // 1. repetition penalty over distinct prompt + output ids.
  __syncthreads();
  if (q.repetition_penalty != 1.0f)
    for (int i = threadIdx.x; i < q.n_rep; i += blockDim.x) {
      float& v = z[p.ids[q.rep_offset + i]];
      v = v > 0.0f ? v / q.repetition_penalty : v * q.repetition_penalty;
    }
  __syncthreads();
  // 2. frequency / presence penalties over distinct output ids.
  if (q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f)
    for (int i = threadIdx.x; i < q.n_out; i += blockDim.x)
      z[p.ids[q.out_offset + i]] -= float(p.counts[q.out_offset + i]) * q.frequency_penalty + q.presence_penalty;
  __syncthreads();
  if (q.temperature == 0.0f) {  // 3. greedy
    const Best b = block_argmax(z, V, sh.best, 0, nullptr);
    if (threadIdx.x == 0) {
      res.token = b.id;
      res.error = 0;
      if (q.want_logprob) res.logprob = float(double(to_f32(logits[b.id])) - double(sh.raw_max) - sh.raw_log_sum);
    }
    return;
  }
  // 4. temperature; keys/values for the sort where the row needs it.
  const bool sorted = sampling_needs_sort(q, V);
  float z_max = -INFINITY;
  for_row(V, [&](int i) { return z[i]; }, [&](float v, int i) {
    const float t = v / q.temperature;
    z[i] = t;
    z_max = fmaxf(z_max, t);
    if (sorted) p.order_in[size_t(s) * V + i] = i;
  });
  if (sorted) {  // finished by the sort, sampling_draw and sampling_logprob
    if (threadIdx.x == 0) {
      res.error = 0;
      if (q.want_logprob) res.logprob = 0.f;
    }
    return;
  }
  // No top-p / min-p: z_max over all ids (the largest kept one whatever top-k keeps), then the kept set and the
  // draw here. The reduction's __syncthreads also makes this block's z writes visible to all its threads.
  z_max = block_reduce(z_max, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
  if (!isfinite(z_max)) {
    if (threadIdx.x == 0) res.error = 2, res.token = -1;
    return;
  }
  const int token = sampling_top_k_select(q, V) ? draw_ascending(z, V, z_max, select_top_k(z, V, q.top_k, sh), q, sh)
                                                : draw_ascending(z, V, z_max, KeptAll{}, q, sh);
  if (threadIdx.x == 0) {
    res.token = token;
    res.error = 0;
    // Raw logprob from step 0's normalizer: the same values sampling_logprob computes.
    if (q.want_logprob) res.logprob = float(double(to_f32(logits[token])) - double(sh.raw_max) - sh.raw_log_sum);
  }
}

// One sequence with top-p or min-p: top-k, top-p, min-p over the sorted row, then the draw in ascending id
// order (sampler.h steps 5-9).
__global__ void __launch_bounds__(kThreads) sampling_draw(SamplingParamsDev p) {
  __shared__ Shared sh;
  __shared__ int s_kept;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  SampleResultDev& res = p.results[s];
  if (!sampling_needs_sort(q, V) || res.error != 0) return;  // greedy or finished in sampling_prepare
  const float* zs = p.z_sorted + size_t(s) * V;
  const int32_t* ord = p.order + size_t(s) * V;
  const float z_max = zs[0];
  if (!isfinite(z_max)) {
    if (threadIdx.x == 0) res.error = 2, res.token = -1;
    return;
  }
  int kept = (q.top_k > 0 && q.top_k < V) ? q.top_k : V;
  // Each thread owns a contiguous chunk of the order; chunk sums in double, prefix over chunks.
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  auto chunk_prefix = [&](int n, double scale_inv) {  // fills sh.chunk_prefix (exclusive) over [0, n)
    double cs = 0.0;
    for_chunk_staged(zs, n, chunk, sh, [&](float v, int) {
      cs += scale_inv > 0 ? double(weight_of(v, z_max)) / scale_inv : double(weight_of(v, z_max));
    });
    sh.chunk_prefix[threadIdx.x] = cs;
    __syncthreads();
    if (threadIdx.x == 0) exclusive_chunk_prefix(sh);
    __syncthreads();
    return sh.dsum[0];
  };
  // 7. top-p.
  if (q.top_p < 1.0f) {
    const double total = chunk_prefix(kept, 0.0);
    chunk_prefix(kept, total);  // prefix of p = w / total, summed in order within a chunk
    kept = top_p_cut(zs, kept, chunk, z_max, total, q.top_p, sh);
  }
  // 8. min-p: keep the prefix with w >= min_p (w is non-increasing along the order).
  if (q.min_p > 0.0f) {
    if (threadIdx.x == 0) s_kept = kept;
    __syncthreads();
    for_row(kept - 1, [&](int i) { return zs[1 + i]; }, [&](float v, int i) {
      if (!(weight_of(v, z_max) >= q.min_p)) atomicMin(&s_kept, 1 + i);
    });
    __syncthreads();
    kept = s_kept;
  }
  // 9. draw over the kept prefix of the order (a threshold test against its last element).
  const float* z = p.z + size_t(s) * V;
  const int token = draw_ascending(z, V, z_max, KeptThreshold{zs[kept - 1], ord[kept - 1]}, q, sh);
  if (threadIdx.x == 0) {
    res.token = token;
    if (q.want_logprob) res.logprob = 0.f;  // filled by sampling_logprob
  }
}

// Raw logprob of the sampled token, for every sequence that wants it (after the draw).
__global__ void __launch_bounds__(kThreads) sampling_logprob(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  SampleResultDev& res = p.results[s];
  if (!q.want_logprob || res.error != 0 || !sampling_needs_sort(q, V)) return;  // others: sampling_prepare
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float mx = -INFINITY;
  for_row(V, [&](int i) { return to_f32(logits[i]); }, [&](float v, int) { mx = fmaxf(mx, v); });
  mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
  double sum = 0.0;
  for_row(V, [&](int i) { return to_f32(logits[i]); }, [&](float v, int) { sum += exp(double(v) - double(mx)); });
  sum = block_reduce(sum, [](double a, double b) { return a + b; }, sh.dsum);
  if (threadIdx.x == 0) res.logprob = float(double(to_f32(logits[res.token])) - double(mx) - log(sum));
}

__global__ void sample_uniform_kernel(const uint64_t* seeds, const uint64_t* steps, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = sample_uniform_dev(seeds[i], steps[i]);
}


// Spread path: steps whose rows are all spread rows (sampling_is_spread: no penalties, no logprobs; greedy ones take
// their token from the LM head's argmax key in sampling_spread_tempered and are skipped after). sampling_prepare
// runs a row in one CTA, on one SM: 201,088 double-precision exps and several passes over the row, each bound by what
// one SM can have in flight. The same arithmetic spread over the GPU, every pass over a row coalesced:
//   sampling_spread_tempered (rows x kTemperedCtas): z = logit / T, the row's NaN flag and max of z (orderable bits,
//     atomicMax into row_max); a row with a cut also gets order_in = its ids;
//   rows with a cut: each sorted on its own (cub::DeviceRadixSort, the one-CTA path's stable descending sort), then
//     sampling_spread_sorted_sums (rows x kWeightsCtas, twice for top-p rows: the chunk sums of w and then of w / total
//     over the order, sampling_draw's chunk_prefix) and sampling_spread_cut (a CTA per row: sampling_draw's top-p walk
//     and min-p cut; the kept set's last element of the order into row_cut);
//   sampling_spread_weights (rows x kWeightsCtas): w = weight_of(z, z_max) over z (0 for ids a cut drops), staged in
//     shared memory, one lane per chunk summing its chunk's w in id order: draw_ascending's chunk sums, bit for bit;
//     the largest kept id into row_last;
//   sampling_spread_draw (a kThreads CTA per row): draw_ascending's serial prefix over those sums, then its walk
//     (draw_pick).
// So the token is sampling_prepare's (+ sampling_draw's) bit for bit (SpreadPathMatchesOneCtaPathBitForBit).
constexpr int kSpreadThreads = 256;
constexpr int kTemperedCtas = 128;  // CTAs per row of sampling_spread_tempered
constexpr int kTemperedUnroll = 4;  // loads in flight per thread
constexpr int kChunksPerCta = 8;    // draw_ascending chunks per CTA of the chunk-sum kernels
constexpr int kMaxChunk = kSpreadMaxVocab / kSpreadChunks;  // ids per chunk the kernels stage
static_assert(kSpreadChunks == kThreads, "the spread chunks are draw_ascending's (one per thread of kThreads)");
static_assert(kSpreadChunks % kChunksPerCta == 0, "whole chunk groups per CTA");
static_assert(kMaxChunk <= kThreads * (kStageIds + 1), "draw_pick stages a whole chunk in Shared::stage");
constexpr int kWeightsCtas = kSpreadChunks / kChunksPerCta;

__device__ __forceinline__ int spread_chunk(int V) { return (V + kSpreadChunks - 1) / kSpreadChunks; }
__device__ __forceinline__ float from_orderable_bits(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
// The row's max of z from sampling_spread_tempered, or NaN when the row has a NaN logit or no finite max (the draw
// kernel reports those; the kernels in between skip the row).
__device__ __forceinline__ float spread_row_max(const SamplingParamsDev& p, int s) {
  if (p.spread.row_max[2 * s + 1] != 0u) return NAN;
  const float m = from_orderable_bits(p.spread.row_max[2 * s]);
  return isfinite(m) ? m : NAN;
}
// Sorted positions a row's cuts start from: top-k's k, else the whole row (sampling_draw's `kept`).
__device__ __forceinline__ int spread_kept0(const SampleSeqParams& q, int V) {
  return q.top_k > 0 && q.top_k < V ? q.top_k : V;
}

__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_tempered(SamplingParamsDev p) {
  __shared__ float s_max[kSpreadThreads / 32];
  __shared__ int s_nan[kSpreadThreads / 32];
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  if (blockIdx.y == 0 && threadIdx.x == 0) {  // the argmax key consumed, as sampling_prepare does
    const unsigned long long key = take_argmax_key(p, s);
    if (q.temperature == 0.0f) greedy_from_key(key, logits, p.results[s]);  // (the later kernels skip the row)
  }
  if (q.temperature == 0.0f) return;
  const bool cut = sampling_has_cut(q, V);
  float* z = p.z + size_t(s) * V;
  int32_t* order_in = p.order_in + size_t(s) * V;
  float mx = -INFINITY;
  int nan = 0;
  constexpr int kStride = kTemperedCtas * kSpreadThreads * kTemperedUnroll;
  for (int i0 = blockIdx.y * kSpreadThreads * kTemperedUnroll + threadIdx.x; i0 < V; i0 += kStride) {
    float v[kTemperedUnroll];
#pragma unroll
    for (int u = 0; u < kTemperedUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      v[u] = i < V ? to_f32(logits[i]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kTemperedUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      if (i >= V) break;
      nan |= isnan(v[u]);
      const float t = v[u] / q.temperature;  // (sampling_prepare: z = v, then z / temperature)
      z[i] = t;
      mx = fmaxf(mx, t);
      if (cut) order_in[i] = i;
    }
  }
  mx = warp_max(mx);
  nan = __any_sync(0xffffffffu, nan);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) s_max[warp] = mx, s_nan[warp] = nan;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kSpreadThreads / 32; ++w) mx = fmaxf(mx, s_max[w]), nan |= s_nan[w];
    atomicMax(&p.spread.row_max[2 * s], orderable_bits(mx));
    if (nan) atomicOr(&p.spread.row_max[2 * s + 1], 1u);
  }
}

// Chunk sums over the sorted order of a top-p row, sampling_draw's chunk_prefix: positions [0, kept0) in chunks of
// spread_chunk(V), in order; terms double(w) (pass 0, into sorted_sums) or double(w) / total (pass 1, into p_sums; total
// = exclusive_chunk_prefix's total over pass 0's sums, recomputed by every CTA, stored by CTA 0 in row_total).
__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_sorted_sums(SamplingParamsDev p, int pass) {
  __shared__ float s_w[kChunksPerCta * kMaxChunk];
  __shared__ double s_total;
  const int s = blockIdx.x, V = p.vocab, chunk = spread_chunk(V);
  const SampleSeqParams& q = p.seqs[s];
  if (!sampling_has_cut(q, V) || !(q.top_p < 1.0f) || isnan(spread_row_max(p, s))) return;
  const float* zs = p.z_sorted + size_t(s) * V;
  const float z_max = zs[0];  // (sampling_draw's; the same value as the row's max)
  const int n = spread_kept0(q, V);
  if (pass == 1 && threadIdx.x == 0) {
    const double* sums = p.spread.sorted_sums + size_t(s) * kSpreadChunks;
    double acc = 0.0;  // exclusive_chunk_prefix's order
    for (int c = 0; c < kSpreadChunks; ++c) acc += sums[c];
    s_total = acc;
    if (blockIdx.y == 0) p.spread.row_total[s] = acc;
  }
  const int c0 = blockIdx.y * kChunksPerCta;
  const int b = min(n, c0 * chunk), e = min(n, b + kChunksPerCta * chunk);
  for (int i = b + threadIdx.x; i < e; i += kSpreadThreads) s_w[i - b] = weight_of(zs[i], z_max);
  __syncthreads();
  if (threadIdx.x < kChunksPerCta) {
    const int cb = min(n, (c0 + threadIdx.x) * chunk), ce = min(n, cb + chunk);
    double cs = 0.0;
    if (pass == 0)
      for (int i = cb; i < ce; ++i) cs += double(s_w[i - b]);
    else
      for (int i = cb; i < ce; ++i) cs += double(s_w[i - b]) / s_total;
    (pass == 0 ? p.spread.sorted_sums : p.spread.p_sums)[size_t(s) * kSpreadChunks + c0 + threadIdx.x] = cs;
  }
}

// A row's cuts on its sorted order (sampling_draw's steps 7-8): top-p walked where it can stop (chunk_walk_range over
// p_sums' prefix), min-p by bisection (w never increases along the order, so "w >= min_p" holds on a prefix: its end
// is the first position sampling_draw's atomicMin finds). Writes the kept set's last element (z bits, id) to row_cut.
__global__ void __launch_bounds__(kThreads) sampling_spread_cut(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab, chunk = spread_chunk(V);
  const SampleSeqParams& q = p.seqs[s];
  if (!sampling_has_cut(q, V) || isnan(spread_row_max(p, s))) return;
  const float* zs = p.z_sorted + size_t(s) * V;
  const float z_max = zs[0];
  int kept = spread_kept0(q, V);
  if (q.top_p < 1.0f) {
    sh.chunk_prefix[threadIdx.x] = p.spread.p_sums[size_t(s) * kSpreadChunks + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) exclusive_chunk_prefix(sh);
    __syncthreads();
    kept = top_p_cut(zs, kept, chunk, z_max, p.spread.row_total[s], q.top_p, sh);
  }
  if (threadIdx.x != 0) return;
  if (q.min_p > 0.0f) {  // the first i >= 1 with !(w_i >= min_p), else kept
    int lo = 1, hi = kept;  // answer in [lo, hi]: positions < lo pass, position hi fails or is the end
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (weight_of(zs[mid], z_max) >= q.min_p)
        lo = mid + 1;
      else
        hi = mid;
    }
    kept = lo;
  }
  p.spread.row_cut[2 * s] = __float_as_int(zs[kept - 1]);
  p.spread.row_cut[2 * s + 1] = p.order[size_t(s) * V + kept - 1];
}

__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_weights(SamplingParamsDev p) {
  __shared__ float s_w[kChunksPerCta * kMaxChunk];
  __shared__ int s_last;
  const int s = blockIdx.x, V = p.vocab, chunk = spread_chunk(V);
  const SampleSeqParams& q = p.seqs[s];
  const float z_max = spread_row_max(p, s);
  if (q.temperature == 0.0f || isnan(z_max)) return;  // greedy: done; NaN: sampling_spread_draw reports it
  const bool cut = sampling_has_cut(q, V);
  const KeptThreshold kept = cut ? KeptThreshold{__int_as_float(p.spread.row_cut[2 * s]), p.spread.row_cut[2 * s + 1]}
                                 : KeptThreshold{-INFINITY, V};  // (every id: z >= -inf; at -inf, id <= V)
  float* z = p.z + size_t(s) * V;
  const int c0 = blockIdx.y * kChunksPerCta;
  const int b = min(V, c0 * chunk), e = min(V, b + kChunksPerCta * chunk);
  if (threadIdx.x == 0) s_last = -1;
  __syncthreads();
  int last = -1;
  constexpr int kUnroll = 4;
  for (int i0 = b + threadIdx.x; i0 < e; i0 += kSpreadThreads * kUnroll) {
    float zv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      zv[u] = i < e ? z[i] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      if (i >= e) break;
      const bool k = kept(zv[u], i);
      const float w = k ? weight_of(zv[u], z_max) : 0.0f;  // (draw_ascending adds nothing for a dropped id)
      if (k) last = i;
      z[i] = w;
      s_w[i - b] = w;
    }
  }
  if (last >= 0) atomicMax(&s_last, last);
  __syncthreads();
  if (threadIdx.x == 0 && s_last >= 0) atomicMax(&p.spread.row_last[s], s_last + 1);
  if (threadIdx.x < kChunksPerCta) {  // draw_ascending's chunk sum: in id order, from 0.0, every kept id's w
    const int cb = min(V, (c0 + threadIdx.x) * chunk), ce = min(V, cb + chunk);
    double cs = 0.0;
    for (int i = cb; i < ce; ++i) cs += double(s_w[i - b]);
    p.spread.chunk_sums[size_t(s) * kSpreadChunks + c0 + threadIdx.x] = cs;
  }
}

__global__ void __launch_bounds__(kThreads) sampling_spread_draw(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (q.temperature == 0.0f) return;  // greedy: its token came from the argmax key (sampling_spread_tempered)
  SampleResultDev& res = p.results[s];
  const uint32_t key = p.spread.row_max[2 * s], nan = p.spread.row_max[2 * s + 1];
  const int last_kept = p.spread.row_last[s] - 1;
  __syncthreads();
  if (threadIdx.x == 0) p.spread.row_max[2 * s] = 0u, p.spread.row_max[2 * s + 1] = 0u, p.spread.row_last[s] = 0;
  if (nan != 0u) {
    if (threadIdx.x == 0) res.error = 1, res.token = -1;
    return;
  }
  if (!isfinite(from_orderable_bits(key))) {
    if (threadIdx.x == 0) res.error = 2, res.token = -1;
    return;
  }
  sh.chunk_prefix[threadIdx.x] = p.spread.chunk_sums[size_t(s) * kSpreadChunks + threadIdx.x];
  __syncthreads();
  if (threadIdx.x == 0) exclusive_chunk_prefix(sh);
  __syncthreads();
  // w over z: 0 for ids a cut drops, so "kept with a nonzero weight" is "nonzero".
  const int token = draw_pick(p.z + size_t(s) * V, V, KeptAll{}, [](float w) { return w; }, last_kept, q, sh);
  if (threadIdx.x == 0) res.token = token, res.error = 0;
}

// End offset of row s in the segmented sort: a full row where the row needs the sort, else an empty segment
// (end == begin), read from the device copy of the row's parameters. begin = segment_offsets[s] = s * vocab.
struct SortedRowEnd {
  const SampleSeqParams* seqs;
  int vocab;
  __host__ __device__ int operator()(int s) const {
    return s * vocab + (sampling_needs_sort(seqs[s], vocab) ? vocab : 0);
  }
};
using RowEndIter = thrust::transform_iterator<SortedRowEnd, thrust::counting_iterator<int>>;
RowEndIter row_ends(const SampleSeqParams* seqs, int vocab) {
  return RowEndIter(thrust::counting_iterator<int>(0), SortedRowEnd{seqs, vocab});
}

}  // namespace

size_t sampling_sort_temp_bytes(int max_seqs, int vocab) {
  size_t segmented = 0, row = 0;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, segmented, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int64_t(max_seqs) * vocab, max_seqs,
      static_cast<const int32_t*>(nullptr), row_ends(nullptr, vocab)));
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, row, static_cast<const float*>(nullptr),
                                                       static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                       static_cast<int32_t*>(nullptr), vocab));
  return std::max(segmented, row);
}

namespace {
// One row's stable descending sort of z (ids as values): the segmented sort's arithmetic on one row, over the GPU,
// with `bytes` of temp storage at `temp`.
void sort_row(const SamplingParamsDev& p, int row, void* temp, size_t bytes, cudaStream_t stream) {
  MXS_CHECK(row >= 0 && row < p.n_seqs, "sample_tokens: sort row out of range");
  const size_t off = size_t(row) * size_t(p.vocab);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(temp, bytes, p.z + off, p.z_sorted + off, p.order_in + off,
                                                       p.order + off, p.vocab, 0, 32, stream));
}

// The rows' sorts side by side: one row of 201,088 ids takes ~45 us on only ~23 CTAs (CUB's tiles), so up to
// kSortStreams of them run on their own streams (forked from and joined back into `stream` by events), each in its own
// slice of the temp storage (the runner's is sized for the segmented sort of every row: many slices).
constexpr int kSortStreams = 8;
struct SortStreams {
  cudaStream_t streams[kSortStreams];
  cudaEvent_t fork, joins[kSortStreams];
  SortStreams() {
    for (int i = 0; i < kSortStreams; ++i) {
      CUDA_CHECK(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking));
      CUDA_CHECK(cudaEventCreateWithFlags(&joins[i], cudaEventDisableTiming));
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  }
};
void sort_rows(const SamplingParamsDev& p, const int* rows, int n, cudaStream_t stream) {
  size_t row_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, row_bytes, static_cast<const float*>(nullptr),
                                                       static_cast<float*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                       static_cast<int32_t*>(nullptr), p.vocab));
  const size_t slice = (row_bytes + 255) / 256 * 256;
  const int lanes = int(std::min<size_t>({size_t(kSortStreams), size_t(n), p.sort_temp_bytes / slice}));
  static const bool serial = std::getenv("MXS_SERIAL_ROW_SORTS") != nullptr;  // A/B
  if (lanes <= 1 || serial) {
    for (int k = 0; k < n; ++k) sort_row(p, rows[k], p.sort_temp, p.sort_temp_bytes, stream);
    return;
  }
  static SortStreams ss;  // (one GPU per process)
  CUDA_CHECK(cudaEventRecord(ss.fork, stream));
  for (int l = 0; l < lanes; ++l) CUDA_CHECK(cudaStreamWaitEvent(ss.streams[l], ss.fork, 0));
  for (int k = 0; k < n; ++k) {
    const int l = k % lanes;
    sort_row(p, rows[k], static_cast<char*>(p.sort_temp) + size_t(l) * slice, slice, ss.streams[l]);
  }
  for (int l = 0; l < lanes; ++l) {
    CUDA_CHECK(cudaEventRecord(ss.joins[l], ss.streams[l]));
    CUDA_CHECK(cudaStreamWaitEvent(stream, ss.joins[l], 0));
  }
}

bool spread_ready(const SpreadWorkspace& w) {
  return w.row_max && w.row_last && w.row_cut && w.row_total && w.chunk_sums && w.sorted_sums && w.p_sums;
}

}  // namespace

namespace {
// The workspace's regions in order, each 256-byte aligned, from `base` (nullptr: offsets only). Returns the bytes.
size_t carve_spread_workspace(char* base, int rows, SpreadWorkspace* w) {
  const size_t r = size_t(std::max(rows, 1));
  size_t at = 0;
  auto take = [&](size_t bytes) {
    char* ptr = base ? base + at : nullptr;
    at += (bytes + 255) / 256 * 256;
    return ptr;
  };
  w->row_max = reinterpret_cast<unsigned*>(take(r * 2 * 4));
  w->row_last = reinterpret_cast<int*>(take(r * 4));
  w->row_cut = reinterpret_cast<int*>(take(r * 2 * 4));
  w->row_total = reinterpret_cast<double*>(take(r * 8));
  w->chunk_sums = reinterpret_cast<double*>(take(r * kSpreadChunks * 8));
  w->sorted_sums = reinterpret_cast<double*>(take(r * kSpreadChunks * 8));
  w->p_sums = reinterpret_cast<double*>(take(r * kSpreadChunks * 8));
  return at;
}
}  // namespace

size_t spread_workspace_bytes(int rows) {
  SpreadWorkspace w;
  return carve_spread_workspace(nullptr, rows, &w);
}

SpreadWorkspace spread_workspace_at(void* base, int rows) {
  SpreadWorkspace w;
  carve_spread_workspace(static_cast<char*>(base), rows, &w);
  return w;
}

void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream) {
  MXS_CHECK(p.n_seqs >= 1 && p.vocab >= 1, "sample_tokens: n_seqs and vocab must be >= 1");
  static const bool no_spread = std::getenv("MXS_NO_SPREAD_SAMPLING") != nullptr;  // A/B
  if (p.all_spread && p.any_random && p.n_cut_rows >= 0 && p.n_cut_rows <= kRowSortMax && spread_ready(p.spread) &&
      p.vocab <= kSpreadMaxVocab && !no_spread) {
    sampling_spread_tempered<<<dim3(p.n_seqs, kTemperedCtas), kSpreadThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    if (p.n_cut_rows > 0) {
      sort_rows(p, p.cut_rows, p.n_cut_rows, stream);
      for (int pass = 0; pass < 2; ++pass) {
        sampling_spread_sorted_sums<<<dim3(p.n_seqs, kWeightsCtas), kSpreadThreads, 0, stream>>>(p, pass);
        CUDA_CHECK_LAUNCH();
      }
      sampling_spread_cut<<<p.n_seqs, kThreads, 0, stream>>>(p);
      CUDA_CHECK_LAUNCH();
    }
    sampling_spread_weights<<<dim3(p.n_seqs, kWeightsCtas), kSpreadThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    sampling_spread_draw<<<p.n_seqs, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    return;
  }
  sampling_prepare<<<p.n_seqs, kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
  if (p.any_random && p.any_sort) {
    if (p.n_sort_rows >= 0 && p.n_sort_rows <= kRowSortMax) {
      sort_rows(p, p.sort_rows, p.n_sort_rows, stream);
    } else {
      size_t bytes = p.sort_temp_bytes;
      CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
          p.sort_temp, bytes, p.z, p.z_sorted, p.order_in, p.order, int64_t(p.n_seqs) * p.vocab, p.n_seqs,
          p.segment_offsets, row_ends(p.seqs, p.vocab), 0, 32, stream));
    }
    sampling_draw<<<p.n_seqs, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    sampling_logprob<<<p.n_seqs, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream) {
  sample_uniform_kernel<<<(n + 255) / 256, 256, 0, stream>>>(seeds, steps, out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
