// Warp-level routing pieces shared by moe_router (its last CTA) and moe_router_rows (a warp per token of a large
// step), so that both route bit for bit alike (gpt-oss-spec.md §3.5): one token's top-k of its bf16 router logits
// (descending, ties -> lower expert id) with the softmax over the k, and the scan of per-expert pair counts into
// the expert grouping (MoeRouteIndex).
#pragma once
#include <cmath>

#include "common/error.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

constexpr int kTopkMaxExperts = 128;  // gpt-oss-120b
constexpr int kTopkPerLane = kTopkMaxExperts / 32;
constexpr int kTopkMaxK = 8;

// The expert / top-k limits every router checks (`name` the entry, max_experts its own limit <= kTopkMaxExperts,
// `more` where larger counts go, "" if nowhere): mxs::Error otherwise.
inline void check_routing(const MoeRouterParams& p, const char* name, int max_experts, const char* more) {
  MXS_CHECK(p.n_experts >= 1 && p.n_experts <= max_experts,
            strfmt("%s: n_experts = %d is not supported (supported: 1..%d%s)", name, p.n_experts, max_experts, more));
  MXS_CHECK(p.top_k >= 1 && p.top_k <= kTopkMaxK && p.top_k <= p.n_experts,
            strfmt("%s: top_k = %d is not supported (supported: 1..%d, <= n_experts)", name, p.top_k, kTopkMaxK));
}

// v[j]: lane l's logit of expert l + 32 j (any value past n_experts; it is ignored). k rounds of a warp argmax
// over the lanes' best orderable keys (argmax_key: larger logit, then lower id), then exp(v - max) / sum in fp32.
// Every lane ends with the rank-s expert sel_i[s] and its weight w[s] = bf(p) (s < top_k; the rest 0).
// PER (experts per lane, n_experts <= 32 PER) and KMAX (top_k <= KMAX) bound the unrolled loops: the batch-1
// router instantiates PER = 1, KMAX = 4 for gpt-oss-20b (its routing runs after a cluster barrier on the critical
// path; see moe_router_norm_kernel). Same results for any bounds that hold.
template <int PER = kTopkPerLane, int KMAX = kTopkMaxK>
__device__ __forceinline__ void warp_topk_select(const float (&v)[PER], int n_experts, int top_k,
                                                 int (&sel_i)[kTopkMaxK], float (&w)[kTopkMaxK]) {
  const int lane = threadIdx.x & 31;
  unsigned long long key[PER];  // 0 = taken or not an expert
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int e = lane + 32 * j;
    key[j] = e < n_experts ? argmax_key(v[j], e) : 0ull;
  }
  float sel_v[kTopkMaxK];
#pragma unroll
  for (int s = 0; s < kTopkMaxK; ++s) sel_v[s] = -INFINITY, sel_i[s] = 0;
#pragma unroll
  for (int s = 0; s < KMAX; ++s) {
    if (s >= top_k) continue;
    unsigned long long best = key[0];
#pragma unroll
    for (int j = 1; j < PER; ++j) best = max(best, key[j]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    const int e = 0x7fffffff - int(best & 0xffffffffu);
    float mine = v[0];  // this lane's logit in the winner's slot j = e / 32 (the owner lane is e % 32)
#pragma unroll
    for (int j = 1; j < PER; ++j)
      if (j == (e >> 5)) mine = v[j];
    sel_i[s] = e;
    sel_v[s] = __shfl_sync(0xffffffffu, mine, e & 31);
#pragma unroll
    for (int j = 0; j < PER; ++j)
      if (lane + 32 * j == e) key[j] = 0ull;
  }
  const float m = sel_v[0];
  float ex[kTopkMaxK], sum = 0.f;  // (terms past KMAX are 0: the sum is unchanged)
#pragma unroll
  for (int s = 0; s < KMAX; ++s) {
    ex[s] = s < top_k ? expf(sel_v[s] - m) : 0.f;
    sum += ex[s];
  }
#pragma unroll
  for (int s = 0; s < kTopkMaxK; ++s) w[s] = s < KMAX && s < top_k ? bf(ex[s] / sum) : 0.f;
}

// warp_topk_select, then lane s < top_k stores the rank-s expert in topk_idx[s] and its weight in topk_w[s] (the
// token's rows) and calls per_slot(expert); every lane keeps the selection in sel_i.
template <int PER = kTopkPerLane, int KMAX = kTopkMaxK, typename PerSlot>
__device__ __forceinline__ void warp_topk_store(const float (&v)[PER], int n_experts, int top_k,
                                                int32_t* topk_idx, float* topk_w, int (&sel_i)[kTopkMaxK],
                                                PerSlot per_slot) {
  const int lane = threadIdx.x & 31;
  float w[kTopkMaxK];
  warp_topk_select<PER, KMAX>(v, n_experts, top_k, sel_i, w);
#pragma unroll
  for (int s = 0; s < KMAX; ++s)
    if (s < top_k && lane == s) {
      topk_idx[s] = sel_i[s];
      topk_w[s] = w[s];
      per_slot(sel_i[s]);
    }
}

// warp_topk_store, adding one to counts[expert] per slot (per-expert pair counts, shared memory).
__device__ __forceinline__ void warp_topk_softmax(const float (&v)[kTopkPerLane], int n_experts, int top_k,
                                                  int32_t* topk_idx, float* topk_w, int* counts) {
  int sel_i[kTopkMaxK];
  warp_topk_store(v, n_experts, top_k, topk_idx, topk_w, sel_i, [&](int e) { atomicAdd(&counts[e], 1); });
}

// One token routed by one warp, from the selection in registers (warp_topk_select): the token's top-k rows and
// the whole MoeRouteIndex as route_index / warp_scan_expert_counts write them for one token (its top_k experts
// are distinct, one pair each: expert e's offset = the selected ids below e, active slot r = the r-th smallest
// selected id, pair_list[r] = its rank s, i.e. pair id 0 * top_k + s). No shared memory, no CTA barrier, no
// reload of topk_idx.
template <int PER = kTopkPerLane, int KMAX = kTopkMaxK>
__device__ __forceinline__ void warp_route_one_token(const float (&v)[PER], int n_experts, int top_k,
                                                     int32_t* topk_idx, float* topk_w, const MoeRouteIndex& ix) {
  const int lane = threadIdx.x & 31;
  int sel_i[kTopkMaxK];
  warp_topk_store<PER, KMAX>(v, n_experts, top_k, topk_idx, topk_w, sel_i, [](int) {});
  // Offsets of experts e = lane + 32 j (and n_experts itself); the active list (-1 past top_k).
#pragma unroll
  for (int j = 0; j <= PER; ++j) {
    const int e = lane + 32 * j;
    if (e > n_experts) continue;
    int below = 0;
#pragma unroll
    for (int s = 0; s < KMAX; ++s) below += s < top_k && sel_i[s] < e;
    ix.expert_offsets[e] = below;
    if (e < n_experts && e >= top_k) ix.active_experts[e] = -1;
  }
#pragma unroll
  for (int s = 0; s < KMAX; ++s) {
    if (s >= top_k) continue;
    int rank = 0;  // selected ids below sel_i[s]: its active slot and sorted position
#pragma unroll
    for (int t = 0; t < KMAX; ++t) rank += t < top_k && sel_i[t] < sel_i[s];
    if (lane == s) ix.active_experts[rank] = sel_i[s], ix.pair_list[rank] = s;
  }
  if (lane == 0) *ix.num_active = top_k;
}

// Run by one warp: lane l owns experts kTopkPerLane * l + j (local sums, then shuffle scans over the lanes of the
// pair counts and of the active flags). count(e) gives expert e's pairs; on_offset(e, off) receives the start of
// every expert e < n_experts in the grouped pair list. With ix set, also writes ix->active_experts (active ids
// ascending, -1 past them), ix->expert_offsets and ix->num_active.
template <typename CountFn, typename OffsetFn>
__device__ __forceinline__ void warp_scan_expert_counts(int n_experts, CountFn count, OffsetFn on_offset,
                                                        const MoeRouteIndex* ix) {
  const int lane = threadIdx.x & 31;
  int cnt[kTopkPerLane], total = 0, n_act = 0;
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) {
    const int e = kTopkPerLane * lane + j;
    cnt[j] = e < n_experts ? count(e) : 0;
    total += cnt[j];
    n_act += cnt[j] > 0;
  }
  int incl = total, incl_act = n_act;  // inclusive scans over the lanes
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, incl, o), ya = __shfl_up_sync(0xffffffffu, incl_act, o);
    if (lane >= o) incl += y, incl_act += ya;
  }
  int off = incl - total, slot = incl_act - n_act;
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) {
    const int e = kTopkPerLane * lane + j;
    if (e < n_experts) {
      on_offset(e, off);
      if (ix) ix->active_experts[e] = -1;  // the tail past n_active stays -1
    }
    off += cnt[j];
  }
  if (!ix) return;
  __syncwarp();  // every -1 above is written before the ids below (other lanes may own those entries)
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j)
    if (cnt[j] > 0) ix->active_experts[slot++] = kTopkPerLane * lane + j;
  if (lane == 31) {
    ix->expert_offsets[n_experts] = incl;  // lanes past the experts add 0: incl = total pairs
    *ix->num_active = incl_act;
  }
}

}  // namespace mxs::cuda
