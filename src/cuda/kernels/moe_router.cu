// moe_router_logits spreads the router GEMV over CTAs (8 experts each); the last CTA to finish (atomic
// counter) selects each token's top-k and normalizes, counts pairs per expert and fills the groups.
#include "cuda/kernels/moe_router.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/moe_topk_warp.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/last_cta.cuh"

namespace mxs::cuda {
namespace {

constexpr int kMaxExperts = kTopkMaxExperts;
constexpr int kMaxTopK = kTopkMaxK;

constexpr int kRouterWarps = 8;

// Run by the last router CTA to finish: a warp per token selects the top-k and normalizes (warp_topk_softmax),
// warp 0 turns the per-expert counts into offsets and the active list (warp_scan_expert_counts; both in
// moe_topk_warp.cuh), and all threads place the pairs. Logits written by other CTAs are read with ld.global.cg
// (L2, never a stale L1 line). (v1 ran the selection in one thread per token and the offsets in one thread:
// ~4 us of serial work.)
__device__ void route_index(const MoeRouterParams& p, const MoeRouteIndex& ix) {
  __shared__ int s_count[kMaxExperts], s_cursor[kMaxExperts];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5, E = p.n_experts;
  for (int i = threadIdx.x; i < kMaxExperts; i += blockDim.x) s_count[i] = 0;
  __syncthreads();
  for (int t = warp; t < p.n_tokens; t += n_warps) {
    float v[kTopkPerLane];
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      v[j] = e < E ? __ldcg(&p.logits[size_t(t) * E + e]) : -INFINITY;
    }
    warp_topk_softmax(v, E, p.top_k, p.topk_idx + t * p.top_k, p.topk_w + t * p.top_k, s_count);
  }
  __syncthreads();
  if (warp == 0)
    warp_scan_expert_counts(
        E, [&](int e) { return s_count[e]; },
        [&](int e, int off) { ix.expert_offsets[e] = off, s_cursor[e] = off; }, &ix);
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
  RowRegs<K, 1> wr;
  load_rows<K, 1>(rows, wr);  // the weights are in flight while the previous kernel drains
  griddep_wait();
  griddep_launch_dependents();
  stage_rows_f32<K, 1>(s_x, static_cast<const bf16_t*>(p.xn), 1, [&](int) { return t; });
  __syncthreads();
  float acc[1][1];
  dot_rows<K, 1, 1>(wr, s_x, acc);
  if (lane == 0 && e < p.n_experts)
    p.logits[size_t(t) * p.n_experts + e] = bf(acc[0][0] + to_f32(static_cast<const bf16_t*>(p.b)[e]));
  // The last CTA to finish groups the pairs (saves a launch per layer); it also resets the counter.
  if (!last_cta_arrive(p.done_counter, gridDim.x * gridDim.y)) return;
  route_index(p, ix);
  if (threadIdx.x == 0) *p.done_counter = 0u;
}

template <int K>
void launch(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  constexpr int smem = staged_bytes<K, 1>();
  launch_pdl(moe_router_logits<K>, dim3(p.n_tokens, (p.n_experts + kRouterWarps - 1) / kRouterWarps), dim3(kRouterWarps * 32),
             smem, stream, p, ix);
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
