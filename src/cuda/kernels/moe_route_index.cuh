// Top-k selection, softmax and expert grouping of a step's router logits (see moe_router.h), run by one CTA;
// shared by the router kernel and the router tail fused into o_proj (gemv_bf16.cu).
#pragma once
#include <cmath>

#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

// Run by one CTA once every logit of the step exists (the last router CTA, or the fused router tail of o_proj):
// a warp per token selects the top-k (lane l holds experts l + 32 j:
// k rounds of a warp argmax over the lanes' best orderable keys, ties -> lower expert id) and normalizes; then
// warp 0 turns the per-expert counts into offsets and the active list (lane l owns experts 4 l .. 4 l + 3:
// local sums, shuffle scans of the counts and of the active flags), and all threads place the pairs.
// logit(t, e) returns token t's bf16 logit of expert e (as fp32); logits written by other CTAs must be read
// with ld.global.cg (L2, never a stale L1 line).
// (v1 ran the selection in one thread per token and the offsets in one thread: ~4 us of serial work.)
template <typename LogitFn>
__device__ __forceinline__ void route_index(const MoeRouterParams& p, const MoeRouteIndex& ix, LogitFn logit) {
  constexpr int kPerLane = kRouterMaxExperts / 32;
  __shared__ int s_count[kRouterMaxExperts], s_cursor[kRouterMaxExperts];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5, E = p.n_experts;
  for (int i = threadIdx.x; i < kRouterMaxExperts; i += blockDim.x) s_count[i] = 0;
  __syncthreads();
  for (int t = warp; t < p.n_tokens; t += n_warps) {
    float v[kPerLane];
    unsigned long long key[kPerLane];  // 0 = taken or not an expert
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = lane + 32 * j;
      v[j] = e < E ? logit(t, e) : -INFINITY;
      key[j] = e < E ? argmax_key(v[j], e) : 0ull;
    }
    float sel_v[kRouterMaxTopK];
    int sel_i[kRouterMaxTopK];
#pragma unroll
    for (int s = 0; s < kRouterMaxTopK; ++s) {
      sel_v[s] = -INFINITY, sel_i[s] = 0;
      if (s >= p.top_k) continue;
      unsigned long long best = key[0];
#pragma unroll
      for (int j = 1; j < kPerLane; ++j) best = max(best, key[j]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
      const int e = 0x7fffffff - int(best & 0xffffffffu);
      float mine = v[0];  // this lane's logit in the winner's slot j = e / 32 (the owner lane is e % 32)
#pragma unroll
      for (int j = 1; j < kPerLane; ++j)
        if (j == (e >> 5)) mine = v[j];
      sel_i[s] = e;
      sel_v[s] = __shfl_sync(0xffffffffu, mine, e & 31);
#pragma unroll
      for (int j = 0; j < kPerLane; ++j)
        if (lane + 32 * j == e) key[j] = 0ull;
    }
    const float m = sel_v[0];
    float ex[kRouterMaxTopK], sum = 0.f;
#pragma unroll
    for (int s = 0; s < kRouterMaxTopK; ++s) {
      ex[s] = s < p.top_k ? expf(sel_v[s] - m) : 0.f;
      sum += ex[s];
    }
#pragma unroll
    for (int s = 0; s < kRouterMaxTopK; ++s)
      if (s < p.top_k && lane == s) {
        p.topk_idx[t * p.top_k + s] = sel_i[s];
        p.topk_w[t * p.top_k + s] = bf(ex[s] / sum);
        atomicAdd(&s_count[sel_i[s]], 1);
      }
  }
  __syncthreads();
  if (warp == 0) {
    int cnt[kPerLane], total = 0, n_act = 0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = kPerLane * lane + j;
      cnt[j] = e < E ? s_count[e] : 0;
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
    for (int j = 0; j < kPerLane; ++j) {
      const int e = kPerLane * lane + j;
      if (e < E) {
        ix.expert_offsets[e] = off;
        s_cursor[e] = off;
        ix.active_experts[e] = -1;  // the tail past n_active stays -1
      }
      off += cnt[j];
    }
    __syncwarp();  // every -1 above is written before the ids below (other lanes may own those entries)
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (cnt[j] > 0) ix.active_experts[slot++] = kPerLane * lane + j;
    if (lane == 31) {
      ix.expert_offsets[E] = incl;  // lanes past the experts add 0: incl = total pairs
      *ix.num_active = incl_act;
    }
  }
  __syncthreads();
  const int n_pairs = p.n_tokens * p.top_k;
  for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) ix.pair_list[atomicAdd(&s_cursor[p.topk_idx[i]], 1)] = i;
}

}  // namespace mxs::cuda
