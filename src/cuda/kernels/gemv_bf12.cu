// The bf12 LM head (gemv_bf12.h): gemv_bf16_kernel's design (a warp owns 2 consecutive rows, 8 warps per CTA, all
// of the warp's weight loads issued before the activations are staged in shared memory as fp32) on packed rows:
// each 16-byte bf16 vector becomes an 8-byte and a 4-byte load, decoded in registers (bf12.cuh) and dotted in the
// same order, so rows without exceptions give gemv_bf16_kernel's bits. A row's exceptions are added by the lane
// that finishes it, before the bf16 rounding: acc += (true - decoded) * x[col] (x from the staged row).
#include "cuda/kernels/gemv_bf12.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/bf12.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kRows = 2;  // rows per warp

template <int K, int MT>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf12_lm_head_kernel(GemvBf12Params p) {
  constexpr int NV = K / 8, PER_LANE = (NV + 31) / 32;
  extern __shared__ float4 s_x[];
  __shared__ unsigned long long s_best[MT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r0 = (blockIdx.x * kWarps + warp) * kRows;
  const bool active = r0 < p.n_out;
  // Rows past the end read the last row again (in bounds) and are not stored.
  size_t rows[kRows];
#pragma unroll
  for (int j = 0; j < kRows; ++j) rows[j] = size_t(min(r0 + j, p.n_out - 1));
  Bf12Vec wv[kRows][PER_LANE];
  Bf12Row hdr[kRows];
  // Lane l loads vectors l + 32 i of each row: bytes at +256 i, codes at +128 i from its first vector.
  auto load = [&] {
#pragma unroll
    for (int j = 0; j < kRows; ++j) {
      hdr[j] = bf12_row(p.w, rows[j]);
      const uint8_t* pb = p.w.bytes + rows[j] * K + lane * 8;
      const uint32_t* pc = p.w.nibs + rows[j] * (K / 8) + lane;
      unroll_for<PER_LANE>([&](auto i) {
        if (NV % 32 == 0 || lane + 32 * int(i) < NV)
          wv[j][i] = bf12_load<256 * int(i), 128 * int(i)>(pb, pc);
        else
          wv[j][i] = Bf12Vec{make_uint2(0, 0), 0u};
      });
    }
  };
  if (active) load();  // in flight while the previous kernel drains and the activations are staged
  griddep_wait();
  griddep_launch_dependents();
  bf16_t* y = static_cast<bf16_t*>(p.y);
  for (int m0 = 0; m0 < p.n_rows; m0 += MT) {
    if (m0 > 0 && active) load();
    __syncthreads();
    stage_rows_f32<K, MT>(s_x, static_cast<const bf16_t*>(p.a), p.n_rows - m0,
                          [&](int m) { return p.src_rows ? p.src_rows[m0 + m] : m0 + m; });
    if (threadIdx.x < MT) s_best[threadIdx.x] = 0ull;
    __syncthreads();
    if (active) {
      float acc[kRows][MT];
#pragma unroll
      for (int j = 0; j < kRows; ++j)
#pragma unroll
        for (int m = 0; m < MT; ++m) acc[j][m] = 0.f;
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int v = lane + 32 * i;
        if (NV % 32 != 0 && v >= NV) continue;  // (a decoded zero vector is not zero: it carries the base)
        uint4 d[kRows];
#pragma unroll
        for (int j = 0; j < kRows; ++j) d[j] = bf12_decode(wv[j][i], hdr[j].cword);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          const float4 a = s_x[(m * 2 + 0) * NV + v];
          const float4 b = s_x[(m * 2 + 1) * NV + v];
#pragma unroll
          for (int j = 0; j < kRows; ++j) acc[j][m] = dot8(d[j], a, b, acc[j][m]);
        }
      }
#pragma unroll
      for (int j = 0; j < kRows; ++j)
#pragma unroll
        for (int m = 0; m < MT; ++m) acc[j][m] = warp_sum(acc[j][m]);
      const float* s_xf = reinterpret_cast<const float*>(s_x);
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const int row = r0 + r;
          if (lane != m * kRows + r || m0 + m >= p.n_rows || row >= p.n_out) continue;
          // staged layout: float4 (m * 2 + plane) * NV + col / 8, plane = (col % 8) / 4
          const float v = bf12_row_corrections(hdr[r], p.w.exc, acc[r][m], [&](uint32_t col) {
            return s_xf[((m * 2 + (col % 8) / 4) * NV + col / 8) * 4 + col % 4];
          });
          const bf16_t out = to_bf16(v);
          y[size_t(m0 + m) * p.n_out + row] = out;
          if (p.row_argmax) atomicMax(&s_best[m], argmax_key(to_f32(out), row));
        }
    }
    if (p.row_argmax) {
      __syncthreads();
      if (threadIdx.x < MT && m0 + int(threadIdx.x) < p.n_rows && s_best[threadIdx.x] != 0ull)
        atomicMax(&p.row_argmax[m0 + threadIdx.x], s_best[threadIdx.x]);
    }
  }
}

template <int K, int MT>
void launch(const GemvBf12Params& p, cudaStream_t stream) {
  constexpr int smem = staged_bytes<K, MT>();
  static const bool smem_ok = (allow_smem(gemv_bf12_lm_head_kernel<K, MT>, smem), true);
  (void)smem_ok;
  constexpr int rows_per_cta = kWarps * kRows;
  const int grid = (p.n_out + rows_per_cta - 1) / rows_per_cta;
  launch_pdl(gemv_bf12_lm_head_kernel<K, MT>, dim3(grid), dim3(kWarps * 32), smem, stream, p);
  CUDA_CHECK_LAUNCH();
}

template <int K>
void dispatch_mt(const GemvBf12Params& p, cudaStream_t stream) {
  if (p.n_rows == 1) return launch<K, 1>(p, stream);
  if (p.n_rows == 2) return launch<K, 2>(p, stream);
  return launch<K, 4>(p, stream);
}

}  // namespace

void gemv_bf12_lm_head(const GemvBf12Params& p, cudaStream_t stream) {
  MXS_CHECK(p.n_rows >= 1 && p.n_out >= 1,
            strfmt("gemv_bf12_lm_head: n_rows = %d, n_out = %d must be >= 1", p.n_rows, p.n_out));
  switch (p.k) {
    case 2880: return dispatch_mt<2880>(p, stream);
    case 64: return dispatch_mt<64>(p, stream);
    default: throw Error(strfmt("gemv_bf12_lm_head: k = %d is not supported (supported: 2880, 64)", p.k));
  }
}

}  // namespace mxs::cuda
