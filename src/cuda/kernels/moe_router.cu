// moe_router_logits spreads the router GEMV over CTAs (8 experts each); the last CTA to finish (atomic
// counter) selects each token's top-k and normalizes, counts pairs per expert and fills the groups.
#include "cuda/kernels/moe_router.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/gemv_core.cuh"

namespace mxs::cuda {
namespace {

constexpr int kMaxExperts = 32;
constexpr int kMaxTopK = 8;

constexpr int kRouterWarps = 8;

// Run by the last router CTA to finish: per token (a thread each) top-k selection + softmax, then the pairs
// grouped by expert. Logits written by other CTAs are read with ld.global.cg (L2, never a stale L1 line).
__device__ void route_index(const MoeRouterParams& p, const MoeRouteIndex& ix) {
  __shared__ int s_count[kMaxExperts], s_cursor[kMaxExperts];
  if (threadIdx.x < kMaxExperts) s_count[threadIdx.x] = 0;
  __syncthreads();
  for (int t = threadIdx.x; t < p.n_tokens; t += blockDim.x) {
    float lg[kMaxExperts];
#pragma unroll
    for (int j = 0; j < kMaxExperts; ++j) lg[j] = j < p.n_experts ? __ldcg(&p.logits[size_t(t) * p.n_experts + j]) : -INFINITY;
    uint32_t taken = 0;
    int idx[kMaxTopK];
    float wv[kMaxTopK], sum = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s) {
      if (s >= p.top_k) break;
      int best = -1;
      float bv = -INFINITY;
#pragma unroll
      for (int j = 0; j < kMaxExperts; ++j)  // strict '>' keeps the lower id on ties
        if (j < p.n_experts && !(taken >> j & 1u) && (best < 0 || lg[j] > bv)) best = j, bv = lg[j];
      taken |= 1u << best;
      idx[s] = best;
      wv[s] = bv;
    }
    const float m = wv[0];
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s)
      if (s < p.top_k) {
        wv[s] = expf(wv[s] - m);
        sum += wv[s];
      }
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s)
      if (s < p.top_k) {
        p.topk_idx[t * p.top_k + s] = idx[s];
        p.topk_w[t * p.top_k + s] = bf(wv[s] / sum);
        atomicAdd(&s_count[idx[s]], 1);
      }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int off = 0, n_active = 0;
    for (int e = 0; e < p.n_experts; ++e) {
      ix.expert_offsets[e] = off;
      s_cursor[e] = off;
      if (s_count[e] > 0) ix.active_experts[n_active++] = e;
      off += s_count[e];
    }
    ix.expert_offsets[p.n_experts] = off;
    for (int e = n_active; e < p.n_experts; ++e) ix.active_experts[e] = -1;
    *ix.num_active = n_active;
  }
  __syncthreads();
  const int n_pairs = p.n_tokens * p.top_k;
  for (int i = threadIdx.x; i < n_pairs; i += blockDim.x) ix.pair_list[atomicAdd(&s_cursor[p.topk_idx[i]], 1)] = i;
}

// Router logits: grid (n_tokens, ceil(E / 8)); warp w of CTA (t, j) computes expert 8 j + w of token t.
template <int K>
__global__ void __launch_bounds__(kRouterWarps * 32) moe_router_logits(MoeRouterParams p, MoeRouteIndex ix) {
  extern __shared__ float4 s_x[];
  const int t = blockIdx.x, e = blockIdx.y * kRouterWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  const bf16_t* rows[1] = {static_cast<const bf16_t*>(p.w) + size_t(min(e, p.n_experts - 1)) * K};
  stage_rows_f32<K, 1>(s_x, static_cast<const bf16_t*>(p.xn), 1, [&](int) { return t; });
  __syncthreads();
  float acc[1][1];
  warp_dot_rows<K, 1, 1>(rows, s_x, acc);
  if (lane == 0 && e < p.n_experts)
    p.logits[size_t(t) * p.n_experts + e] = bf(acc[0][0] + to_f32(static_cast<const bf16_t*>(p.b)[e]));
  // The last CTA to finish groups the pairs (saves a launch per layer); it also resets the counter.
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(p.done_counter, 1u) == gridDim.x * gridDim.y - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  route_index(p, ix);
  if (threadIdx.x == 0) *p.done_counter = 0u;
}

template <int K>
void launch(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  constexpr int smem = staged_bytes<K, 1>();
  moe_router_logits<K><<<dim3(p.n_tokens, (p.n_experts + kRouterWarps - 1) / kRouterWarps), kRouterWarps * 32, smem,
                         stream>>>(p, ix);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_router(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && p.logits != nullptr && p.done_counter != nullptr,
            "moe_router: n_tokens must be >= 1 and the logits / counter workspaces set");
  MXS_CHECK(p.n_experts >= 1 && p.n_experts <= kMaxExperts,
            strfmt("moe_router: n_experts = %d is not supported (supported: 1..%d)", p.n_experts, kMaxExperts));
  MXS_CHECK(p.top_k >= 1 && p.top_k <= kMaxTopK && p.top_k <= p.n_experts,
            strfmt("moe_router: top_k = %d is not supported (supported: 1..%d, <= n_experts)", p.top_k, kMaxTopK));
  switch (p.hidden) {
    case 2880: return launch<2880>(p, ix, stream);
    case 64: return launch<64>(p, ix, stream);
    default: throw Error(strfmt("moe_router: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

}  // namespace mxs::cuda
