// sampling_prepare: one CTA per row: copies the bf16 logits to fp32, the raw log-normalizer (double sum, in the spread
// path's order) for logprobs, penalties, greedy argmax, temperature, the max of z, top-k and top-p by radix selects
// (select_reaching), min-p as a test on w, then the draw (draw_ascending: the kept candidates in ascending id order,
// double prefix sums by chunk of ids). A step of plain greedy rows takes each token from the LM head's argmax key
// here; any other step runs here only as the fallback and the tests' second implementation of the spread path
// (sampling_spread.cu), whose tokens and logprobs are these bit for bit.
#include "cuda/cuda_check.h"
#include "cuda/kernels/sampling_device.cuh"
#include "cuda/kernels/sampling_paths.h"

namespace mxs::cuda::sampling_detail {
namespace {

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

// draw_pick after this CTA's own chunk sums (for_chunk_staged), over z with weight_of(z, z_max).
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
  // 1-2. logit bias, repetition, then frequency / presence penalties, on z in place.
  __syncthreads();
  if (sampling_edits_logits(q)) {
    __shared__ int s_pend[2];
    const int pending = q.pending_index >= 0 ? p.tokens[q.pending_index] : -1;
    penalize_row(q, p.ids, p.counts, p.bias_ids, p.bias_values, pending, [&](int id) { return z[id]; },
                 [&](int id, float v) { z[id] = v; }, s_pend);
  }
  if (q.mask_offset >= 0) {  // 2b. -inf outside the allowed set
    const uint32_t* allow = p.allowed + q.mask_offset;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
      if (!(allow[i >> 5] >> (i & 31) & 1u)) z[i] = -INFINITY;
    __syncthreads();
  }
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

}  // namespace

void launch_sampling_prepare(const SamplingParamsDev& p, cudaStream_t stream) {
  sampling_prepare<<<p.n_seqs, kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda::sampling_detail
