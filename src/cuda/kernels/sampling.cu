// Sampling kernels (see sampling.h). sampling_prepare: one CTA per sequence: copies the bf16 logits to fp32,
// raw log-normalizer (double sum) for logprobs, penalties, greedy argmax, temperature, the max of z, top-k and top-p by
// radix selects (select_reaching), min-p as a test on w, then the draw. Every draw is draw_ascending: the kept
// candidates in ascending id order, double prefix sums by chunk of ids. The spread path (below, "Spread path") runs
// the same arithmetic over many CTAs per row.
#include "cuda/kernels/sampling.h"

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "engine/sampling_params.h"

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

// Step 0's sum of exp(z - mx) over the row (the raw log-normalizer) in the spread path's order (sampling_spread_weights
// then _draw), so that both paths give the same logprobs bit for bit: kWeightsCtas slices of ids (a weights CTA's ids),
// each summed by kSpreadThreads threads (thread t: its ids b + t, b + t + 256, ... in order; then block_reduce's order:
// a warp's xor tree, the warps in order), the slices' sums in slice order. Thread 256 g + t here is thread t of slice
// 4k + g. Every thread of the kThreads CTA calls it and gets the sum (sh.chunk_prefix and sh.dsum are its scratch).
// Not inlined: in sampling_prepare (64 registers at 1,024 threads) it spilled.
__device__ __noinline__ double spread_order_exp_sum(const float* z, int V, float mx, Shared& sh) {
  constexpr int kGroups = kThreads / kSpreadThreads, kWarps = kSpreadThreads / 32;
  const int chunk = spread_chunk(V), g = threadIdx.x / kSpreadThreads, t = threadIdx.x % kSpreadThreads;
  for (int y0 = 0; y0 < kWeightsCtas; y0 += kGroups) {
    const int y = y0 + g, b = min(V, y * kChunksPerCta * chunk), e = min(V, b + kChunksPerCta * chunk);
    double sum = 0.0;
#pragma unroll 1  // (sampling_spread_weights' loop)
    for (int i = b + t; i < e; i += kSpreadThreads) sum += exp(double(z[i]) - double(mx));
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if ((threadIdx.x & 31) == 0) sh.dsum[threadIdx.x >> 5] = sum;
    __syncthreads();
    if (t == 0) {
      double r = sh.dsum[g * kWarps];
      for (int w = 1; w < kWarps; ++w) r += sh.dsum[g * kWarps + w];
      sh.chunk_prefix[y] = r;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int y = 0; y < kWeightsCtas; ++y) total += sh.chunk_prefix[y];
    sh.dsum[0] = total;
  }
  __syncthreads();
  const double total = sh.dsum[0];
  __syncthreads();  // every thread has read it before sh.dsum is written again
  return total;
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

// Select histograms of 64-bit units (top-p's are < 2^44) in shared memory as three 32-bit planes of 15 / 15 / 14 bits
// ([kUnitParts][kRadixBins]): a shared atomicAdd on 64 bits is a compare-and-swap loop, and a row's digits crowd into
// a few bins (the first pass's top byte is the sign and the exponent's high bits), so the loops contended (one CTA's
// 4-pass top-k 307 -> 1,038 us, a 64-row spread pass 0 431 us). Every plane's bin stays below 2^32 for up to 2^17
// adds (a one-CTA copy: V <= 2^20 over 8 copies; a spread slice: <= 2^13). Counts (top-k) touch only plane 0.
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


// 5 and 7 without a sort. Among the ids `in` keeps, walk the order (z descending, ties -> lower id) adding unit(z): the
// candidate at which the running total first reaches rest = target_of(total) (>= 1, <= total) is the last element of
// the kept prefix: top-k with unit 1 and rest k, top-p with top_p_units(w) and top_p_target(top_p, total). Radix select
// on select_key, 8 bits a pass from the top (4 passes over the row, each summing the units of the candidates that
// match the digits chosen so far into a histogram of the next digit: integers, so the sums do not depend on the
// order the threads add them in); the ids with the final key K all weigh the same u, so the wanted one is the r-th
// (r = ceil(rest / u)) in ascending id order among them (a block scan of per-chunk counts). Every thread gets it.
template <typename In, typename Unit, typename Target>
__device__ KeptThreshold select_reaching(const float* z, int V, In in, Unit unit, Target target_of, Shared& sh) {
  uint32_t prefix = 0, mask = 0;
  unsigned* hist_flat = &sh.hist[0][0][0];
  unsigned* my_hist = sh.hist[(threadIdx.x >> 5) % kHistCopies][0];
  // the copies' totals per digit, over the start of the histograms once every thread has read its digit's copies
  unsigned long long* bins = reinterpret_cast<unsigned long long*>(hist_flat);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kHistCopies * kUnitParts * kRadixBins; i += blockDim.x) hist_flat[i] = 0u;
    __syncthreads();
    for_row(V, [&](int i) { return z[i]; }, [&](float v, int i) {
      const uint32_t key = select_key(v);
      if ((key & mask) == prefix && in(v, i)) hist_add_units(my_hist, int((key >> shift) & (kRadixBins - 1)), unit(v));
    });
    __syncthreads();
    unsigned long long c = 0;
    if (threadIdx.x < kRadixBins)
      for (int h = 0; h < kHistCopies; ++h) c += hist_units(sh.hist[h][0], threadIdx.x);
    __syncthreads();
    if (threadIdx.x < kRadixBins) bins[threadIdx.x] = c;
    __syncthreads();
    if (threadIdx.x == 0) {  // the digit where the running total reaches rest, from the largest digit down
      unsigned long long rest = sh.sel_rest;
      if (shift == 24) {
        unsigned long long total = 0;
        for (int d = 0; d < kRadixBins; ++d) total += bins[d];
        rest = target_of(total);
      }
      unsigned long long above = 0;
      int d = kRadixBins - 1;
      for (; d > 0; --d) {
        const unsigned long long c = bins[d];
        if (above + c >= rest) break;
        above += c;
      }
      sh.sel_digit = d;
      sh.sel_rest = rest - above;
    }
    __syncthreads();
    prefix |= uint32_t(sh.sel_digit) << shift;
    mask |= uint32_t(kRadixBins - 1) << shift;
  }
  const unsigned long long u = unit(from_orderable_bits(prefix));
  const int rank = int((sh.sel_rest + u - 1) / u);
  // prefix = K; the rank-th kept id (ascending) with key K. Per-thread counts over contiguous id chunks, exclusive
  // block scan of the counts (ints: exact), then the chunk that holds it, staged, walked by its owner.
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  int cnt = 0;
  for_chunk_staged(z, V, chunk, sh, [&](float v, int i) { cnt += select_key(v) == prefix && in(v, i); });
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
      if (select_key(sh.stage[j]) == prefix && in(sh.stage[j], c * chunk + j) && ++seen == rank) {
        sh.sel_id = c * chunk + j;
        break;
      }
  }
  __syncthreads();
  const int id_b = sh.sel_id;
  __syncthreads();  // every thread has read sh.sel_id before the next select writes it
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

// A plain greedy row (sampling_is_plain_greedy): its token is its LM-head argmax key's id (error 1 without a key, or
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
  if (p.row_argmax && sampling_is_plain_greedy(q)) {
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
  // 0. raw log-normalizer (for logprobs): max, then the double sum of exp(z - max) in the spread path's order (the same
  // logprobs on either path).
  if (q.want_logprob || q.top_logprobs > 0) {
    mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
    const double sum = spread_order_exp_sum(z, V, mx, sh);
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
  // 4. temperature, and the max of z over all ids (the largest kept one whatever the cuts keep). The reduction's
  // __syncthreads also makes this block's z writes visible to all its threads.
  float z_max = -INFINITY;
  for_row(V, [&](int i) { return z[i]; }, [&](float v, int i) {
    const float t = v / q.temperature;
    z[i] = t;
    z_max = fmaxf(z_max, t);
  });
  z_max = block_reduce(z_max, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
  if (!isfinite(z_max)) {
    if (threadIdx.x == 0) res.error = 2, res.token = -1;
    return;
  }
  int token;
  if (sampling_has_cut(q, V)) {
    KeptThreshold prefix = kKeepAll;
    if (sampling_has_top_k(q, V))  // 5. top-k: the k-th candidate
      prefix = select_reaching(z, V, KeptAll{}, [](float) { return 1ull; },
                               [&](unsigned long long) { return (unsigned long long)q.top_k; }, sh);
    if (sampling_has_top_p(q))  // 7. top-p within top-k's prefix: where the units reach their target
      prefix = select_reaching(z, V, prefix, [&](float v) { return top_p_units(weight_of(v, z_max)); },
                               [&](unsigned long long total) { return top_p_target(q.top_p, total); }, sh);
    token = draw_ascending(z, V, z_max, KeptCut{prefix, q.min_p, z_max}, q, sh);  // 8. min-p, 9. the draw
  } else {
    token = draw_ascending(z, V, z_max, KeptAll{}, q, sh);
  }
  if (threadIdx.x == 0) {
    res.token = token;
    res.error = 0;
    // Raw logprob from step 0's normalizer.
    if (q.want_logprob) res.logprob = float(double(to_f32(logits[token])) - double(sh.raw_max) - sh.raw_log_sum);
  }
}

__global__ void sample_uniform_kernel(const uint64_t* seeds, const uint64_t* steps, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = sample_uniform_dev(seeds[i], steps[i]);
}


// Spread path: every row of a step that is not all plain greedy rows (sampling_is_plain_greedy; those take their token
// from the LM head's argmax key in sampling_spread_tempered and are skipped after). sampling_prepare runs a row in one
// CTA, on one SM: 201,088 double-precision exps and several passes over the row, each bound by what one SM can have in
// flight. The same arithmetic spread over the GPU, every pass over a row coalesced:
//   sampling_spread_penalize (a CTA per row with a penalty): the listed ids' penalized logits into z, a bit per id;
//   sampling_spread_tempered (rows x spread_ctas_per_row): z = logit (or its penalized value) / T, the row's NaN flag, the
//     max of z and, for rows with logprobs, of the raw logits (orderable bits, atomicMax); greedy rows: no z, the
//     argmax_key of the (penalized) logits into row_best instead (block_argmax's order: larger value, then lower id);
//   per select (top-k, then top-p within top-k's prefix, then top logprobs on the raw logits), select_reaching spread:
//     4 x sampling_spread_select (rows x spread_ctas_per_row, each CTA a slice of ids: its units per digit into a shared
//     histogram, added into the row's; the row's last CTA to arrive picks the digit) and sampling_spread_select_tie
//     (the r-th id with the final key, from per-slice counts); the prefix's last element into row_cut;
//   sampling_spread_weights (rows x kWeightsCtas): w = weight_of(z, z_max) over z (0 for ids the cuts drop), staged in
//     shared memory, one lane per chunk summing its chunk's w in id order: draw_ascending's chunk sums, bit for bit;
//     the largest kept id into row_last; rows with logprobs: the raw normalizer's sum per CTA, the top logprobs' ids;
//     (greedy rows: only the logprob part);
//   sampling_spread_draw (a kThreads CTA per row): draw_ascending's serial prefix over those sums, then its walk
//     (draw_pick), or a greedy row's token from row_best; the logprobs.
// So the token is sampling_prepare's bit for bit (SpreadPathMatchesOneCtaPathBitForBit).
// CTAs per row of sampling_spread_tempered and the selects (whose results do not depend on it: maxima, integer sums):
// kSpreadSelectCtas while the rows' CTAs fit the GPU about twice (a CTA per SM for one row), fewer for many rows, whose
// CTAs would otherwise each do little besides their fixed cost (the histogram's clear and merge, the arrival): 64 rows
// on 32 CTAs each select 1.2-1.3x faster than on 128 (exp191, H200). MXS_SPREAD_ROW_CTAS=N (A/B) sets it.
int spread_ctas_per_row(int rows) {
  static const int forced = [] {
    const char* e = std::getenv("MXS_SPREAD_ROW_CTAS");
    return e ? std::atoi(e) : 0;
  }();
  if (forced > 0) return std::min(forced, kSpreadSelectCtas);
  int n = kSpreadSelectCtas;
  while (n > 16 && n * rows > 2048) n /= 2;
  return n;
}
constexpr int kTemperedUnroll = 4;  // loads in flight per thread
constexpr int kMaxChunk = kSpreadMaxVocab / kSpreadChunks;  // ids per chunk the kernels stage
static_assert(kSpreadChunks == kThreads, "the spread chunks are draw_ascending's (one per thread of kThreads)");
static_assert(kSpreadChunks % kChunksPerCta == 0, "whole chunk groups per CTA");
static_assert(kMaxChunk <= kThreads * (kStageIds + 1), "draw_pick stages a whole chunk in Shared::stage");
static_assert(kSpreadMaxVocab <= kTopPMaxVocab, "top-p's units of a row fit in 63 bits");
// The row's max of z from sampling_spread_tempered, or NaN when the row has a NaN logit or no finite max (the draw
// kernel reports those; the kernels in between skip the row).
__device__ __forceinline__ float spread_row_max(const SamplingParamsDev& p, int s) {
  if (p.spread.row_max[2 * s + 1] != 0u) return NAN;
  const float m = from_orderable_bits(p.spread.row_max[2 * s]);
  return isfinite(m) ? m : NAN;
}
// Whether the kernels between sampling_spread_tempered and _draw skip row s: a NaN logit or, for a sampled row, no
// finite max of z (the draw kernel reports both); a greedy row's argmax needs no finite max (as sampling_prepare's).
__device__ __forceinline__ bool spread_row_failed(const SamplingParamsDev& p, int s, const SampleSeqParams& q) {
  return q.temperature == 0.0f ? p.spread.row_max[2 * s + 1] != 0u : isnan(spread_row_max(p, s));
}
// A greedy row's key of (v, id) for the argmax: block_argmax's order (larger v, then lower id; -0 == +0).
__device__ __forceinline__ unsigned long long greedy_key(float v, int id) { return argmax_key(v == 0.0f ? 0.0f : v, id); }
// The prefix a cut (0 top-k, 1 top-p, 2 top logprobs) of row s keeps, from row_cut.
__device__ __forceinline__ KeptThreshold spread_cut(const SamplingParamsDev& p, int s, int cut) {
  const int* c = p.spread.row_cut + 2 * (kSpreadCuts * s + cut);
  return KeptThreshold{__int_as_float(c[0]), c[1]};
}
// The values a cut selects on: z for top-k and top-p, the raw logits for top logprobs (the N best raw logits, ties ->
// lower id: the prefix of their order, as sampling_prepare's block_argmax loop finds them).
struct SelectSource {
  const float* z;
  const bf16_t* raw;
  __device__ float operator()(int i) const { return raw ? to_f32(raw[i]) : z[i]; }
};
__device__ __forceinline__ SelectSource select_source(const SamplingParamsDev& p, int s, int cut) {
  const size_t row = size_t(s) * size_t(p.vocab);
  return cut == 2 ? SelectSource{nullptr, static_cast<const bf16_t*>(p.logits) + row} : SelectSource{p.z + row, nullptr};
}
// Row s's prefix before cut `cut` is applied: top-k's for top-p (when the row has top-k), else every id.
__device__ __forceinline__ KeptThreshold spread_select_in(const SamplingParamsDev& p, int s, int cut) {
  return cut == 1 && sampling_has_top_k(p.seqs[s], p.vocab) ? spread_cut(p, s, 0) : kKeepAll;
}
__device__ __forceinline__ bool spread_row_selects(const SampleSeqParams& q, int V, int cut) {
  return cut == 0 ? sampling_has_top_k(q, V) : cut == 1 ? sampling_has_top_p(q) : q.top_logprobs > 0;
}
// A select's units per candidate: top-p's of its weight, else 1 (a count).
__device__ __forceinline__ unsigned long long select_units(int cut, float v, float z_max) {
  return cut == 1 ? top_p_units(weight_of(v, z_max)) : 1ull;
}
// Ids [b, e) of a select CTA's slice.
// Ids per select CTA's slice (gridDim.y = the row's CTAs, spread_ctas_per_row).
__device__ __forceinline__ int select_span(int V) { return (V + int(gridDim.y) - 1) / int(gridDim.y); }

// for (i = b + threadIdx.x; i < e; i += kSpreadThreads) visit(load(i), i), with kSliceUnroll loads in flight per
// thread (a spread CTA's pass over its ids).
constexpr int kSliceUnroll = 4;
template <typename Load, typename Visit>
__device__ __forceinline__ void for_slice(Load load, int b, int e, Visit visit) {
  for (int i0 = b + threadIdx.x; i0 < e; i0 += kSpreadThreads * kSliceUnroll) {
    float v[kSliceUnroll];
#pragma unroll
    for (int u = 0; u < kSliceUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      v[u] = i < e ? load(i) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kSliceUnroll; ++u) {
      const int i = i0 + u * kSpreadThreads;
      if (i >= e) break;
      visit(v[u], i);
    }
  }
}

// Words of a row's `penalized` bits.
__host__ __device__ __forceinline__ int penalty_words(int V) { return (V + 31) / 32; }

// sampling_prepare's steps 1-2 for the spread rows with a penalty (one CTA per row; the id lists are short): the
// penalized logit of every listed id into z, its bit into `penalized` (sampling_spread_tempered then takes z for those
// ids); repetition first, then frequency / presence on the result, the same float operations in the same order.
__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_penalize(SamplingParamsDev p) {
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (!sampling_has_penalty(q)) return;
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float* z = p.z + size_t(s) * V;
  unsigned* pen = p.spread.penalized + size_t(s) * penalty_words(V);
  if (q.repetition_penalty != 1.0f)
    for (int i = threadIdx.x; i < q.n_rep; i += kSpreadThreads) {
      const int id = p.ids[q.rep_offset + i];
      const float v = to_f32(logits[id]);
      z[id] = v > 0.0f ? v / q.repetition_penalty : v * q.repetition_penalty;
      atomicOr(&pen[id >> 5], 1u << (id & 31));
    }
  __syncthreads();  // (the repetition's z and bits are visible to the whole CTA)
  if (q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f)
    for (int i = threadIdx.x; i < q.n_out; i += kSpreadThreads) {
      const int id = p.ids[q.out_offset + i];
      const float v = (pen[id >> 5] >> (id & 31) & 1u) ? z[id] : to_f32(logits[id]);
      z[id] = v - (float(p.counts[q.out_offset + i]) * q.frequency_penalty + q.presence_penalty);
      atomicOr(&pen[id >> 5], 1u << (id & 31));
    }
}

// (The minimum of 1 CTA per SM: without it ptxas held the kernel to 32 registers and spilled.)
__global__ void __launch_bounds__(kSpreadThreads, 1) sampling_spread_tempered(SamplingParamsDev p) {
  __shared__ float s_max[kSpreadThreads / 32], s_raw_max[kSpreadThreads / 32];
  __shared__ unsigned long long s_best[kSpreadThreads / 32];
  __shared__ int s_nan[kSpreadThreads / 32];
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  const bool keyed = p.row_argmax && sampling_is_plain_greedy(q);  // its token is the LM head's key
  if (blockIdx.y == 0 && threadIdx.x == 0) {  // the argmax key consumed, as sampling_prepare does
    const unsigned long long key = take_argmax_key(p, s);
    if (keyed) greedy_from_key(key, logits, p.results[s]);  // (the later kernels skip the row)
  }
  if (keyed) return;
  const bool greedy = q.temperature == 0.0f;  // its argmax into row_best; no z
  float* z = p.z + size_t(s) * V;
  // ids sampling_spread_penalize rewrote: z holds their penalized logit (bit set in `penalized`)
  const unsigned* pen = sampling_has_penalty(q) ? p.spread.penalized + size_t(s) * penalty_words(V) : nullptr;
  float mx = -INFINITY, raw_mx = -INFINITY;
  unsigned long long best = 0ull;
  int nan = 0;
  const int stride = int(gridDim.y) * kSpreadThreads * kTemperedUnroll;
  for (int i0 = blockIdx.y * kSpreadThreads * kTemperedUnroll + threadIdx.x; i0 < V; i0 += stride) {
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
      raw_mx = fmaxf(raw_mx, v[u]);  // (logprobs: the raw logits' max)
      if (pen && (pen[i >> 5] >> (i & 31) & 1u)) v[u] = z[i];
      if (greedy) {  // (sampling_prepare: z = v, penalties, then the argmax)
        const unsigned long long k = greedy_key(v[u], i);
        best = k > best ? k : best;
        mx = fmaxf(mx, v[u]);
      } else {
        const float t = v[u] / q.temperature;  // (sampling_prepare: z = v, penalties, then z / temperature)
        z[i] = t;
        mx = fmaxf(mx, t);
      }
    }
  }
  mx = warp_max(mx);
  raw_mx = warp_max(raw_mx);
  nan = __any_sync(0xffffffffu, nan);
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long k = __shfl_xor_sync(0xffffffffu, best, o);
    best = k > best ? k : best;
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) s_max[warp] = mx, s_raw_max[warp] = raw_mx, s_nan[warp] = nan, s_best[warp] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kSpreadThreads / 32; ++w) {
      mx = fmaxf(mx, s_max[w]), raw_mx = fmaxf(raw_mx, s_raw_max[w]), nan |= s_nan[w];
      best = s_best[w] > best ? s_best[w] : best;
    }
    atomicMax(&p.spread.row_max[2 * s], orderable_bits(mx));
    if (nan) atomicOr(&p.spread.row_max[2 * s + 1], 1u);
    if (q.want_logprob || q.top_logprobs > 0) atomicMax(&p.spread.raw_max[s], orderable_bits(raw_mx));
    if (greedy) atomicMax(&p.spread.row_best[s], best);
  }
}

// Arrival of this CTA on row s's counter after its global writes; true in the row's last CTA (which then sees every
// other CTA's writes). The last CTA resets the counter for the next kernel.
__device__ bool spread_last_arrival(unsigned* arrivals, int s) {
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    s_last = atomicAdd(&arrivals[s], 1u) == gridDim.y - 1;
    if (s_last) arrivals[s] = 0u;
  }
  __syncthreads();
  if (s_last) __threadfence();
  return s_last;
}

// One pass of select_reaching (shift = 24 - 8 pass) for cut `cut` of every row that has it: this CTA's slice of ids
// adds its candidates' units into a shared histogram of the digit, then into the row's (integers: any order); the row's
// last CTA picks the digit as select_reaching's thread 0 does (warp 0: lane l owns digits 255 - 8l .. 248 - 8l, a scan
// of the lanes' sums, then the lane that holds it walks its 8) and clears the row's histogram.
__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_select(SamplingParamsDev p, int cut, int pass) {
  __shared__ unsigned s_hist[kUnitParts * kRadixBins];
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (!spread_row_selects(q, V, cut) || spread_row_failed(p, s, q)) return;
  const float z_max = spread_row_max(p, s);  // (top-p's units; a greedy row's selects count)
  SpreadSelectState& st = p.spread.select_state[s];
  const uint32_t prefix = pass == 0 ? 0u : st.prefix, mask = pass == 0 ? 0u : st.mask;
  const int shift = 24 - 8 * pass;
  const KeptThreshold in = spread_select_in(p, s, cut);
  for (int d = threadIdx.x; d < kUnitParts * kRadixBins; d += kSpreadThreads) s_hist[d] = 0u;
  __syncthreads();
  const int span = select_span(V), b = min(V, int(blockIdx.y) * span), e = min(V, b + span);
  for_slice(select_source(p, s, cut), b, e, [&](float v, int i) {
    const uint32_t key = select_key(v);
    if ((key & mask) == prefix && in(v, i))
      hist_add_units(s_hist, int((key >> shift) & (kRadixBins - 1)), select_units(cut, v, z_max));
  });
  __syncthreads();
  unsigned long long* g = p.spread.select_hist + size_t(s) * kRadixBins;
  for (int d = threadIdx.x; d < kRadixBins; d += kSpreadThreads) {
    const unsigned long long units = hist_units(s_hist, d);
    if (units != 0ull) atomicAdd(&g[d], units);
  }
  if (!spread_last_arrival(p.spread.select_arrivals, s) || threadIdx.x >= 32) return;
  const int lane = threadIdx.x;
  unsigned long long c[8], sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    const int d = kRadixBins - 1 - 8 * lane - j;
    c[j] = __ldcg(&g[d]);
    g[d] = 0ull;
    sum += c[j];
  }
  unsigned long long rest;
  if (pass == 0) {
    unsigned long long total = sum;
    for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
    rest = cut == 0   ? (unsigned long long)q.top_k
           : cut == 1 ? top_p_target(q.top_p, total)
                      : (unsigned long long)min(q.top_logprobs, V);
  } else {
    rest = st.rest;
  }
  unsigned long long incl = sum;
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  const unsigned reach = __ballot_sync(0xffffffffu, incl >= rest);
  const int holder = reach ? __ffs(reach) - 1 : 31;  // (none: total < rest, impossible; digit 0 as the CTA's loop)
  __syncwarp();  // every lane has read st before the holder rewrites it
  if (lane == holder) {
    unsigned long long above = incl - sum;
    int d = kRadixBins - 1 - 8 * lane;
    for (int j = 0; j < 8; ++j, --d) {
      if (d == 0 || above + c[j] >= rest) break;
      above += c[j];
    }
    st.prefix = prefix | uint32_t(d) << shift;
    st.mask = mask | uint32_t(kRadixBins - 1) << shift;
    st.rest = rest - above;
  }
}

// The end of select_reaching spread: the ids with the final key K weigh u each, so the kept prefix ends at the r-th
// (r = ceil(rest / u)) of them in ascending id order. Every CTA counts its slice's; the row's last CTA finds the slice
// that holds the r-th and walks it (256 ids a round, ballots), and writes the element to row_cut.
__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_select_tie(SamplingParamsDev p, int cut) {
  __shared__ int s_warp[kSpreadThreads / 32];
  __shared__ int s_slice, s_rank, s_id;
  __shared__ unsigned s_counts[kSpreadSelectCtas];
  static_assert(kSpreadSelectCtas <= kSpreadThreads, "one slice count per thread");
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (!spread_row_selects(q, V, cut) || spread_row_failed(p, s, q)) return;
  const float z_max = spread_row_max(p, s);  // (top-p's units; a greedy row's selects count)
  const SpreadSelectState& st = p.spread.select_state[s];
  const uint32_t key_b = st.prefix;
  const KeptThreshold in = spread_select_in(p, s, cut);
  const SelectSource src = select_source(p, s, cut);
  const int span = select_span(V);
  auto match = [&](int i, int e) {
    if (i >= e) return false;
    const float v = src(i);
    return select_key(v) == key_b && in(v, i);
  };
  {
    const int b = min(V, int(blockIdx.y) * span), e = min(V, b + span);
    int cnt = 0;
    for (int i = b + threadIdx.x; i < e; i += kSpreadThreads) cnt += match(i, e);
    cnt = block_reduce(cnt, [](int x, int y) { return x + y; }, s_warp);
    if (threadIdx.x == 0) p.spread.slice_counts[size_t(s) * kSpreadSelectCtas + blockIdx.y] = unsigned(cnt);
    __syncthreads();  // (s_warp is reused below)
  }
  if (!spread_last_arrival(p.spread.select_arrivals, s)) return;
  if (threadIdx.x < gridDim.y)  // (all at once: a loop of dependent loads took ~20 us)
    s_counts[threadIdx.x] = __ldcg(&p.spread.slice_counts[size_t(s) * kSpreadSelectCtas + threadIdx.x]);
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned long long u = select_units(cut, from_orderable_bits(key_b), z_max);
    int rank = int((st.rest + u - 1) / u), slice = 0;
    for (; slice < int(gridDim.y) - 1; ++slice) {
      const int n = int(s_counts[slice]);
      if (rank <= n) break;
      rank -= n;
    }
    s_slice = slice, s_rank = rank, s_id = -1;
  }
  __syncthreads();
  const int b = min(V, s_slice * span), e = min(V, b + span), rank = s_rank;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int seen = 0;
  for (int i0 = b; i0 < e; i0 += kSpreadThreads) {  // uniform: seen comes from shared counts
    const bool m = match(i0 + threadIdx.x, e);
    const unsigned bal = __ballot_sync(0xffffffffu, m);
    if (lane == 0) s_warp[warp] = __popc(bal);
    __syncthreads();
    int before = seen + __popc(bal & ((1u << lane) - 1u)), round = 0;
    for (int w = 0; w < kSpreadThreads / 32; ++w) {
      if (w < warp) before += s_warp[w];
      round += s_warp[w];
    }
    if (m && before + 1 == rank) s_id = i0 + threadIdx.x;
    seen += round;
    __syncthreads();
    if (seen >= rank) break;
  }
  if (threadIdx.x == 0) {
    const int id = s_id >= 0 ? s_id : max(0, e - 1);  // (always found: the counts say the slice holds the rank-th)
    int* c = p.spread.row_cut + 2 * (kSpreadCuts * s + cut);
    c[0] = __float_as_int(src(id)), c[1] = id;
  }
}

__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_weights(SamplingParamsDev p) {
  __shared__ float s_w[kChunksPerCta * kMaxChunk];
  __shared__ int s_last;
  const int s = blockIdx.x, V = p.vocab, chunk = spread_chunk(V);
  const SampleSeqParams& q = p.seqs[s];
  const bool greedy = q.temperature == 0.0f;  // (only its logprob part)
  if ((greedy && !q.want_logprob && q.top_logprobs == 0) || spread_row_failed(p, s, q)) return;
  const int c0 = blockIdx.y * kChunksPerCta;
  const int b = min(V, c0 * chunk), e = min(V, b + kChunksPerCta * chunk);
  if (!greedy) {
    const float z_max = spread_row_max(p, s);
    float* z = p.z + size_t(s) * V;
    // w over the kept ids (kept(z, i): keep), 0 for the others; the largest kept id into `last`.
    auto weigh = [&](auto keep, int& last) {
      for_slice([&](int i) { return z[i]; }, b, e, [&](float v, int i) {
        const bool k = keep(v, i);
        const float w = k ? weight_of(v, z_max) : 0.0f;  // (draw_ascending adds nothing for a dropped id)
        if (k) last = i;
        z[i] = w;
        s_w[i - b] = w;
      });
    };
    int last = -1;
    if (sampling_has_cut(q, V)) {
      if (threadIdx.x == 0) s_last = -1;
      __syncthreads();
      const KeptThreshold prefix =
          sampling_has_top_p(q) ? spread_cut(p, s, 1) : sampling_has_top_k(q, V) ? spread_cut(p, s, 0) : kKeepAll;
      weigh(KeptCut{prefix, q.min_p, z_max}, last);
      if (last >= 0) atomicMax(&s_last, last);
      __syncthreads();
      if (threadIdx.x == 0 && s_last >= 0) atomicMax(&p.spread.row_last[s], s_last + 1);
    } else {
      weigh(KeptAll{}, last);  // (the last kept id is V - 1: sampling_spread_draw knows)
      __syncthreads();
    }
    if (threadIdx.x < kChunksPerCta) {  // draw_ascending's chunk sum: in id order, from 0.0, every kept id's w
      const int cb = min(V, (c0 + threadIdx.x) * chunk), ce = min(V, cb + chunk);
      double cs = 0.0;
      for (int i = cb; i < ce; ++i) cs += double(s_w[i - b]);
      p.spread.chunk_sums[size_t(s) * kSpreadChunks + c0 + threadIdx.x] = cs;
    }
  }
  if (q.want_logprob || q.top_logprobs > 0) {
    // This CTA's share of the raw log-normalizer (sum of exp(logit - raw max) over [b, e)), and its ids among the top
    // logprobs (the prefix sampling_spread_select found on the raw logits) into top_ids, in any order.
    __shared__ double s_sum[kSpreadThreads / 32];
    const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
    const double raw_max = double(from_orderable_bits(p.spread.raw_max[s]));
    const KeptThreshold top = q.top_logprobs > 0 ? spread_cut(p, s, 2) : KeptThreshold{INFINITY, -1};  // (none)
    double sum = 0.0;
#pragma unroll 1  // (unrolled, the inlined double exps spilled)
    for (int i = b + threadIdx.x; i < e; i += kSpreadThreads) {
      const float v = to_f32(logits[i]);
      sum += exp(double(v) - raw_max);
      if (top(v, i)) {
        const int slot = atomicAdd(&p.spread.top_count[s], 1);
        if (slot < kMaxTopLogprobs) p.spread.top_ids[s * kMaxTopLogprobs + slot] = i;
      }
    }
    sum = block_reduce(sum, [](double x, double y) { return x + y; }, s_sum);  // (a fixed order: deterministic)
    if (threadIdx.x == 0) p.spread.raw_sums[size_t(s) * kWeightsCtas + blockIdx.y] = sum;
  }
}

__global__ void __launch_bounds__(kThreads) sampling_spread_draw(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (p.row_argmax && sampling_is_plain_greedy(q)) return;  // its token came from the key (sampling_spread_tempered)
  const bool greedy = q.temperature == 0.0f;  // its token is row_best's id
  SampleResultDev& res = p.results[s];
  const uint32_t key = p.spread.row_max[2 * s], nan = p.spread.row_max[2 * s + 1];
  const int last_kept = sampling_has_cut(q, V) ? p.spread.row_last[s] - 1 : V - 1;
  const uint32_t raw_max_key = p.spread.raw_max[s];
  const int n_top = min(p.spread.top_count[s], kMaxTopLogprobs);
  const unsigned long long best = p.spread.row_best[s];
  __syncthreads();
  if (threadIdx.x == 0) {
    p.spread.row_max[2 * s] = 0u, p.spread.row_max[2 * s + 1] = 0u, p.spread.row_last[s] = 0;
    p.spread.raw_max[s] = 0u, p.spread.top_count[s] = 0, p.spread.row_best[s] = 0ull;
  }
  if (sampling_has_penalty(q)) {  // the penalized bits back to zero (the words of the listed ids)
    unsigned* pen = p.spread.penalized + size_t(s) * penalty_words(V);
    for (int i = threadIdx.x; i < q.n_rep + q.n_out; i += kThreads)
      pen[p.ids[i < q.n_rep ? q.rep_offset + i : q.out_offset + i - q.n_rep] >> 5] = 0u;
  }
  if (nan != 0u) {
    if (threadIdx.x == 0) res.error = 1, res.token = -1;
    return;
  }
  int token;
  if (greedy) {
    token = 0x7fffffff - int(best & 0xffffffffu);  // (always set: every id's key is nonzero)
  } else {
    if (!isfinite(from_orderable_bits(key))) {
      if (threadIdx.x == 0) res.error = 2, res.token = -1;
      return;
    }
    sh.chunk_prefix[threadIdx.x] = p.spread.chunk_sums[size_t(s) * kSpreadChunks + threadIdx.x];
    __syncthreads();
    if (threadIdx.x == 0) exclusive_chunk_prefix(sh);
    __syncthreads();
    // w over z: 0 for ids a cut drops, so "kept with a nonzero weight" is "nonzero".
    token = draw_pick(p.z + size_t(s) * V, V, KeptAll{}, [](float w) { return w; }, last_kept, q, sh);
  }
  if (threadIdx.x == 0) {
    res.token = token, res.error = 0;
    if (q.want_logprob || q.top_logprobs > 0) {  // raw logprobs (sampling_prepare's formula): the normalizer from the
      double sum = 0.0;                         // weights kernel's sums, added in CTA order
      for (int c = 0; c < kWeightsCtas; ++c) sum += p.spread.raw_sums[size_t(s) * kWeightsCtas + c];
      const double raw_max = double(from_orderable_bits(raw_max_key)), log_sum = log(sum);
      const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
      if (q.want_logprob) res.logprob = float(double(to_f32(logits[token])) - raw_max - log_sum);
      // top logprobs: the gathered ids in the order (raw logit descending, ties -> lower id), by insertion
      int32_t ids[kMaxTopLogprobs];
      for (int k = 0; k < n_top; ++k) {
        const int32_t id = p.spread.top_ids[s * kMaxTopLogprobs + k];
        const float v = to_f32(logits[id]);
        int j = k;
        for (; j > 0; --j) {
          const float u = to_f32(logits[ids[j - 1]]);
          if (u > v || (u == v && ids[j - 1] < id)) break;
          ids[j] = ids[j - 1];
        }
        ids[j] = id;
      }
      for (int k = 0; k < n_top; ++k) {
        res.top_ids[k] = ids[k];
        res.top_lp[k] = float(double(to_f32(logits[ids[k]])) - raw_max - log_sum);
      }
    }
  }
}

bool spread_ready(const SpreadWorkspace& w) {
  return w.row_max && w.row_last && w.row_cut && w.select_hist && w.select_arrivals && w.select_state &&
         w.slice_counts && w.chunk_sums && w.penalized && w.row_best && w.raw_max && w.raw_sums && w.top_count &&
         w.top_ids;
}

// The workspace's regions in order, each 256-byte aligned, from `base` (nullptr: offsets only). Returns the bytes.
size_t carve_spread_workspace(char* base, int rows, int vocab, SpreadWorkspace* w) {
  const size_t r = size_t(std::max(rows, 1));
  size_t at = 0;
  auto take = [&](size_t bytes) {
    char* ptr = base ? base + at : nullptr;
    at += (bytes + 255) / 256 * 256;
    return ptr;
  };
  w->row_max = reinterpret_cast<unsigned*>(take(r * 2 * 4));
  w->row_last = reinterpret_cast<int*>(take(r * 4));
  w->row_cut = reinterpret_cast<int*>(take(r * kSpreadCuts * 2 * 4));
  w->select_hist = reinterpret_cast<unsigned long long*>(take(r * kRadixBins * 8));
  w->select_arrivals = reinterpret_cast<unsigned*>(take(r * 4));
  w->select_state = reinterpret_cast<SpreadSelectState*>(take(r * sizeof(SpreadSelectState)));
  w->slice_counts = reinterpret_cast<unsigned*>(take(r * kSpreadSelectCtas * 4));
  w->chunk_sums = reinterpret_cast<double*>(take(r * kSpreadChunks * 8));
  w->penalized = reinterpret_cast<unsigned*>(take(r * size_t(penalty_words(std::max(vocab, 1))) * 4));
  w->row_best = reinterpret_cast<unsigned long long*>(take(r * 8));
  w->raw_max = reinterpret_cast<unsigned*>(take(r * 4));
  w->raw_sums = reinterpret_cast<double*>(take(r * kWeightsCtas * 8));
  w->top_count = reinterpret_cast<int*>(take(r * 4));
  w->top_ids = reinterpret_cast<int32_t*>(take(r * kMaxTopLogprobs * 4));
  return at;
}

}  // namespace

size_t spread_workspace_bytes(int rows, int vocab) {
  SpreadWorkspace w;
  return carve_spread_workspace(nullptr, rows, vocab, &w);
}

SpreadWorkspace spread_workspace_at(void* base, int rows, int vocab) {
  SpreadWorkspace w;
  carve_spread_workspace(static_cast<char*>(base), rows, vocab, &w);
  return w;
}

void sample_tokens(const SamplingParamsDev& params, cudaStream_t stream) {
  SamplingParamsDev p = params;
  MXS_CHECK(p.n_seqs >= 1 && p.vocab >= 1, "sample_tokens: n_seqs and vocab must be >= 1");
  MXS_CHECK(p.vocab <= kTopPMaxVocab || !(p.spread_selects & 2),
            "sample_tokens: top-p's units need a vocabulary of at most 2^20 ids");
  static const bool no_spread = std::getenv("MXS_NO_SPREAD_SAMPLING") != nullptr;  // A/B
  if (p.spread_wanted && spread_ready(p.spread) && p.vocab <= kSpreadMaxVocab && !no_spread) {
    if (p.spread_penalties) {
      sampling_spread_penalize<<<p.n_seqs, kSpreadThreads, 0, stream>>>(p);
      CUDA_CHECK_LAUNCH();
    }
    const int row_ctas = spread_ctas_per_row(p.n_seqs);
    sampling_spread_tempered<<<dim3(p.n_seqs, row_ctas), kSpreadThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    for (int cut = 0; cut < kSpreadCuts; ++cut) {
      if (!(p.spread_selects >> cut & 1)) continue;
      for (int pass = 0; pass < 4; ++pass) {
        sampling_spread_select<<<dim3(p.n_seqs, row_ctas), kSpreadThreads, 0, stream>>>(p, cut, pass);
        CUDA_CHECK_LAUNCH();
      }
      sampling_spread_select_tie<<<dim3(p.n_seqs, row_ctas), kSpreadThreads, 0, stream>>>(p, cut);
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
}

void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream) {
  sample_uniform_kernel<<<(n + 255) / 256, 256, 0, stream>>>(seeds, steps, out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
