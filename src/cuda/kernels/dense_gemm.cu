// cuBLAS projections and their epilogues (see dense_gemm.h).
#include "cuda/kernels/dense_gemm.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/qkv_rope_epilogue.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {
namespace {

void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) throw Error(strfmt("cuBLAS error %d in %s", int(st), what));
}

// Row-major y [n_rows, n_out] = x [n_rows, k] . w[n_out, k]^T is column-major y^T [n_out, n_rows] =
// op_T(w as column-major [k, n_out]) . x as column-major [k, n_rows].
void gemm(cublasHandle_t h, const void* x, const void* w, void* y, cudaDataType_t y_type, int n_rows, int k, int n_out) {
  MXS_CHECK(n_rows >= 1 && k >= 1 && n_out >= 1, "dense gemm: n_rows, k and n_out must be >= 1");
  const float one = 1.0f, zero = 0.0f;
  cublas_check(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n_out, n_rows, k, &one, w, CUDA_R_16BF, k, x, CUDA_R_16BF, k,
                            &zero, y, y_type, n_out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
               "cublasGemmEx");
}

constexpr int kHeadDim = 64;

// CTA per (token, head group; see the launch), kQkvWarps warps: lane d = RoPE pair d (rows d and d + 32 of a
// head: two 128-byte coalesced loads per warp), warp w takes heads w, w + kQkvWarps, ... of its group. The RoPE
// factors depend on (position, d) only, so each thread computes them once for all its heads (v1, a thread per
// (token, head, d), spent most of its 33 us per 2,048-token layer on the 72x repeated cosf / sinf: ncu SM 76%,
// 1.5 TB/s on an H200).
constexpr int kQkvWarps = 8;
__global__ void __launch_bounds__(kQkvWarps * 32) qkv_rope_from_f32_kernel(QkvRopeParams p, const float* acc,
                                                                            int splits) {
  griddep_wait();
  griddep_launch_dependents();
  const int t = blockIdx.x, d = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_heads_all = p.n_heads + 2 * p.n_kv_heads;
  const int pos = p.meta.positions[t];
  float c, s;
  qkv_rope_factors(p, pos, d, c, s);
  const float* a = acc + size_t(t) * n_heads_all * kHeadDim + d;
  const size_t stride = size_t(p.n_tokens) * n_heads_all * kHeadDim;  // between K splits (skinny_gemm.h)
  for (int head = blockIdx.y * kQkvWarps + warp; head < n_heads_all; head += gridDim.y * kQkvWarps) {
    float v0 = a[head * kHeadDim], v1 = a[head * kHeadDim + kHeadDim / 2];
    for (int z = 1; z < splits; ++z)  // in split order
      v0 += a[z * stride + head * kHeadDim], v1 += a[z * stride + head * kHeadDim + kHeadDim / 2];
    qkv_rope_store_pair_cs(p, t, pos, head, d, v0, v1, c, s);
  }
}

// CTA per row; thread i owns column groups g = i + j * kNormThreads (j < PER) of 4 columns [4 g, 4 g + 4):
// one 16-byte acc load and 8-byte x / bias / norm-weight loads each (v1 loaded 2-4 bytes per thread and
// column: ~1.3 TB/s at 2,048 rows on an H200). The row stays in registers for the norm.
template <int PER>
__global__ void __launch_bounds__(kNormThreads) residual_rmsnorm_kernel(ResidualNormParams p) {
  const int n_groups = p.dim / 4;
  uint2 bias[PER], wn[PER];  // constant data: loaded before the wait
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int g = threadIdx.x + j * kNormThreads;
    bias[j] = g < n_groups ? static_cast<const uint2*>(p.bias)[g] : make_uint2(0u, 0u);
    wn[j] = g < n_groups ? static_cast<const uint2*>(p.norm_weight)[g] : make_uint2(0u, 0u);
  }
  griddep_wait();
  griddep_launch_dependents();
  const int row = blockIdx.x;
  uint2* x = reinterpret_cast<uint2*>(static_cast<bf16_t*>(p.x) + size_t(row) * p.dim);
  const float4* acc = reinterpret_cast<const float4*>(p.acc + size_t(row) * p.dim);
  float xv[PER][4];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int g = threadIdx.x + j * kNormThreads;
#pragma unroll
    for (int k = 0; k < 4; ++k) xv[j][k] = 0.f;
    if (g >= n_groups) continue;
    float4 a = acc[g];
    for (int z = 1; z < p.acc_splits; ++z) {  // in split order (skinny_gemm.h)
      const float4 b = acc[size_t(z) * p.n_rows * (p.dim / 4) + g];
      a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
    }
    const uint2 xr = x[g];
    xv[j][0] = bf(lo_f32(xr.x) + bf(a.x + lo_f32(bias[j].x)));
    xv[j][1] = bf(hi_f32(xr.x) + bf(a.y + hi_f32(bias[j].x)));
    xv[j][2] = bf(lo_f32(xr.y) + bf(a.z + lo_f32(bias[j].y)));
    xv[j][3] = bf(hi_f32(xr.y) + bf(a.w + hi_f32(bias[j].y)));
    store_group4_sumsq(x, g, xv[j], ss);
  }
  rmsnorm_groups4_write<PER>(xv, wn, ss, p.dim, p.eps, n_groups,
                             reinterpret_cast<uint2*>(static_cast<bf16_t*>(p.xn) + size_t(row) * p.dim));
}

__global__ void gather_rows_kernel(const uint4* x, const int32_t* rows, uint4* out, int vec_per_row) {
  const int m = blockIdx.x;
  const uint4* src = x + size_t(rows[m]) * vec_per_row;
  for (int v = threadIdx.x; v < vec_per_row; v += blockDim.x) out[size_t(m) * vec_per_row + v] = src[v];
}

// Grid (row, slice): each CTA scans one of kArgmaxSlices contiguous slices of a row with 16-byte loads (8 bf16;
// the row's scalar tail, n_cols % 8, goes to the last slice), reduces its best key and atomicMax-es it into
// keys[row] (zeroed by the caller's memset; 0 is below every key). v1, one 1024-thread CTA per row with 2-byte
// loads, left most SMs idle below 132 rows: 43 us per batch-64 step on an H100 (its marginal cost in the graph).
constexpr int kArgmaxThreads = 256, kArgmaxSlices = 16;
__global__ void __launch_bounds__(kArgmaxThreads) row_argmax_kernel(const bf16_t* logits, unsigned long long* keys,
                                                                    int n_cols) {
  const int row = blockIdx.x;
  const bf16_t* r = logits + size_t(row) * n_cols;
  const int n_vec = n_cols / 8, per = (n_vec + kArgmaxSlices - 1) / kArgmaxSlices;
  const int v0 = blockIdx.y * per, v1 = min(n_vec, v0 + per);
  const bool aligned = (reinterpret_cast<uintptr_t>(r) & 15u) == 0;
  unsigned long long best = 0ull;
  for (int v = v0 + int(threadIdx.x); v < v1; v += kArgmaxThreads) {
    if (aligned) {
      const uint4 q = *reinterpret_cast<const uint4*>(r + size_t(v) * 8);
      const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // a +NaN wins, so sampling reports the row (as gemv_bf16)
        best = max(best, argmax_key(lo_f32(w[i]), 8 * v + 2 * i));
        best = max(best, argmax_key(hi_f32(w[i]), 8 * v + 2 * i + 1));
      }
    } else {
      for (int i = 0; i < 8; ++i) best = max(best, argmax_key(to_f32(r[8 * v + i]), 8 * v + i));
    }
  }
  if (blockIdx.y == gridDim.y - 1)
    for (int col = 8 * n_vec + int(threadIdx.x); col < n_cols; col += kArgmaxThreads)
      best = max(best, argmax_key(to_f32(r[col]), col));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  __shared__ unsigned long long s_best[kArgmaxThreads / 32];
  if ((threadIdx.x & 31) == 0) s_best[threadIdx.x >> 5] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = threadIdx.x < kArgmaxThreads / 32 ? s_best[threadIdx.x] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if (threadIdx.x == 0 && best != 0ull) atomicMax(keys + row, best);
  }
}

}  // namespace

void gemm_bf16_f32(cublasHandle_t h, const void* x, const void* w, float* y, int n_rows, int k, int n_out) {
  gemm(h, x, w, y, CUDA_R_32F, n_rows, k, n_out);
}

void gemm_bf16_bf16(cublasHandle_t h, const void* x, const void* w, void* y, int n_rows, int k, int n_out) {
  gemm(h, x, w, y, CUDA_R_16BF, n_rows, k, n_out);
}

void qkv_rope_from_f32(const QkvRopeParams& p, const float* acc, cudaStream_t stream, int acc_splits) {
  MXS_CHECK(p.n_tokens >= 1 && p.kv.n_kv_heads == p.n_kv_heads, "qkv_rope_from_f32: bad token count or KV view");
  // Decode-sized steps: one head per warp (grid.y head groups), the work of a token spread over CTAs (one CTA
  // per token looping over 10 heads per warp was a latency chain: H200, 20b, batch 64 7.709 -> 7.629 ms per
  // step with the split, batch 16 5.410 -> 5.372); prefill chunks keep one CTA per token, which computes the
  // RoPE factors once for all its heads.
  const int head_groups = p.n_tokens <= 256 ? (p.n_heads + 2 * p.n_kv_heads + kQkvWarps - 1) / kQkvWarps : 1;
  MXS_CHECK(acc_splits >= 1, "qkv_rope_from_f32: acc_splits must be >= 1");
  launch_pdl(qkv_rope_from_f32_kernel, dim3(p.n_tokens, head_groups), dim3(kQkvWarps * 32), 0, stream, p, acc,
             acc_splits);
  CUDA_CHECK_LAUNCH();
}

void residual_rmsnorm_from_f32(const ResidualNormParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_rows >= 1 && p.acc_splits >= 1, "residual_rmsnorm_from_f32: n_rows and acc_splits must be >= 1");
  MXS_CHECK(p.dim >= 4 && p.dim % 4 == 0 && p.dim <= 16 * kNormThreads,
            strfmt("residual_rmsnorm_from_f32: dim = %d is not supported (a multiple of 4, <= %d)", p.dim, 16 * kNormThreads));
  switch ((p.dim / 4 + kNormThreads - 1) / kNormThreads) {
    case 1: launch_pdl(residual_rmsnorm_kernel<1>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    case 2: launch_pdl(residual_rmsnorm_kernel<2>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    case 3: launch_pdl(residual_rmsnorm_kernel<3>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    default: launch_pdl(residual_rmsnorm_kernel<4>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
  }
  CUDA_CHECK_LAUNCH();
}

void gather_rows_bf16(const void* x, const int32_t* rows, void* out, int n_rows, int dim, cudaStream_t stream) {
  MXS_CHECK(n_rows >= 1 && dim % 8 == 0, "gather_rows_bf16: n_rows >= 1 and dim % 8 == 0 are required");
  gather_rows_kernel<<<n_rows, 128, 0, stream>>>(static_cast<const uint4*>(x), rows, static_cast<uint4*>(out), dim / 8);
  CUDA_CHECK_LAUNCH();
}

void row_argmax_bf16(const void* logits, unsigned long long* keys, int n_rows, int n_cols, cudaStream_t stream) {
  MXS_CHECK(n_rows >= 1 && n_cols >= 1, "row_argmax_bf16: n_rows and n_cols must be >= 1");
  CUDA_CHECK(cudaMemsetAsync(keys, 0, size_t(n_rows) * sizeof(unsigned long long), stream));
  row_argmax_kernel<<<dim3(n_rows, kArgmaxSlices), kArgmaxThreads, 0, stream>>>(static_cast<const bf16_t*>(logits),
                                                                                  keys, n_cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
