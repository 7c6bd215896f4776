// bf16 GEMM for decode-sized row counts (8-64 tokens): y = x . w^T in fp32 partial sums over K splits, for the
// dense projections (q/k/v, o_proj) of steps too wide for the streaming GEMVs and too narrow for cuBLAS to
// stream the weights well (H100, `mxserve bench kernel dense-gemm`: q/k/v at 70% and o_proj at 60-64% of the
// copy bandwidth at 8-64 rows). Unlike the cuBLAS call it is launched with programmatic dependent launch, so it
// stays in the decode step's chain. Layout and mapping: skinny_gemm.cu.
//   y[s, m, r] = sum over k in split s of x[m, k] * w[r, k]   (s < splits, m < n_rows, r < n_out)
// The consumers (qkv_rope_from_f32, residual_rmsnorm_from_f32) add the splits in order (deterministic).
#pragma once
#include <cuda_runtime.h>

namespace mxs::cuda {

constexpr int kSkinnyGemmMaxRows = 64;

// Whether the shape is supported: 1 <= n_rows <= kSkinnyGemmMaxRows, k % 64 == 0, n_out % 64 == 0.
bool skinny_gemm_supports(int n_rows, int k, int n_out);

// The number of K splits the launch for (n_rows, k, n_out) uses on this device (a divisor of k / 64): y must
// hold splits x n_rows x n_out floats.
int skinny_gemm_splits(int n_rows, int k, int n_out);

// x [n_rows, k] bf16 row-major, w [n_out, k] bf16 row-major, y [splits, n_rows, n_out] fp32. Unsupported
// shapes: mxs::Error. Returns the split count.
int skinny_gemm_bf16_f32(const void* x, const void* w, float* y, int n_rows, int k, int n_out, cudaStream_t stream);

}  // namespace mxs::cuda
