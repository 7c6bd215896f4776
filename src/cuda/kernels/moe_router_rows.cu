// moe_router_from_logits (see moe_router_rows.h): top-k per token, then the pair placement.
#include "cuda/kernels/moe_router_rows.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/moe_topk_warp.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kMaxExperts = kTopkMaxExperts;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// Kernel 1: one token per warp. Lane l holds experts l + 32 j; k rounds of a warp argmax over orderable
// (value, id) keys select the top-k (ties -> lower id, as moe_router's route_index and the CPU reference).
// (4 tokens per warp, one after another, cost 1.4-1.7% of a decode step at batch 64-256: H200, 20b.)
__global__ void __launch_bounds__(kThreads) moe_router_topk_kernel(MoeRouterParams p, const float* acc, int32_t* counts) {
  __shared__ int s_count[kMaxExperts];
  for (int i = threadIdx.x; i < kMaxExperts; i += kThreads) s_count[i] = 0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, E = p.n_experts;
  const bf16_t* bias = static_cast<const bf16_t*>(p.b);
  float b[kTopkPerLane];  // constant data: read before the wait, overlapping the GEMM's tail
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) b[j] = lane + 32 * j < E ? to_f32(bias[lane + 32 * j]) : 0.f;
  griddep_wait();
  griddep_launch_dependents();
  __syncthreads();
  const int t = blockIdx.x * kWarps + warp;
  if (t < p.n_tokens) {
    float v[kTopkPerLane];
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      v[j] = e < E ? bf(acc[size_t(t) * E + e] + b[j]) : -INFINITY;
    }
    warp_topk_softmax(v, E, p.top_k, p.topk_idx + t * p.top_k, p.topk_w + t * p.top_k, s_count);
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += kThreads)
    if (s_count[e] > 0) atomicAdd(&counts[e], s_count[e]);
}

// Kernel 2: one pair per thread. counts = work[0, E), cursors = work[E, 2E), arrival counter = work[2E].
__global__ void __launch_bounds__(kThreads) moe_route_place_kernel(MoeRouterParams p, MoeRouteIndex ix, int32_t* work) {
  __shared__ int s_off[kMaxExperts], s_cnt[kMaxExperts], s_base[kMaxExperts];
  const int warp = threadIdx.x >> 5, E = p.n_experts, tid = threadIdx.x;
  griddep_wait();
  griddep_launch_dependents();
  for (int i = tid; i < kMaxExperts; i += kThreads) s_cnt[i] = 0;
  if (warp == 0)  // every CTA scans the counts for its offsets; CTA 0 also writes the index
    warp_scan_expert_counts(
        E, [&](int e) { return work[e]; },
        [&](int e, int off) {
          s_off[e] = off;
          if (blockIdx.x == 0) ix.expert_offsets[e] = off;
        },
        blockIdx.x == 0 ? &ix : nullptr);
  __syncthreads();
  const int n_pairs = p.n_tokens * p.top_k, i = blockIdx.x * kThreads + tid;
  int e = 0, rank = 0;
  if (i < n_pairs) e = p.topk_idx[i], rank = atomicAdd(&s_cnt[e], 1);
  __syncthreads();
  for (int x = tid; x < E; x += kThreads)
    if (s_cnt[x] > 0) s_base[x] = atomicAdd(&work[E + x], s_cnt[x]);
  __syncthreads();
  if (i < n_pairs) ix.pair_list[s_off[e] + s_base[e] + rank] = i;
  if (!last_cta_arrive(reinterpret_cast<unsigned*>(work + 2 * E), gridDim.x)) return;
  for (int x = tid; x < 2 * E; x += kThreads) work[x] = 0;
  if (tid == 0) work[2 * E] = 0;
}

}  // namespace

void moe_router_from_logits(const MoeRouterParams& p, const float* acc, const MoeRouteIndex& ix, int32_t* work,
                            cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && acc != nullptr && work != nullptr, "moe_router_from_logits: n_tokens >= 1, acc and work");
  check_routing(p, "moe_router_from_logits", kMaxExperts, "");
  launch_pdl(moe_router_topk_kernel, dim3((p.n_tokens + kWarps - 1) / kWarps), dim3(kThreads), 0, stream, p, acc, work);
  CUDA_CHECK_LAUNCH();
  const int n_pairs = p.n_tokens * p.top_k;
  launch_pdl(moe_route_place_kernel, dim3((n_pairs + kThreads - 1) / kThreads), dim3(kThreads), 0, stream, p, ix, work);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
