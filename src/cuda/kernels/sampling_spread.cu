// The spread path (sampling.h): every pass over a row on many CTAs, the same arithmetic as sampling_prepare
// (sampling_prepare.cu) in the same order, so the same tokens and logprobs bit for bit.
#include <algorithm>
#include <cstdlib>

#include "cuda/cuda_check.h"
#include "cuda/kernels/sampling_device.cuh"
#include "cuda/kernels/sampling_paths.h"

namespace mxs::cuda {
namespace sampling_detail {
namespace {

// Spread path: every row of a step that is not all plain greedy rows (sampling_is_plain_greedy; those take their token
// from the LM head's argmax key in sampling_spread_tempered and are skipped after). sampling_prepare runs a row in one
// CTA, on one SM: 201,088 double-precision exps and several passes over the row, each bound by what one SM can have in
// flight. The same arithmetic spread over the GPU, every pass over a row coalesced:
//   sampling_spread_penalize (a CTA per row with a bias or a penalty): the listed ids' edited logits into z, a bit per
//     id;
//   sampling_spread_tempered (rows x spread_ctas_per_row): z = logit (or its penalized value; -inf outside an
//     allowed-token mask) / T, the row's NaN flag,
//     the max of z and, for rows with logprobs, of the raw logits (orderable bits, atomicMax); greedy rows: no z, the
//     argmax_key of the (penalized) logits into row_best instead (block_argmax's order: larger value, then lower id);
//   per select (top-k, then top-p within top-k's prefix, then top logprobs on the raw logits), select_reaching spread:
//     4 x sampling_spread_select (rows x spread_ctas_per_row, each CTA a slice of ids: its units per digit into a
//     shared histogram, added into the row's; the row's last CTA to arrive picks the digit) and
//     sampling_spread_select_tie (the r-th id with the final key, from per-slice counts); the prefix's last element
//     into row_cut;
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
// on 32 CTAs each select 1.2-1.3x faster than on 128 (exp191, H200). MXS_SPREAD_ROW_CTAS=N (A/B) sets it, within
// [kMinSpreadRowCtas, kSpreadSelectCtas]: a select slice adds at most 2^17 units into a histogram plane
// (hist_add_units).
constexpr int kMinSpreadRowCtas = 8;
static_assert(kSpreadMaxVocab / kMinSpreadRowCtas <= (1 << 17), "a select slice's histogram planes stay below 2^32");
int spread_ctas_per_row(int rows) {
  static const int forced = [] {
    const char* e = std::getenv("MXS_SPREAD_ROW_CTAS");
    return e ? std::atoi(e) : 0;
  }();
  if (forced > 0) return std::clamp(forced, kMinSpreadRowCtas, kSpreadSelectCtas);
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
__device__ __forceinline__ unsigned long long greedy_key(float v, int id) {
  return argmax_key(v == 0.0f ? 0.0f : v, id);
}
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
  return cut == 2 ? SelectSource{nullptr, static_cast<const bf16_t*>(p.logits) + row}
                   : SelectSource{p.z + row, nullptr};
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

// sampling_prepare's steps 1-2 (penalize_row) for the rows with a logit bias or a penalty (one CTA per row; the id
// lists are short):
// the penalized logit of every listed id (and of the pending token) into z, its bit into `penalized`
// (sampling_spread_tempered then takes z for those ids).
__global__ void __launch_bounds__(kSpreadThreads) sampling_spread_penalize(SamplingParamsDev p) {
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  if (!sampling_edits_logits(q)) return;
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float* z = p.z + size_t(s) * V;
  unsigned* pen = p.spread.penalized + size_t(s) * penalty_words(V);
  __shared__ int s_pend[2];
  const int pending = q.pending_index >= 0 ? p.tokens[q.pending_index] : -1;
  penalize_row(
      q, p.ids, p.counts, p.bias_ids, p.bias_values, pending,
      [&](int id) { return (pen[id >> 5] >> (id & 31) & 1u) ? z[id] : to_f32(logits[id]); },
      [&](int id, float v) {
        z[id] = v;
        atomicOr(&pen[id >> 5], 1u << (id & 31));
      },
      s_pend);
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
  const unsigned* pen = sampling_edits_logits(q) ? p.spread.penalized + size_t(s) * penalty_words(V) : nullptr;
  const uint32_t* allow = q.mask_offset >= 0 ? p.allowed + q.mask_offset : nullptr;  // -inf outside it (step 2b)
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
      if (allow && !(allow[i >> 5] >> (i & 31) & 1u)) v[u] = -INFINITY;
      if (greedy) {  // (sampling_prepare: z = v, penalties, then the argmax)
        const unsigned long long k = greedy_key(v[u], i);
        best = k > best ? k : best;
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
  if (greedy)  // (uniform in the CTA: one row)
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
    // w over the kept ids (in the prefix, and w >= min_p: KeptCut's test, its weight computed once), 0 for the others;
    // the largest kept id into `last`.
    auto weigh = [&](auto prefix, float min_p, int& last) {
      for_slice([&](int i) { return z[i]; }, b, e, [&](float v, int i) {
        const bool in = prefix(v, i);
        const float w_in = in ? weight_of(v, z_max) : 0.0f;
        const bool k = in && (min_p <= 0.0f || w_in >= min_p);
        const float w = k ? w_in : 0.0f;  // (draw_ascending adds nothing for a dropped id)
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
      weigh(prefix, q.min_p, last);
      if (last >= 0) atomicMax(&s_last, last);
      __syncthreads();
      if (threadIdx.x == 0 && s_last >= 0) atomicMax(&p.spread.row_last[s], s_last + 1);
    } else {
      weigh(KeptAll{}, 0.0f, last);  // (the last kept id is V - 1: sampling_spread_draw knows)
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
  if (sampling_edits_logits(q)) {  // the penalized bits back to zero (the words of the listed ids and the pending one)
    unsigned* pen = p.spread.penalized + size_t(s) * penalty_words(V);
    for (int i = threadIdx.x; i < q.n_rep + q.n_out; i += kThreads)
      pen[p.ids[i < q.n_rep ? q.rep_offset + i : q.out_offset + i - q.n_rep] >> 5] = 0u;
    for (int i = threadIdx.x; i < q.n_bias; i += kThreads) pen[p.bias_ids[q.bias_offset + i] >> 5] = 0u;
    if (q.pending_index >= 0 && threadIdx.x == 0) pen[p.tokens[q.pending_index] >> 5] = 0u;
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

bool spread_path_usable(const SamplingParamsDev& p) { return spread_ready(p.spread) && p.vocab <= kSpreadMaxVocab; }

void launch_sampling_spread(const SamplingParamsDev& p, cudaStream_t stream) {
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
}

}  // namespace sampling_detail

size_t spread_workspace_bytes(int rows, int vocab) {
  SpreadWorkspace w;
  return sampling_detail::carve_spread_workspace(nullptr, rows, vocab, &w);
}

SpreadWorkspace spread_workspace_at(void* base, int rows, int vocab) {
  SpreadWorkspace w;
  sampling_detail::carve_spread_workspace(static_cast<char*>(base), rows, vocab, &w);
  return w;
}

}  // namespace mxs::cuda
