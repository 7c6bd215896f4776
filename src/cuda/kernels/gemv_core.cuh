// The bf16 GEMV core shared by the dense projections (qkv_rope, gemv_bf16, moe_router): a warp owns NR
// weight rows [K] bf16 and computes their dot with MT activation rows staged in shared memory as fp32.
// Shared layout of one staged activation row (K/8 vectors of 8): plane A holds elements 0-3 of every
// vector, plane B elements 4-7, so a warp reading consecutive vectors hits consecutive 16-byte words
// (no bank conflicts). Weights are read once per token tile with 16-byte streaming loads, all of a row's
// loads issued before the first FMA.
#pragma once
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {

// Stages rows src_row(m) (m < n_rows; `-1` or m >= n_rows -> zeros) of x [*, K] bf16 into smem [MT][2][K/8]
// float4. Called by the whole block; the caller synchronizes.
template <int K, int MT, typename RowFn>
__device__ __forceinline__ void stage_rows_f32(float4* s_x, const bf16_t* x, int n_rows, RowFn src_row) {
  constexpr int NV = K / 8;
  for (int i = threadIdx.x; i < MT * NV; i += blockDim.x) {
    const int m = i / NV, v = i % NV;
    float4 a = make_float4(0.f, 0.f, 0.f, 0.f), b = a;
    const int r = m < n_rows ? src_row(m) : -1;
    if (r >= 0) {
      const uint4 w = *reinterpret_cast<const uint4*>(x + size_t(r) * K + size_t(v) * 8);
      a = make_float4(lo_f32(w.x), hi_f32(w.x), lo_f32(w.y), hi_f32(w.y));
      b = make_float4(lo_f32(w.z), hi_f32(w.z), lo_f32(w.w), hi_f32(w.w));
    }
    s_x[(m * 2 + 0) * NV + v] = a;
    s_x[(m * 2 + 1) * NV + v] = b;
  }
}

// Element col of staged row m (stage_rows_f32's layout): float4 (m * 2 + plane) * K/8 + col / 8, plane = (col % 8) / 4.
// (A packed weight format's exception corrections read single activations.)
template <int K>
__device__ __forceinline__ float staged_element(const float4* s_x, int m, uint32_t col) {
  return reinterpret_cast<const float*>(s_x)[((m * 2 + (col % 8) / 4) * (K / 8) + col / 8) * 4 + col % 4];
}

// The weights of NR rows as a lane holds them: 16-byte vectors v = lane + 32 i of each row [K] bf16.
template <int K, int NR>
struct RowRegs {
  static constexpr int NV = K / 8;  // 16-byte vectors per row
  static constexpr int PER_LANE = (NV + 31) / 32;
  uint4 w[NR][PER_LANE];
};

// Issues every load of the warp's NR rows (streaming, not hoisted by the compiler: asm volatile). Called
// before the activations are staged, so that the weight latency overlaps the staging.
template <int K, int NR>
__device__ __forceinline__ void load_rows(const bf16_t* const (&rows)[NR], RowRegs<K, NR>& r) {
  constexpr int NV = RowRegs<K, NR>::NV, PER_LANE = RowRegs<K, NR>::PER_LANE;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < NR; ++j)
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int v = lane + 32 * i;
      r.w[j][i] = (NV % 32 == 0 || v < NV) ? ldg_stream(rows[j] + size_t(v) * 8) : make_uint4(0, 0, 0, 0);
    }
}

// acc[r][m] = sum_k W[row r][k] * x[m][k] over NR rows and the MT staged activation rows; complete (reduced over
// the warp) in every lane. vec(j, i): row j's 8 weights of this lane's vector lane + 32 i as bf16 (zeros past the
// row's end): the loaded registers (dot_rows), or a packed format decoded on the fly (gemv_bf16.cu's bf12 LM head),
// in the same summation order.
template <int K, int MT, int NR, typename Vec>
__device__ __forceinline__ void dot_vecs(const Vec& vec, const float4* s_x, float (&acc)[NR][MT]) {
  constexpr int NV = RowRegs<K, NR>::NV, PER_LANE = RowRegs<K, NR>::PER_LANE;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int j = 0; j < NR; ++j)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[j][m] = 0.f;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int v = min(lane + 32 * i, NV - 1);  // lanes past the end hold zero weights
    uint4 d[NR];
#pragma unroll
    for (int j = 0; j < NR; ++j) d[j] = vec(j, i);
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const float4 a = s_x[(m * 2 + 0) * NV + v];
      const float4 b = s_x[(m * 2 + 1) * NV + v];
#pragma unroll
      for (int j = 0; j < NR; ++j) acc[j][m] = dot8(d[j], a, b, acc[j][m]);
    }
  }
#pragma unroll
  for (int j = 0; j < NR; ++j)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[j][m] = warp_sum(acc[j][m]);
}

template <int K, int MT, int NR>
__device__ __forceinline__ void dot_rows(const RowRegs<K, NR>& r, const float4* s_x, float (&acc)[NR][MT]) {
  dot_vecs<K, MT, NR>([&](int j, int i) { return r.w[j][i]; }, s_x, acc);
}

// Both steps at once (when nothing is to be overlapped).
template <int K, int MT, int NR>
__device__ __forceinline__ void warp_dot_rows(const bf16_t* const (&rows)[NR], const float4* s_x,
                                              float (&acc)[NR][MT]) {
  RowRegs<K, NR> r;
  load_rows<K, NR>(rows, r);
  dot_rows<K, MT, NR>(r, s_x, acc);
}

// Raises a kernel's dynamic shared-memory limit once (before any graph capture uses it).
template <typename Kernel>
inline void allow_smem(Kernel kernel, int bytes) {
  if (bytes > 48 * 1024) cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}

// Shared-memory bytes for MT staged rows of K.
template <int K, int MT>
constexpr int staged_bytes() {
  return MT * K * int(sizeof(float));
}

}  // namespace mxs::cuda
