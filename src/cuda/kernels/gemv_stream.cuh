// Streaming bf16 GEMVs for 1-4 activation rows (batch-1..4 decode). gemv_stream_kernel: a persistent grid of CTAs
// walks groups of R output rows; warp w of a CTA owns the K-slice w of every row (K / 8 elements), so a lane holds
// its slice of the MT activation rows in registers (no shared-memory staging) and 2 x R x PER_LANE 16-byte weight
// loads in flight: the next group's weights are loaded before the current group is reduced. Partial dots meet in
// shared memory (double-buffered: one barrier per group) and thread m < MT finishes token m through the epilogue.
// Why: the register-resident design of gemv_core.cuh holds a whole row per warp (64 registers for K = 4096), so a
// 23.6 MB o_proj needed 1.4 waves of CTAs (19 us at batch 1, 1.2 TB/s); here the grid is one wave and every group
// is the same small piece of work. gemv_warp_kernel (below; q/k/v at one row): a warp per group.
#pragma once
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {

constexpr int kStreamWarps = 8;

template <int K>
struct StreamShape {
  static_assert(K % (kStreamWarps * 8) == 0, "K must split into 8 slices of whole 16-byte vectors");
  static constexpr int KS = K / kStreamWarps;       // elements per warp slice
  static constexpr int NV = KS / 8;                 // 16-byte vectors per slice
  static constexpr int PER_LANE = (NV + 31) / 32;   // vectors per lane (lanes past NV hold zeros)
};

// Epi: struct with
//   __device__ const bf16_t* row(int g, int r) const;            weight row r of group g ([K] bf16)
//   struct Pre;                                                   epilogue inputs loaded ahead (bias, residual)
//   __device__ Pre prefetch(int g, int m) const;                  issued by thread m < MT at the top of the
//                                                                  group, so its loads overlap the dot products
//   __device__ void finish(int g, int m, const float (&v)[R], const Pre&) const;  the R dots of group g, token m
//   __device__ void after(int n_x) const;                         run by every thread at the end (e.g. a
//                                                                  last-CTA norm); may be empty
// Rows: how the lanes get their slices of the MT activation rows (by every thread):
//   struct Pre;                                   registers loaded before griddep_wait
//   __device__ Pre before_wait(int n_x) const;    loads of what no kernel in flight writes (constants, and the
//                                                  outputs of kernels two or more back: pdl.cuh's invariant)
//   __device__ void load(int n_x, const Pre&, float4 (&xa)[MT][PER_LANE], float4 (&xb)[MT][PER_LANE]) const;
// (load runs after griddep_wait.) Vector v = lane + 32 i of slice `warp` (elements warp * K/8 + 8 v .. + 7):
// xa = elements 0-3, xb = 4-7, fp32. StreamRows reads them from memory; a fused producer (e.g. the MoE combine +
// RMSNorm of qkv_rope) computes them. Launch: launch_pdl, 256 threads, grid <= n_groups (persistent; gridDim.x
// is the stride).
template <int K, int MT>
struct StreamRows {
  const bf16_t* x;  // MT rows [K] bf16 at x + m * K (m < n_x; rows past n_x are zeros)
  struct Pre {};     // (x is the predecessor's output)
  __device__ Pre before_wait(int) const { return {}; }
  __device__ void load(int n_x, const Pre&, float4 (&xa)[MT][StreamShape<K>::PER_LANE],
                       float4 (&xb)[MT][StreamShape<K>::PER_LANE]) const {
    using S = StreamShape<K>;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < S::PER_LANE; ++i) {
        const int v = lane + 32 * i;
        uint4 u = make_uint4(0, 0, 0, 0);
        if (m < n_x && (S::NV % 32 == 0 || v < S::NV))
          u = *reinterpret_cast<const uint4*>(x + size_t(m) * K + warp * S::KS + v * 8);
        xa[m][i] = make_float4(lo_f32(u.x), hi_f32(u.x), lo_f32(u.y), hi_f32(u.y));
        xb[m][i] = make_float4(lo_f32(u.z), hi_f32(u.z), lo_f32(u.w), hi_f32(u.w));
      }
  }
};

template <int K, int MT, int R, typename Epi, typename Rows>
__global__ void __launch_bounds__(kStreamWarps * 32) gemv_stream_kernel(Rows rows, int n_x, int n_groups, Epi epi) {
  using S = StreamShape<K>;
  __shared__ float s_part[2][kStreamWarps][R][MT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto load_group = [&](int g, uint4 (&wr)[R][S::PER_LANE]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const bf16_t* row = epi.row(g, r) + warp * S::KS;
#pragma unroll
      for (int i = 0; i < S::PER_LANE; ++i) {
        const int v = lane + 32 * i;
        wr[r][i] = (S::NV % 32 == 0 || v < S::NV) ? ldg_stream(row + v * 8) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  uint4 wcur[R][S::PER_LANE], wnxt[R][S::PER_LANE];
  int g = blockIdx.x;
  const typename Rows::Pre rows_pre = rows.before_wait(n_x);  // (small, first in the queue)
  if (g < n_groups) load_group(g, wcur);  // weights in flight while the previous kernel drains
  griddep_wait();
  griddep_launch_dependents();
  // This lane's slice of the activation rows, fp32: vector v = lane + 32 i of slice `warp`.
  float4 xa[MT][S::PER_LANE], xb[MT][S::PER_LANE];
  rows.load(n_x, rows_pre, xa, xb);
  int buf = 0;
  for (; g < n_groups; g += gridDim.x) {
    const int gn = g + gridDim.x;
    if (gn < n_groups) load_group(gn, wnxt);
    typename Epi::Pre pre{};
    if (threadIdx.x < MT && int(threadIdx.x) < n_x) pre = epi.prefetch(g, threadIdx.x);
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        float a = 0.f;
#pragma unroll
        for (int i = 0; i < S::PER_LANE; ++i) a = dot8(wcur[r][i], xa[m][i], xb[m][i], a);
        acc[r][m] = warp_sum(a);
      }
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) s_part[buf][warp][r][m] = acc[r][m];
    __syncthreads();
    if (threadIdx.x < MT && int(threadIdx.x) < n_x) {
      const int m = threadIdx.x;
      float v[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < kStreamWarps; ++w) s += s_part[buf][w][r][m];
        v[r] = s;
      }
      epi.finish(g, m, v, pre);
    }
    buf ^= 1;
    if (gn < n_groups)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int i = 0; i < S::PER_LANE; ++i) wcur[r][i] = wnxt[r][i];
  }
  epi.after(n_x);
}

// The CTAs of `kernel` (kStreamWarps warps, no dynamic shared memory) that fit on the current device at once.
template <typename Kernel>
int resident_ctas(Kernel kernel) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kStreamWarps * 32, 0));
  return current_device_sms() * (per_sm > 0 ? per_sm : 1);
}

// Launches gemv_stream_kernel on a persistent grid: the CTAs that fit on the device at once (capped by the
// group count), measured once per instantiation.
template <int K, int MT, int R, typename Epi, typename Rows>
void launch_gemv_stream(const Rows& rows, int n_x, int n_groups, const Epi& epi, cudaStream_t stream) {
  auto kernel = gemv_stream_kernel<K, MT, R, Epi, Rows>;
  static const int resident = resident_ctas(kernel);
  const int grid = resident < n_groups ? resident : n_groups;
  launch_pdl(kernel, dim3(grid), dim3(kStreamWarps * 32), 0, stream, rows, n_x, n_groups, epi);
}

// One activation row (batch-1 decode), a warp per group: warp-major persistent grid over groups of R rows, each
// warp dots whole rows (lane = 16-byte vectors lane, lane + 32, ...; all R x VPL weight vectors of a group in
// flight at once: 148-180 registers at K = 2880, R = 2, so one CTA of 8 warps per SM; capped at two per SM the
// registers spilled) against the row staged in shared memory as fp32, reduces with shuffles and finishes the
// group in lane 0: no CTA barrier per group. (gemv_stream_kernel's per-group barrier held 38% of q/k/v's warp
// stall samples at batch 1: ncu, H100.) The prologue is the same Rows::load as gemv_stream_kernel (8 warp
// slices, bit for bit the same activations), dumped to shared memory once. Launch: launch_gemv_warp.
template <int K, int R, typename Epi, typename Rows>
__global__ void __launch_bounds__(kStreamWarps * 32, 1)
    gemv_warp_kernel(Rows rows, int n_groups, Epi epi, int pre_rows) {
  using S = StreamShape<K>;
  constexpr int NV = K / 8, VPL = (NV + 31) / 32;
  __shared__ float4 s_xa[NV], s_xb[NV];  // elements 8v..8v+3 / 8v+4..8v+7 of the row, fp32
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto load_group = [&](int g, uint4 (&w)[R][VPL], int r0 = 0, int r1 = R) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < r0 || r >= r1) continue;
      const bf16_t* row = epi.row(g, r);
#pragma unroll
      for (int i = 0; i < VPL; ++i) {
        const int v = lane + 32 * i;
        w[r][i] = (NV % 32 == 0 || v < NV) ? ldg_stream(row + v * 8) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  const int stride = gridDim.x * kStreamWarps;
  int g = warp * gridDim.x + blockIdx.x;
  uint4 w[R][VPL];
  const typename Rows::Pre rows_pre = rows.before_wait(1);  // (small, first in the queue)
  if (g < n_groups) load_group(g, w, 0, pre_rows);  // in flight while the previous kernel drains
  griddep_wait();
  griddep_launch_dependents();
  {
    float4 xa[1][S::PER_LANE], xb[1][S::PER_LANE];
    rows.load(1, rows_pre, xa, xb);
    if (pre_rows < R && g < n_groups) load_group(g, w, pre_rows, R);
#pragma unroll
    for (int i = 0; i < S::PER_LANE; ++i) {
      const int v = lane + 32 * i;
      if (S::NV % 32 == 0 || v < S::NV) s_xa[warp * S::NV + v] = xa[0][i], s_xb[warp * S::NV + v] = xb[0][i];
    }
  }
  __syncthreads();
  while (g < n_groups) {
    typename Epi::Pre pre{};
    if (lane == 0) pre = epi.prefetch(g, 0);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float a = 0.f;
#pragma unroll
      for (int i = 0; i < VPL; ++i) {
        const int v = lane + 32 * i;
        if (NV % 32 == 0 || v < NV) a = dot8(w[r][i], s_xa[v], s_xb[v], a);
      }
      acc[r] = a;
    }
    const int gn = g + stride;
    if (gn < n_groups) load_group(gn, w);  // the next group's loads overlap this one's reduction and epilogue
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) epi.finish(g, 0, acc, pre);
    g = gn;
  }
  epi.after(1);
}

// Launches gemv_warp_kernel on the CTAs that fit on the device at once (capped by the groups' warps). pre_rows
// (0..R): rows of each warp's first group requested before griddep_wait; the rest follow Rows::load's loads.
template <int K, int R, typename Epi, typename Rows>
void launch_gemv_warp(const Rows& rows, int n_groups, const Epi& epi, cudaStream_t stream, int pre_rows = R) {
  auto kernel = gemv_warp_kernel<K, R, Epi, Rows>;
  static const int resident = resident_ctas(kernel);
  const int need = (n_groups + kStreamWarps - 1) / kStreamWarps;
  launch_pdl(kernel, dim3(resident < need ? resident : need), dim3(kStreamWarps * 32), 0, stream, rows, n_groups, epi,
             pre_rows);
}

}  // namespace mxs::cuda
