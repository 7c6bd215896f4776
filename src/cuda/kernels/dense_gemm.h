// Dense bf16 projections for steps of many rows (batch >= kDenseGemmMinRows decode tokens, prefill chunks):
// cuBLAS GEMMs (tensor cores; each weight read once per step) with fp32 outputs, then small epilogue kernels
// that apply the spec's rounding points exactly as the GEMV kernels do (gpt-oss-spec.md §3):
//   qkv:    acc = xn . Wqkv^T (fp32)   -> qkv_rope_from_f32: bf(acc + b), RoPE, q / paged K,V
//   o_proj: acc = attn . Wo^T (fp32)   -> residual_rmsnorm_from_f32: x = bf(x + bf(acc + b)); xn = rmsnorm(x)
//   LM head: logits = bf(xn[rows] . Wlm^T) (cuBLAS writes bf16 directly) -> row_argmax for greedy sampling
// The GEMV kernels stay for small batches: at 1-4 rows they stream the weights with fused epilogues and no
// fp32 round trip; at 5-64 rows the runner computes q/k/v and o_proj with skinny_gemm.h instead of cuBLAS (K-split
// partials, which the epilogues below add in order). (At 5-7 rows the 8-row GEMVs ran a 20b step without graphs in
// 5.08-5.77 ms, batch 8 on this path in 4.11: H100, session 23.) The choice does not change results beyond
// accumulation order (one bf16 ulp at times).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "cuda/kernels/qkv_rope.h"

namespace mxs::cuda {

constexpr int kDenseGemmMinRows = 5;
// The LM head from 4 rows: its 4-row bf12 GEMV took ~500 us per 20b step vs ~415 for the bf16 cuBLAS GEMM (20b batch
// 4 3.525-3.529 -> 3.457-3.465 ms per step; at 3 rows even, at 2 the GEMM lost 5%: H100, session 23).
constexpr int kLmHeadGemmMinRows = 4;
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

// y[m, r] = sum_k x[m, k] * w[r, k] for m < n_rows, r < n_out: x [n_rows, k] bf16 (row stride k), w [n_out, k]
// bf16 row-major, y [n_rows, n_out] row-major, fp32 (gemm_bf16_f32) or bf16 rounded once (gemm_bf16_bf16).
void gemm_bf16_f32(cublasHandle_t h, const void* x, const void* w, float* y, int n_rows, int k, int n_out);
void gemm_bf16_bf16(cublasHandle_t h, const void* x, const void* w, void* y, int n_rows, int k, int n_out);

// The qkv_rope epilogue over acc [acc_splits][n_tokens, (n_heads + 2 n_kv) * 64] fp32 (p.xn, p.w_qkv unused;
// several splits: skinny_gemm's partial sums, added in split order).
void qkv_rope_from_f32(const QkvRopeParams& p, const float* acc, cudaStream_t stream, int acc_splits = 1);

struct ResidualNormParams {
  const float* acc = nullptr;        // [acc_splits][n_rows, dim] fp32 projection (no bias), splits added in order
  const void* bias = nullptr;        // [dim] bf16
  void* x = nullptr;                 // [n_rows, dim] bf16 residual, updated in place
  const void* norm_weight = nullptr; // [dim] bf16
  void* xn = nullptr;                // [n_rows, dim] bf16 normed output
  int n_rows = 0, dim = 0, acc_splits = 1;
  float eps = 1e-5f;
};
// x = bf(x + bf(acc + b)); xn = rmsnorm(x) (one CTA per row).
void residual_rmsnorm_from_f32(const ResidualNormParams& p, cudaStream_t stream);

// out[m] = x[rows[m]] for m < n_rows (bf16 rows of dim elements, dim % 8 == 0).
void gather_rows_bf16(const void* x, const int32_t* rows, void* out, int n_rows, int dim, cudaStream_t stream);

// keys[m] = the orderable (value, lowest id) argmax key of logits row m (the encoding of gemv_bf16_lm_head's
// row_argmax); zeroes keys itself (a memset in the stream), then each of 16 CTAs per row atomicMax-es its slice's.
void row_argmax_bf16(const void* logits, unsigned long long* keys, int n_rows, int n_cols, cudaStream_t stream);

}  // namespace mxs::cuda
