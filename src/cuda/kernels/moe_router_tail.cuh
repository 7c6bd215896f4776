// The MoE router run as the tail of another kernel's last CTA (o_proj's, gemv_bf16.cu), once that CTA has
// written the post-attention normed rows: logits, top-k, softmax and the expert grouping without a launch of
// their own. Same arithmetic as moe_router_logits (dot_rows over the staged fp32 row, then bf(dot + bias)), so
// the fused and unfused routers agree bit for bit.
#pragma once
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/moe_route_index.cuh"

namespace mxs::cuda {

// Issued by every thread of one CTA well before the tail runs: the router weights ([E, K] bf16, 184 KB for
// gpt-oss-20b) into L2, so that the tail's dependent loads are L2 hits.
__device__ __forceinline__ void router_tail_prefetch(const MoeRouterParams& p) {
  const char* w = static_cast<const char*>(p.w);
  const int lines = p.n_experts * p.hidden * 2 / 128;
  for (int i = threadIdx.x; i < lines; i += blockDim.x) asm volatile("prefetch.global.L2 [%0];" ::"l"(w + size_t(i) * 128));
}

// Called by every thread of one CTA after p.xn ([n_tokens <= 4, K] bf16) is complete and visible to it (its own
// stores followed by a __syncthreads, or a grid-wide acquire). Warp w computes experts w, w + 8, ... of each
// token into shared memory; then route_index.
template <int K>
__device__ void router_tail(const MoeRouterParams& p, const MoeRouteIndex& ix) {
  __shared__ float4 s_x[2 * (K / 8)];  // one token's row, stage_rows_f32 layout
  __shared__ float s_logit[kRouterTailMaxTokens][kRouterTailMaxExperts];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
  const bf16_t* w = static_cast<const bf16_t*>(p.w);
  const bf16_t* b = static_cast<const bf16_t*>(p.b);
  for (int t = 0; t < p.n_tokens; ++t) {
    __syncthreads();  // the previous token's dots are done with s_x
    stage_rows_f32<K, 1>(s_x, static_cast<const bf16_t*>(p.xn), 1, [&](int) { return t; });
    __syncthreads();
    for (int e = warp; e < p.n_experts; e += n_warps) {
      const bf16_t* rows[1] = {w + size_t(e) * K};
      float acc[1][1];
      warp_dot_rows<K, 1, 1>(rows, s_x, acc);
      if (lane == 0) s_logit[t][e] = bf(acc[0][0] + to_f32(b[e]));
    }
  }
  // route_index starts with a barrier (after zeroing its counts), which publishes s_logit.
  route_index(p, ix, [&](int t, int e) { return s_logit[t][e]; });
}

}  // namespace mxs::cuda
