// Fused q/k/v GEMV + bias + YaRN RoPE + KV write. A warp owns the RoPE pair of rows (d, d + 32) of one head,
// so the rotation happens in registers right after the dot products; 8 warps = 8 consecutive pairs.
#include "cuda/kernels/qkv_rope.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/gemv_stream.cuh"
#include "cuda/kernels/qkv_rope_epilogue.cuh"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;
constexpr int kWarps = 8;

template <int K, int MT>
__global__ void __launch_bounds__(kWarps * 32) qkv_rope_kernel(QkvRopeParams p) {
  extern __shared__ float4 s_x[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pair = blockIdx.x * kWarps + warp;  // global pair index over (n_heads + 2 n_kv) * 32
  const int n_pairs = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  const int head = pair / (kHeadDim / 2), d = pair % (kHeadDim / 2);
  const bf16_t* w = static_cast<const bf16_t*>(p.w_qkv);
  const int row0 = head * kHeadDim + d, row1 = row0 + kHeadDim / 2;
  const bf16_t* rows[2] = {w + size_t(min(row0, n_pairs * 2 - 1)) * K, w + size_t(min(row1, n_pairs * 2 - 1)) * K};
  const bool active = pair < n_pairs;

  RowRegs<K, 2> wr;
  if (active) load_rows<K, 2>(rows, wr);  // in flight while the previous kernel drains and xn is staged
  griddep_wait();
  griddep_launch_dependents();
  for (int m0 = 0; m0 < p.n_tokens; m0 += MT) {
    if (m0 > 0 && active) load_rows<K, 2>(rows, wr);
    __syncthreads();
    stage_rows_f32<K, MT>(s_x, static_cast<const bf16_t*>(p.xn), p.n_tokens - m0, [&](int m) { return m0 + m; });
    __syncthreads();
    if (!active) continue;
    float acc[2][MT];
    dot_rows<K, MT, 2>(wr, s_x, acc);
    // Lane m finishes token m0 + m (MT <= 32).
#pragma unroll
    for (int m = 0; m < MT; ++m)
      if (lane == m && m0 + m < p.n_tokens) qkv_rope_store_pair(p, m0 + m, head, d, acc[0][m], acc[1][m]);
  }
}

// 1-4 tokens on the streaming GEMV: group g = RoPE pair (head, d), rows head * 64 + d and + 32.
struct QkvStreamEpi {
  QkvRopeParams p;
  int k;
  __device__ const bf16_t* row(int g, int r) const {
    const int head = g / (kHeadDim / 2), d = g % (kHeadDim / 2);
    return static_cast<const bf16_t*>(p.w_qkv) + size_t(head * kHeadDim + d + r * (kHeadDim / 2)) * k;
  }
  struct Pre {};  // (the epilogue's loads are small and L2-resident)
  __device__ Pre prefetch(int, int) const { return {}; }
  __device__ void finish(int g, int m, const float (&v)[2], const Pre&) const {
    qkv_rope_store_pair(p, m, g / (kHeadDim / 2), g % (kHeadDim / 2), v[0], v[1]);
  }
  __device__ void after(int) const {}
};

template <int K>
void launch_stream(const QkvRopeParams& p, cudaStream_t stream) {
  const int groups = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  const bf16_t* x = static_cast<const bf16_t*>(p.xn);
  const QkvStreamEpi epi{p, K};
  switch (p.n_tokens) {
    case 1: return launch_gemv_stream<K, 1, 2>(x, 1, groups, epi, stream);
    case 2: return launch_gemv_stream<K, 2, 2>(x, 2, groups, epi, stream);
    default: return launch_gemv_stream<K, 4, 2>(x, p.n_tokens, groups, epi, stream);
  }
}

template <int K, int MT>
void launch(const QkvRopeParams& p, cudaStream_t stream) {
  const int n_pairs = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  const int grid = (n_pairs + kWarps - 1) / kWarps;
  constexpr int smem = staged_bytes<K, MT>();
  static const bool smem_ok = (allow_smem(qkv_rope_kernel<K, MT>, smem), true);
  (void)smem_ok;
  launch_pdl(qkv_rope_kernel<K, MT>, dim3(grid), dim3(kWarps * 32), smem, stream, p);
  CUDA_CHECK_LAUNCH();
}

template <int K>
void dispatch_mt(const QkvRopeParams& p, cudaStream_t stream) {
  if (p.n_tokens == 1) return launch<K, 1>(p, stream);
  if (p.n_tokens == 2) return launch<K, 2>(p, stream);
  return launch<K, 4>(p, stream);
}

}  // namespace

void qkv_rope(const QkvRopeParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1, "qkv_rope: n_tokens must be >= 1");
  MXS_CHECK(p.kv.n_kv_heads == p.n_kv_heads, "qkv_rope: KV view and params disagree on n_kv_heads");
  switch (p.hidden) {
    case 2880: return p.n_tokens <= 4 ? launch_stream<2880>(p, stream) : dispatch_mt<2880>(p, stream);
    case 64: return dispatch_mt<64>(p, stream);
    default: throw Error(strfmt("qkv_rope: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

}  // namespace mxs::cuda
