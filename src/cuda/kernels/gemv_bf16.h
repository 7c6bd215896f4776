// bf16 GEMVs with fp32 accumulation over a handful of activation rows (decode tokens; prefill chunks run
// through the same kernel in tiles of 4 rows):
//   gemv_bf16_residual:  x[m, r] = bf(x[m, r] + bf(a[m] . W[r] + b[r]))   (o_proj + bias + residual)
//   gemv_bf16_lm_head:   y[m, r] = bf(a[src_rows[m]] . W[r])                (LM head on selected rows)
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/bf12_weights.h"

namespace mxs::cuda {

struct GemvBf16Params {
  const void* a = nullptr;        // [*, k] bf16 activations
  const int32_t* src_rows = nullptr;  // [n_rows] rows of `a` to use (nullptr: rows 0..n_rows-1)
  const void* w = nullptr;        // [n_out, k] bf16
  // optional: the same weights bf12-packed (common/bf12.h), read instead of w: by the LM head at any row count (the
  // runner takes it below 8 rows), by o_proj (k = 4096) at n_rows <= 2. Rows without exceptions give w's bits.
  Bf12Weights w_bf12;
  const void* bias = nullptr;     // [n_out] bf16 (residual form only)
  void* y = nullptr;              // [n_rows, n_out] bf16: output (lm_head) or residual updated in place
  // lm_head only, optional: [n_rows] argmax keys of the bf16 outputs (larger value, then lower id), combined
  // with atomicMax; must be zeroed before the launch. sampling decodes them (greedy without penalties).
  unsigned long long* row_argmax = nullptr;
  // residual form only, optional (n_rows <= 4): the last CTA to finish also writes
  // norm_out = rmsnorm(y, norm_weight) for every row (the post-attention norm, fused to save a launch).
  const void* norm_weight = nullptr;  // [n_out] bf16
  void* norm_out = nullptr;           // [n_rows, n_out] bf16
  unsigned* done_counter = nullptr;   // [1] zero before the first launch (the kernel resets it)
  float eps = 1e-5f;
  int n_rows = 0, k = 0, n_out = 0;
};

void gemv_bf16_residual(const GemvBf16Params& p, cudaStream_t stream);
void gemv_bf16_lm_head(const GemvBf16Params& p, cudaStream_t stream);

}  // namespace mxs::cuda
