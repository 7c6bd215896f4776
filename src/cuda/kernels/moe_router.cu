// moe_router_logits spreads the router GEMV over CTAs (8 experts each); the last CTA to finish (atomic
// counter) selects each token's top-k and normalizes, counts pairs per expert and fills the groups.
// With x set, each CTA first normalizes its token's row (the post-attention RMSNorm, folded in). moe_router_norm
// (one token: batch-1 decode) does the same in one cluster of <= 8 CTAs: the logits meet in CTA 0's shared memory
// (distributed shared memory, a cluster barrier) instead of global memory and an arrival counter.
#include "cuda/kernels/moe_router.h"

#include <cstdlib>

#include <cooperative_groups.h>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/moe_topk_warp.cuh"
#include "cuda/kernels/cta_trace.cuh"
#include "cuda/kernels/cluster_barrier.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {

MXS_CTA_TRACE_BINDER(moe_router)
namespace {

constexpr int kMaxExperts = kTopkMaxExperts;

constexpr int kRouterWarps = 8;

// Run by the last router CTA to finish: a warp per token selects the top-k and normalizes (warp_topk_softmax),
// warp 0 turns the per-expert counts into offsets and the active list (warp_scan_expert_counts; both in
// moe_topk_warp.cuh), and all threads place the pairs. Logits written by other CTAs are read with ld.global.cg
// (L2, never a stale L1 line). (v1 ran the selection in one thread per token and the offsets in one thread:
// ~4 us of serial work.)
// logit(t, e): token t's bf16 logit of expert e < n_experts.
template <typename LogitFn>
__device__ void route_index(const MoeRouterParams& p, const MoeRouteIndex& ix, LogitFn logit) {
  __shared__ int s_count[kMaxExperts], s_cursor[kMaxExperts];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5, E = p.n_experts;
  for (int i = threadIdx.x; i < kMaxExperts; i += blockDim.x) s_count[i] = 0;
  const int n_real = p.n_real ? max(*p.n_real, 1) : p.n_tokens;
  __syncthreads();
  for (int t = warp; t < p.n_tokens; t += n_warps) {
    const int src = t < n_real ? t : (t - n_real) % n_real;  // padding rows copy a real token (MoeRouterParams::n_real)
    float v[kTopkPerLane];
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j) {
      const int e = lane + 32 * j;
      v[j] = e < E ? logit(src, e) : -INFINITY;
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

// The post-attention RMSNorm of the routers that run it themselves, in rmsnorm_row_write's order (thread t < 256 sums
// elements t + 256 i, the 8 warps' sums added in order), so xn is bit for bit the rmsnorm kernel's. PER elements per
// thread; nw: the thread's norm weights (load_norm_weight, before griddep_wait).
template <int K>
constexpr int kNormPer = (K + kNormThreads - 1) / kNormThreads;

template <int K>
__device__ __forceinline__ void load_norm_weight(const MoeRouterParams& p, float (&nw)[kNormPer<K>]) {
#pragma unroll
  for (int i = 0; i < kNormPer<K>; ++i) {
    const int c = threadIdx.x + i * kNormThreads;
    nw[i] = threadIdx.x < kNormThreads && c < K ? to_f32(static_cast<const bf16_t*>(p.norm_w)[c]) : 0.f;
  }
}

// Rows m < n of x (n <= MT; rows past n stage as zeros) -> sx, the staged fp32 layout of stage_rows_f32 (element c
// of row m: plane (c % 8) / 4, vector c / 8, component c % 4), and, with write_xn, xn_out. Every row's loads are
// issued before the first square. s_ss: [MT][8] scratch. Ends with the staged rows visible to the CTA. (A one-row
// rewrite of this code gave moe_router_norm other SASS and a 0.4-0.6% slower 120b batch-1 step, session 26.)
template <int K, int MT>
__device__ __forceinline__ void norm_rows_staged(const MoeRouterParams& p, const bf16_t* x, int n,
                                                 const float (&nw)[kNormPer<K>], float (*s_ss)[kNormThreads / 32],
                                                 float* sx, bool write_xn, bf16_t* xn_out) {
  constexpr int PER = kNormPer<K>, NV = K / 8;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const bool norm_thread = threadIdx.x < kNormThreads;
  float xv[MT][PER];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int c = threadIdx.x + i * kNormThreads;
      xv[m][i] = norm_thread && c < K && m < n ? to_f32(x[size_t(m) * K + c]) : 0.f;
    }
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < PER; ++i) ss = fmaf(xv[m][i], xv[m][i], ss);
    ss = warp_sum(ss);
    if (norm_thread && lane == 0) s_ss[m][warp] = ss;
  }
  __syncthreads();
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < kNormThreads / 32; ++w) total += s_ss[m][w];
    const float r = 1.0f / sqrtf(total / float(K) + p.eps);
#pragma unroll
    for (int i = 0; i < PER; ++i) {
      const int c = threadIdx.x + i * kNormThreads;
      if (!norm_thread || c >= K) continue;
      const bf16_t y = to_bf16(nw[i] * (xv[m][i] * r));
      sx[((m * 2 + ((c & 7) >> 2)) * NV + (c >> 3)) * 4 + (c & 3)] = m < n ? to_f32(y) : 0.f;
      if (write_xn && m < n) xn_out[size_t(m) * K + c] = y;
    }
  }
  __syncthreads();
}

// Router logits: grid (n_tokens, ceil(E / 8)); warp w of CTA (t, j) computes expert 8 j + w of token t.
// NORM (p.x set): every CTA first normalizes its token's row itself (norm_rows_staged) and CTA (t, 0) stores it to
// xn_out: the rmsnorm launch before the router, folded in (2-4 token steps; one token takes moe_router_norm).
template <int K, bool NORM>
__global__ void __launch_bounds__(kRouterWarps * 32) moe_router_logits(MoeRouterParams p, MoeRouteIndex ix) {
  extern __shared__ float4 s_x[];
  const int t = blockIdx.x, e = blockIdx.y * kRouterWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  const bf16_t* rows[1] = {static_cast<const bf16_t*>(p.w) + size_t(min(e, p.n_experts - 1)) * K};
  RowRegs<K, 1> wr;
  load_rows<K, 1>(rows, wr);  // the weights are in flight while the previous kernel drains
  float nw[NORM ? kNormPer<K> : 1];
  if constexpr (NORM) load_norm_weight<K>(p, nw);
  griddep_wait();
  griddep_launch_dependents();
  if constexpr (NORM) {
    static_assert(kRouterWarps * 32 == kNormThreads, "the norm's summation order takes 256 threads");
    __shared__ float s_ss[1][kNormThreads / 32];
    norm_rows_staged<K, 1>(p, static_cast<const bf16_t*>(p.x) + size_t(t) * K, 1, nw, s_ss,
                           reinterpret_cast<float*>(s_x), blockIdx.y == 0,
                           static_cast<bf16_t*>(p.xn_out) + size_t(t) * K);
  } else {
    stage_rows_f32<K, 1>(s_x, static_cast<const bf16_t*>(p.xn), 1, [&](int) { return t; });
    __syncthreads();
  }
  float acc[1][1];
  dot_rows<K, 1, 1>(wr, s_x, acc);
  if (lane == 0 && e < p.n_experts)
    p.logits[size_t(t) * p.n_experts + e] = bf(acc[0][0] + to_f32(static_cast<const bf16_t*>(p.b)[e]));
  // The last CTA to finish groups the pairs (saves a launch per layer); it also resets the counter.
  if (!last_cta_arrive(p.done_counter, gridDim.x * gridDim.y)) return;
  route_index(p, ix, [&](int tok, int ex) { return __ldcg(&p.logits[size_t(tok) * p.n_experts + ex]); });
  if (threadIdx.x == 0) *p.done_counter = 0u;
}

// 1-MT tokens (p.n_tokens <= MT; the runner launches MT = 1: at two tokens moe_router with the norm folded in was
// faster, moe_router.h). Cluster of ceil(E / WARPS) CTAs of WARPS warps (8 for <= 32 experts, 16 for <= 128: a
// cluster of <= 8, the portable limit); warp w of CTA c computes expert WARPS c + w for every token, its weight row
// in registers (loaded before griddep_wait). Every CTA first normalizes the rows x -> xn itself (norm_rows_staged),
// so xn is bit for bit the rmsnorm kernel's and the fused o_proj norm's; CTA 0 stores xn for the expert GEMVs. The
// logits (bf16 values) go to CTA 0's shared memory and to p.logits; after the cluster barrier CTA 0 routes (one
// token: warp 0 alone, warp_route_one_token; more: route_index, which also maps a graph's padding rows, p.n_real).
// Why: the o_proj last-CTA norm and the router's last-CTA routing were two arrival-counter tails (a fence, an
// atomic and a dependent reload each) on the batch-1 critical path, every layer.
// KMAX: top_k <= KMAX; with WARPS = 8 (<= 32 experts) the routing warp holds one logit per lane. Both bound the
// routing's unrolled loops: the 20b instantiation (1 expert per lane, top-4) runs 1/8 of the generic one's select
// code after the cluster barrier, which held CTA 0 ~2.9 us past the other CTAs (H100 CTA trace, session 19).
template <int K, int WARPS, int KMAX, int MT>
__global__ void __launch_bounds__(WARPS * 32)
    moe_router_norm_kernel(MoeRouterParams p, MoeRouteIndex ix, int one_warp) {
  constexpr int kPerLane = WARPS == 8 ? 1 : kTopkPerLane;
  CtaTrace trace;
  namespace cg = cooperative_groups;
  static_assert(WARPS * 32 >= kNormThreads, "the norm's summation order takes 256 threads");
  extern __shared__ float4 s_x[];  // [MT][2][K / 8] the staged normed rows (stage_rows_f32 layout)
  __shared__ float s_ss[MT][kNormThreads / 32];
  __shared__ float s_logit[MT][kMaxExperts];  // CTA 0: every CTA's logits
  cg::cluster_group cluster = cg::this_cluster();
  cluster_arrive_relaxed();  // (cluster_barrier.cuh; the wait before the writes into CTA 0's s_logit below)
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int e = blockIdx.x * WARPS + warp;
  const bf16_t* rows[1] = {static_cast<const bf16_t*>(p.w) + size_t(min(e, p.n_experts - 1)) * K};
  RowRegs<K, 1> wr;
  load_rows<K, 1>(rows, wr);  // weights: in flight while o_proj drains
  // The expert's bias too: after the dot it was one more L2 round trip before the cluster barrier.
  const float bias = lane == 0 && e < p.n_experts ? to_f32(static_cast<const bf16_t*>(p.b)[e]) : 0.f;
  float nw[kNormPer<K>];
  load_norm_weight<K>(p, nw);
  const int n = MT == 1 ? 1 : p.n_tokens;
  griddep_wait();
  trace.waited();
  griddep_launch_dependents();
  norm_rows_staged<K, MT>(p, static_cast<const bf16_t*>(p.x), n, nw, s_ss, reinterpret_cast<float*>(s_x),
                          blockIdx.x == 0, static_cast<bf16_t*>(p.xn_out));
  float acc[1][MT];
  dot_rows<K, MT, 1>(wr, s_x, acc);
  float* logit0 = cluster.map_shared_rank(&s_logit[0][0], 0);
  cluster_wait();  // (the arrive at the top)
  if (lane == 0 && e < p.n_experts) {
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      if (m >= n) break;
      const float v = bf(acc[0][m] + bias);
      logit0[m * kMaxExperts + e] = v;
      p.logits[size_t(m) * p.n_experts + e] = v;
    }
  }
  cluster.sync();  // CTA 0 has every logit (release / acquire over the cluster)
  trace.mark();
  if (blockIdx.x != 0) {
    trace.end(kTraceRouter);
    return;
  }
  if (MT == 1 && one_warp) {  // warp 0 routes the token alone (warp_route_one_token)
    if (warp != 0) return;
    float v[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int ex = lane + 32 * j;
      v[j] = ex < p.n_experts ? s_logit[0][ex] : -INFINITY;
    }
    warp_route_one_token<kPerLane, KMAX>(v, p.n_experts, p.top_k, p.topk_idx, p.topk_w, ix);
    trace.end(kTraceRouter);
    return;
  }
  route_index(p, ix, [&](int t, int ex) { return s_logit[t][ex]; });
  trace.end(kTraceRouter);
}

template <int K, int WARPS, int KMAX>
void launch_norm(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  const int n_ctas = (p.n_experts + WARPS - 1) / WARPS;
  // MXS_ROUTER_CTA_ROUTE=1 (A/B): CTA 0 routes with route_index (its CTA barriers and topk_idx reload).
  static const int one_warp = std::getenv("MXS_ROUTER_CTA_ROUTE") ? 0 : 1;
  launch_pdl_cluster(moe_router_norm_kernel<K, WARPS, KMAX, 1>, dim3(n_ctas), dim3(WARPS * 32), staged_bytes<K, 1>(),
                     stream, dim3(n_ctas, 1, 1), p, ix, one_warp);
}

template <int K, int WARPS>
void launch_norm(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  // MXS_ROUTER_GENERIC=1 (A/B): the routing unrolled for 8 experts per token whatever top_k is.
  static const bool generic = std::getenv("MXS_ROUTER_GENERIC") != nullptr;
  if (p.top_k <= 4 && !generic) return launch_norm<K, WARPS, 4>(p, ix, stream);
  launch_norm<K, WARPS, kTopkMaxK>(p, ix, stream);
}

template <int K>
void launch_norm(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  if (p.n_experts <= 32) return launch_norm<K, 8>(p, ix, stream);
  launch_norm<K, 16>(p, ix, stream);
}

template <int K, bool NORM>
void launch(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  constexpr int smem = staged_bytes<K, 1>();
  launch_pdl(moe_router_logits<K, NORM>, dim3(p.n_tokens, (p.n_experts + kRouterWarps - 1) / kRouterWarps),
             dim3(kRouterWarps * 32), smem, stream, p, ix);
  CUDA_CHECK_LAUNCH();
}

template <int K>
void launch(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  if (p.x != nullptr) return launch<K, true>(p, ix, stream);
  launch<K, false>(p, ix, stream);
}

}  // namespace

void moe_router_norm(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens == 1 && p.logits != nullptr,
            strfmt("moe_router_norm: n_tokens = %d is not supported (one token; logits workspace set; more: moe_router "
                   "with x set)", p.n_tokens));
  MXS_CHECK(p.x != nullptr && p.norm_w != nullptr && p.xn_out != nullptr,
            "moe_router_norm: x, norm_w and xn_out must be set");
  check_routing(p, "moe_router_norm", kRouterNormMaxExperts, "; more: moe_router");
  switch (p.hidden) {
    case 2880: return launch_norm<2880>(p, ix, stream);
    case 64: return launch_norm<64>(p, ix, stream);
    default: throw Error(strfmt("moe_router_norm: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

void moe_router(const MoeRouterParams& p, const MoeRouteIndex& ix, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && p.logits != nullptr && p.done_counter != nullptr,
            "moe_router: n_tokens must be >= 1 and the logits / counter workspaces set");
  MXS_CHECK(p.x == nullptr || (p.norm_w != nullptr && p.xn_out != nullptr),
            "moe_router: with x (the norm folded in) norm_w and xn_out must be set");
  check_routing(p, "moe_router", kMaxExperts, "");
  switch (p.hidden) {
    case 2880: return launch<2880>(p, ix, stream);
    case 64: return launch<64>(p, ix, stream);
    default: throw Error(strfmt("moe_router: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

}  // namespace mxs::cuda
