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

// The residual rows of the fused norms: stores group g (4 values, bf16) of a row and adds their squares to ss.
__device__ __forceinline__ void store_group4_sumsq(uint2* row, int g, const float (&v)[4], float& ss) {
  row[g] = make_uint2(pack_bf16x2(v[0], v[1]), pack_bf16x2(v[2], v[3]));
#pragma unroll
  for (int k = 0; k < 4; ++k) ss = fmaf(v[k], v[k], ss);
}

// The same norm over a row held as groups of 4 (8-byte vectors): xv[j] = elements 4 g .. 4 g + 3 of group
// g = threadIdx.x + j * kNormThreads (zeros past n_groups), wn[j] the weight's group g, ss this thread's sum of
// squares of its xv; writes out[g] = bf(w * (x * r)).
template <int PER>
__device__ __forceinline__ void rmsnorm_groups4_write(const float (&xv)[PER][4], const uint2 (&wn)[PER], float ss,
                                                      int dim, float eps, int n_groups, uint2* out) {
  const float r = 1.0f / sqrtf(block_sum(ss) / float(dim) + eps);
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int g = threadIdx.x + j * kNormThreads;
    if (g >= n_groups) continue;
    out[g] = make_uint2(pack_bf16x2(lo_f32(wn[j].x) * (xv[j][0] * r), hi_f32(wn[j].x) * (xv[j][1] * r)),
                        pack_bf16x2(lo_f32(wn[j].y) * (xv[j][2] * r), hi_f32(wn[j].y) * (xv[j][3] * r)));
  }
}

}  // namespace mxs::cuda
