// RMSNorm (GptOssRMSNorm, gpt-oss-spec.md §3.2): out = bf(w * (x * 1/sqrt(mean(x^2) + eps))), fp32 inside.
//   rmsnorm:        xn = norm(x)
//   embed_rmsnorm:  x = embed[tokens]; xn = norm(x)   (the first layer's input norm fused with the gather)
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

struct RmsNormParams {
  const void* x = nullptr;        // [n_rows, dim] bf16 (rmsnorm) | unused (embed_rmsnorm)
  const void* embed = nullptr;    // [vocab, dim] bf16 (embed_rmsnorm)
  const int32_t* tokens = nullptr;  // [n_rows] (embed_rmsnorm)
  void* x_out = nullptr;          // [n_rows, dim] bf16: the gathered rows (embed_rmsnorm)
  const void* weight = nullptr;   // [dim] bf16
  void* out = nullptr;            // [n_rows, dim] bf16
  int n_rows = 0, dim = 0;
  float eps = 1e-5f;
};

void rmsnorm(const RmsNormParams& p, cudaStream_t stream);
void embed_rmsnorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
