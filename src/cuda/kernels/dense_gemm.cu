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

// Thread per (token, head, RoPE pair d): grid (n_tokens, ceil(n_heads_total * 32 / 256)).
__global__ void __launch_bounds__(256) qkv_rope_from_f32_kernel(QkvRopeParams p, const float* acc) {
  griddep_wait();
  griddep_launch_dependents();
  const int t = blockIdx.x, pair = blockIdx.y * 256 + threadIdx.x;
  const int n_rows = (p.n_heads + 2 * p.n_kv_heads) * kHeadDim;
  if (pair >= n_rows / 2) return;
  const int head = pair / (kHeadDim / 2), d = pair % (kHeadDim / 2);
  const float* a = acc + size_t(t) * n_rows + head * kHeadDim + d;
  qkv_rope_store_pair(p, t, head, d, a[0], a[kHeadDim / 2]);
}

template <int PER_THREAD>
__global__ void __launch_bounds__(kNormThreads) residual_rmsnorm_kernel(ResidualNormParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int row = blockIdx.x;
  bf16_t* x = static_cast<bf16_t*>(p.x) + size_t(row) * p.dim;
  const float* acc = p.acc + size_t(row) * p.dim;
  const bf16_t* bias = static_cast<const bf16_t*>(p.bias);
  float xv[PER_THREAD];
#pragma unroll
  for (int i = 0; i < PER_THREAD; ++i) {
    const int c = threadIdx.x + i * kNormThreads;
    xv[i] = 0.f;
    if (c >= p.dim) continue;
    xv[i] = bf(to_f32(x[c]) + bf(acc[c] + to_f32(bias[c])));
    x[c] = to_bf16(xv[i]);
  }
  rmsnorm_row_write<PER_THREAD>(xv, static_cast<const bf16_t*>(p.norm_weight), p.dim, p.eps,
                                static_cast<bf16_t*>(p.xn) + size_t(row) * p.dim);
}

__global__ void gather_rows_kernel(const uint4* x, const int32_t* rows, uint4* out, int vec_per_row) {
  const int m = blockIdx.x;
  const uint4* src = x + size_t(rows[m]) * vec_per_row;
  for (int v = threadIdx.x; v < vec_per_row; v += blockDim.x) out[size_t(m) * vec_per_row + v] = src[v];
}

// CTA of 1024 threads per row: each thread scans a strided slice, then a max-reduction of the keys.
__global__ void __launch_bounds__(1024) row_argmax_kernel(const bf16_t* logits, unsigned long long* keys, int n_cols) {
  const int row = blockIdx.x;
  const bf16_t* r = logits + size_t(row) * n_cols;
  unsigned long long best = 0ull;
  for (int c = threadIdx.x; c < n_cols; c += blockDim.x) {
    best = max(best, argmax_key(to_f32(r[c]), c));  // a +NaN wins, so sampling reports the row (as gemv_bf16)
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
  __shared__ unsigned long long s_best[32];
  if ((threadIdx.x & 31) == 0) s_best[threadIdx.x >> 5] = best;
  __syncthreads();
  if (threadIdx.x < 32) {
    best = s_best[threadIdx.x];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    if (threadIdx.x == 0) keys[row] = best;
  }
}

}  // namespace

void gemm_bf16_f32(cublasHandle_t h, const void* x, const void* w, float* y, int n_rows, int k, int n_out) {
  gemm(h, x, w, y, CUDA_R_32F, n_rows, k, n_out);
}

void gemm_bf16_bf16(cublasHandle_t h, const void* x, const void* w, void* y, int n_rows, int k, int n_out) {
  gemm(h, x, w, y, CUDA_R_16BF, n_rows, k, n_out);
}

void qkv_rope_from_f32(const QkvRopeParams& p, const float* acc, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && p.kv.n_kv_heads == p.n_kv_heads, "qkv_rope_from_f32: bad token count or KV view");
  const int pairs = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  launch_pdl(qkv_rope_from_f32_kernel, dim3(p.n_tokens, (pairs + 255) / 256), dim3(256), 0, stream, p, acc);
  CUDA_CHECK_LAUNCH();
}

void residual_rmsnorm_from_f32(const ResidualNormParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_rows >= 1, "residual_rmsnorm_from_f32: n_rows must be >= 1");
  switch (p.dim) {
    case 2880: launch_pdl(residual_rmsnorm_kernel<(2880 + kNormThreads - 1) / kNormThreads>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    case 64: launch_pdl(residual_rmsnorm_kernel<1>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    default: throw Error(strfmt("residual_rmsnorm_from_f32: dim = %d is not supported (supported: 2880, 64)", p.dim));
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
  row_argmax_kernel<<<n_rows, 1024, 0, stream>>>(static_cast<const bf16_t*>(logits), keys, n_cols);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
