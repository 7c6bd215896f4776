// moe_combine (see moe_gemv_mxfp4.h): the residual add of the routed experts' outputs and the next RMSNorm.
#include <cooperative_groups.h>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/cluster_barrier.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/moe_gemv_mxfp4.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {
namespace {

// Residual + sequential bf16 expert sum + next RMSNorm. Grid (token, chunk of 256 columns), thread per column:
// the sum is a short dependent chain per element, so spreading a token over ceil(H / 256) CTAs (12 for 20b)
// instead of one keeps it a few microseconds (one CTA per token took 18 us at batch 1: ~2,000 dependent
// instructions per warp on one SM). Each CTA writes its slice of x and its partial sum of squares; the last
// CTA of the token (arrival counter) adds the partials in chunk order (deterministic) and writes xn for the row.
// Only yw is the predecessor's (the down GEMV) output: the routing (the router's, three launches back), x (o_proj's,
// four back) and the norm weight load before griddep_wait (pdl.cuh's invariant). The last CTA loads all of its
// row's x and weight values before the first store (a loop of load -> store per 256 columns waited on L2 once per
// iteration: 12 round trips at 20b, most of the ~12 us between the last down GEMV and the LM head at batch 1).
// CLUSTER (2-16 chunks with a next norm): the token's chunk CTAs are one thread-block cluster; each pushes its
// partial sum of squares into every CTA's shared memory, and after one cluster barrier every CTA adds them in chunk
// order and normalizes its own columns from registers: no partials through L2, fence, counter, or last CTA
// reloading the row (the same operations, bit for bit; `MoeGemvParams::cluster_combine`).
constexpr int kCombineThreads = 256;
constexpr int kMaxCombineChunks = 16;

template <bool CLUSTER>
__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(MoeGemvParams p) {
  const int t = blockIdx.x, chunk = blockIdx.y, n_chunks = gridDim.y, H = p.hidden;
  const int c = chunk * kCombineThreads + threadIdx.x;
  __shared__ float s_ss[CLUSTER ? kMaxCombineChunks : 1];  // CLUSTER: every chunk's sum of squares
  if constexpr (CLUSTER) cluster_arrive_relaxed();  // (cluster_barrier.cuh; the wait before the pushes below)
  int order[kCombineMaxTopK];  // slots in ascending expert id
  combine_slot_order(p.topk_idx + t * p.top_k, p.top_k, order);
  bf16_t* x = static_cast<bf16_t*>(p.x) + size_t(t) * H;
  const float x_mid = c < H ? to_f32(x[c]) : 0.f;
  // The next norm's weights of the columns the last CTA writes (DRAM: behind the LM head's weight stream, which
  // starts at launch_dependents below, this load took microseconds).
  const bf16_t* w = static_cast<const bf16_t*>(p.next_norm);
  constexpr int kW = CLUSTER ? 1 : kMaxCombineChunks;  // CLUSTER: this thread's column's only
  float ws[kW];
#pragma unroll
  for (int i = 0; i < kW; ++i) {
    const int k = CLUSTER ? c : threadIdx.x + i * kCombineThreads;
    ws[i] = w != nullptr && k < H ? to_f32(w[k]) : 0.f;
  }
  griddep_wait();
  griddep_launch_dependents();
  const bf16_t* yw = static_cast<const bf16_t*>(p.yw);
  float xv = 0.f;
  if (c < H) {
    float y[kCombineMaxTopK];
#pragma unroll
    for (int s = 0; s < kCombineMaxTopK; ++s)  // all loads first, then the ordered chain
      y[s] = s < p.top_k ? to_f32(yw[(size_t(t) * p.top_k + order[s]) * H + c]) : 0.f;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < kCombineMaxTopK; ++s)
      if (s < p.top_k) acc = bf(acc + y[s]);
    xv = bf(x_mid + acc);
    x[c] = to_bf16(xv);
  }
  if (!p.next_norm) return;  // (never with CLUSTER)
  const float ss = block_sum(xv * xv);
  if constexpr (CLUSTER) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster_wait();  // (the arrive at the top)
    if (threadIdx.x < n_chunks) *cluster.map_shared_rank(&s_ss[chunk], int(threadIdx.x)) = ss;
    cluster.sync();  // every chunk's partial is in every CTA (release / acquire over the cluster)
    float total = 0.f;
    for (int k = 0; k < n_chunks; ++k) total += s_ss[k];
    const float r = 1.0f / sqrtf(total / float(H) + p.eps);
    if (c < H) static_cast<bf16_t*>(p.xn_out)[size_t(t) * H + c] = to_bf16(ws[0] * (xv * r));
    return;
  }
  __shared__ float s_scale;
  if (n_chunks > 1) {
    if (threadIdx.x == 0) p.norm_partials[t * kMaxCombineChunks + chunk] = ss;
    if (!last_cta_arrive(&p.norm_counters[t], unsigned(n_chunks))) return;
  }
  if (threadIdx.x == 0) {
    float total = ss;
    if (n_chunks > 1) {
      total = 0.f;
      for (int k = 0; k < n_chunks; ++k) total += __ldcg(&p.norm_partials[t * kMaxCombineChunks + k]);
      p.norm_counters[t] = 0u;
    }
    s_scale = 1.0f / sqrtf(total / float(H) + p.eps);
  }
  __syncthreads();
  const float r = s_scale;
  bf16_t* out = static_cast<bf16_t*>(p.xn_out) + size_t(t) * H;
  float xs[kMaxCombineChunks];
#pragma unroll
  for (int i = 0; i < kMaxCombineChunks; ++i) {
    const int k = threadIdx.x + i * kCombineThreads;
    xs[i] = k < H ? to_f32(__ldcg(x + k)) : 0.f;
  }
#pragma unroll
  for (int i = 0; i < kMaxCombineChunks; ++i) {
    const int k = threadIdx.x + i * kCombineThreads;
    if (k < H) out[k] = to_bf16(ws[i] * (xs[i] * r));
  }
}

}  // namespace

void moe_combine(const MoeGemvParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1, "moe_combine: n_tokens must be >= 1");
  MXS_CHECK(p.top_k <= 8, "moe_combine: top_k must be <= 8");
  const int n_chunks = (p.hidden + kCombineThreads - 1) / kCombineThreads;
  MXS_CHECK(n_chunks <= kMaxCombineChunks, "moe_combine: hidden too large");
  MXS_CHECK(!p.next_norm || n_chunks == 1 || (p.norm_partials && p.norm_counters),
            "moe_combine: the fused norm over several column chunks needs norm_partials and norm_counters");
  if (p.cluster_combine && p.next_norm && n_chunks >= 2) {
    static const bool attr_ok = [] {  // (12 chunks at hidden 2880: past the portable 8)
      CUDA_CHECK(cudaFuncSetAttribute(moe_combine_kernel<true>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
      return true;
    }();
    (void)attr_ok;
    launch_pdl_cluster(moe_combine_kernel<true>, dim3(p.n_tokens, n_chunks), dim3(kCombineThreads), 0, stream,
                       dim3(1, n_chunks, 1), p);
  } else {
    launch_pdl(moe_combine_kernel<false>, dim3(p.n_tokens, n_chunks), dim3(kCombineThreads), 0, stream, p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
