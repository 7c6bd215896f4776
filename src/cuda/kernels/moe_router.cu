// moe_router_logits spreads the router GEMV over CTAs (8 experts each); the last CTA to finish (atomic
// counter) selects each token's top-k and normalizes, counts pairs per expert and fills the groups.
#include "cuda/kernels/moe_router.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/moe_route_index.cuh"

namespace mxs::cuda {
namespace {

constexpr int kRouterWarps = 8;

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
  route_index(p, ix, [&](int t, int e) { return __ldcg(&p.logits[size_t(t) * p.n_experts + e]); });
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
  MXS_CHECK(p.n_experts >= 1 && p.n_experts <= kRouterMaxExperts,
            strfmt("moe_router: n_experts = %d is not supported (supported: 1..%d)", p.n_experts, kRouterMaxExperts));
  MXS_CHECK(p.top_k >= 1 && p.top_k <= kRouterMaxTopK && p.top_k <= p.n_experts,
            strfmt("moe_router: top_k = %d is not supported (supported: 1..%d, <= n_experts)", p.top_k, kRouterMaxTopK));
  switch (p.hidden) {
    case 2880: return launch<2880>(p, ix, stream);
    case 64: return launch<64>(p, ix, stream);
    default: throw Error(strfmt("moe_router: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

}  // namespace mxs::cuda
