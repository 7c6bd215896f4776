// GEMVs on bf12-packed weights (common/bf12.h: lossless, 12 bits per weight): the batch-1..7 LM head, the
// largest bandwidth-bound read of a decode step (201,088 x 2,880: 1.16 GB in bf16, 0.87 GB packed).
//   gemv_bf12_lm_head: y[m, r] = bf(a[src_rows[m]] . W[r])   (gemv_bf16_lm_head's bits on rows without exceptions)
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/bf12_weights.h"

namespace mxs::cuda {

struct GemvBf12Params {
  const void* a = nullptr;            // [*, k] bf16 activations
  const int32_t* src_rows = nullptr;  // [n_rows] rows of `a` to use (nullptr: rows 0..n_rows-1)
  Bf12Weights w;                      // [n_out, k] packed
  void* y = nullptr;                  // [n_rows, n_out] bf16
  // Optional: [n_rows] argmax keys of the bf16 outputs (as GemvBf16Params::row_argmax); zeroed before the launch.
  unsigned long long* row_argmax = nullptr;
  int n_rows = 0, k = 0, n_out = 0;
};

void gemv_bf12_lm_head(const GemvBf12Params& p, cudaStream_t stream);

}  // namespace mxs::cuda
