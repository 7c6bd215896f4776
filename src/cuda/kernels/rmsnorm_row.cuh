// Block-level RMSNorm of one row held in registers (a fixed number of elements per thread), shared by the
// rmsnorm kernels and by moe_combine (residual add + next norm fused).
#pragma once
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {

constexpr int kNormThreads = 256;

// Sum over the block (kNormThreads threads); every thread gets the total.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float s_part[kNormThreads / 32];
  v = warp_sum(v);
  __syncthreads();  // s_part may still be read by a previous call
  if ((threadIdx.x & 31) == 0) s_part[threadIdx.x >> 5] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int i = 0; i < kNormThreads / 32; ++i) t += s_part[i];
  return t;
}

// xv[i] = element threadIdx.x + i * kNormThreads of the row (0 past dim); writes out[] (bf16).
template <int PER_THREAD>
__device__ __forceinline__ void rmsnorm_row_write(const float (&xv)[PER_THREAD], const bf16_t* weight, int dim,
                                                  float eps, bf16_t* out) {
  float ss = 0.f;
#pragma unroll
  for (int i = 0; i < PER_THREAD; ++i) ss = fmaf(xv[i], xv[i], ss);
  const float var = block_sum(ss) / float(dim);
  const float r = 1.0f / sqrtf(var + eps);
#pragma unroll
  for (int i = 0; i < PER_THREAD; ++i) {
    const int c = threadIdx.x + i * kNormThreads;
    if (c < dim) out[c] = to_bf16(to_f32(weight[c]) * (xv[i] * r));
  }
}

}  // namespace mxs::cuda
