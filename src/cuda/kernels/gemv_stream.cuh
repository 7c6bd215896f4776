// Streaming bf16 GEMVs for 1-4 activation rows (batch-1..4 decode). gemv_stream_kernel: a persistent grid of CTAs
// walks groups of R output rows; warp w of a CTA owns the K-slice w of every row (K / 8 elements), so a lane holds
// its slice of the MT activation rows in registers (no shared-memory staging) and 2 x R x PER_LANE 16-byte weight
// loads in flight: the next group's weights are loaded before the current group is reduced. Partial dots meet in
// shared memory (double-buffered: one barrier per group) and thread m < MT finishes token m through the epilogue.
// Why: the register-resident design of gemv_core.cuh holds a whole row per warp (64 registers for K = 4096), so a
// 23.6 MB o_proj needed 1.4 waves of CTAs (19 us at batch 1, 1.2 TB/s); here the grid is one wave and every group
// is the same small piece of work. gemv_warp_kernel (below; q/k/v at one row): a warp per group.
#pragma once
#include <type_traits>

#include "cuda/cuda_check.h"
#include "cuda/kernels/bf12.cuh"
#include "cuda/kernels/cta_trace.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {

constexpr int kStreamWarps = 8;

// A barrier over warps 0-7 only (named barrier 1): what a Rows::load that reduces across its 8 slice warps syncs on,
// so that gemv_warp_kernel may run more warps than slices.
__device__ __forceinline__ void slice_warps_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kStreamWarps * 32) : "memory"); }

template <int K>
struct StreamShape {
  static_assert(K % (kStreamWarps * 8) == 0, "K must split into 8 slices of whole 16-byte vectors");
  static constexpr int KS = K / kStreamWarps;       // elements per warp slice
  static constexpr int NV = KS / 8;                 // 16-byte vectors per slice
  static constexpr int PER_LANE = (NV + 31) / 32;   // vectors per lane (lanes past NV hold zeros)
};

// Weight formats (W): how a lane loads vectors of 8 weights of a row and turns them into 8 bf16 (uint4, for dot8).
//   Vec, Hdr                      what a lane holds per vector / per row of a group
//   header(row)                   per-row data loaded with the weights
//   load<N, NV>(row, elem0, lane, out)   vectors v = lane + 32 i (i < N, v < NV) at elements elem0 + 8 v
//   decode(vec, hdr)              the 8 bf16 weights
//   correct(hdr, dot, x_at)       the row's dot after its format's corrections (x_at(col): the activation at col)
// Bf16Format: the weights as stored. Bf12Format: the lossless 12-bit copy (bf12.cuh), 25% fewer bytes; its
// exceptions need the activations in shared memory (kCorrections).
template <int K>
struct Bf16Format {
  const bf16_t* w;  // [N, K]
  using Vec = uint4;
  struct Hdr {};
  static constexpr bool kCorrections = false;
  __device__ Hdr header(size_t) const { return {}; }
  template <int N, int NV>
  __device__ void load(size_t row, int elem0, int lane, Vec (&out)[N]) const {
    const bf16_t* p = w + row * K + elem0;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int v = lane + 32 * i;
      out[i] = (NV % 32 == 0 || v < NV) ? ldg_stream(p + v * 8) : make_uint4(0, 0, 0, 0);
    }
  }
  __device__ uint4 decode(const Vec& v, const Hdr&) const { return v; }
  template <typename XAt>
  __device__ float correct(const Hdr&, float dot, XAt) const { return dot; }
};

template <int K>
struct Bf12Format {
  Bf12Weights w;  // [N, K] packed
  using Vec = Bf12Vec;
  using Hdr = Bf12Row;
  static constexpr bool kCorrections = true;
  __device__ Hdr header(size_t row) const { return bf12_row(w, row); }
  template <int N, int NV>
  __device__ void load(size_t row, int elem0, int lane, Vec (&out)[N]) const {
    const uint8_t* pb = w.bytes + row * K + elem0 + lane * 8;
    const uint32_t* pc = w.nibs + (row * K + elem0) / 8 + lane;
    unroll_for<N>([&](auto i) {
      if (NV % 32 == 0 || lane + 32 * int(i) < NV)
        out[i] = bf12_load<256 * int(i), 128 * int(i)>(pb, pc);
      else
        out[i] = Bf12Vec{make_uint2(0, 0), 0u};
    });
  }
  __device__ uint4 decode(const Vec& v, const Hdr& h) const { return bf12_decode(v, h.cword); }
  template <typename XAt>
  __device__ float correct(const Hdr& h, float dot, XAt x_at) const {
    return bf12_row_corrections(h, w.exc, dot, x_at);
  }
};

// Epi: struct with
//   __device__ size_t row_index(int g, int r) const;              weight row of the group's r-th row
//   struct Pre;                                                   epilogue inputs loaded ahead (bias, residual)
//   __device__ Pre prefetch(int g, int m) const;                  issued by thread m < MT at the top of the
//                                                                  group, so its loads overlap the dot products
//                                                                  (gemv_warp_kernel: lane 0, and for the warp's
//                                                                  first group before griddep_wait, so it may
//                                                                  read only step inputs and constants there)
//   __device__ void finish(int g, int m, const float (&v)[R], const Pre&) const;  the R dots of group g, token m
//   __device__ void after(int n_x) const;                         run by every thread at the end (e.g. a
//                                                                  last-CTA norm); may be empty
//   Optional (gemv_stream_kernel): struct Tok and __device__ Tok token(int m) const: token m's loop-invariant
//   epilogue inputs (e.g. its position and KV-cache block), loaded once by thread m before griddep_wait (step inputs
//   and constants only). With Tok, prefetch(g, m, tok) reads only constants and runs one group ahead (its Pre held
//   across a group; the first one before the wait), and the epilogue is finish(g, m, v, pre, tok): a finish then
//   waits on no load (the finishing threads are in warp 0, so a load chain in the finish held every warp at the next
//   group's barrier).
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

// Epi::kMinCtasPerSm where an Epi declares it: the CTAs per SM ptxas must allow (0, the default: no bound; an explicit
// 1 is not the same for ptxas: it gave o_proj's batch-1 GEMV 94 registers instead of 80, docs/PERF.md session 20).
template <typename Epi, typename = void>
struct EpiMinCtas {
  static constexpr int value = 0;
};
template <typename Epi>
struct EpiMinCtas<Epi, std::void_t<decltype(Epi::kMinCtasPerSm)>> {
  static constexpr int value = Epi::kMinCtasPerSm;
};

// Epi::Tok where an Epi declares it (see above), else an empty struct.
struct EpiNoTok {};
template <typename Epi, typename = void>
struct EpiTok {
  static constexpr bool value = false;
  using type = EpiNoTok;
};
template <typename Epi>
struct EpiTok<Epi, std::void_t<typename Epi::Tok>> {
  static constexpr bool value = true;
  using type = typename Epi::Tok;
};

template <int K, int MT, int R, typename Epi, typename Rows, typename W>
__global__ void __launch_bounds__(kStreamWarps * 32, EpiMinCtas<Epi>::value)
    gemv_stream_kernel(Rows rows, int n_x, int n_groups, Epi epi, W wf) {
  CtaTrace trace;  // (kTraceOProj: the batch-1 user of this kernel)
  using S = StreamShape<K>;
  using Vec = typename W::Vec;
  using Hdr = typename W::Hdr;
  __shared__ float s_part[2][kStreamWarps][R][MT];
  // The activations, for the format's corrections only: [MT][2][K / 8] float4 (gemv_core.cuh's staged layout).
  __shared__ float4 s_x[W::kCorrections ? MT * 2 * (K / 8) : 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto load_group = [&](int g, Vec (&wr)[R][S::PER_LANE], Hdr (&hd)[R]) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const size_t row = epi.row_index(g, r);
      hd[r] = wf.header(row);
      wf.template load<S::PER_LANE, S::NV>(row, warp * S::KS, lane, wr[r]);
    }
  };
  Vec wcur[R][S::PER_LANE], wnxt[R][S::PER_LANE];
  Hdr hcur[R], hnxt[R];
  int g = blockIdx.x;
  const typename Rows::Pre rows_pre = rows.before_wait(n_x);  // (small, first in the queue)
  if (g < n_groups) load_group(g, wcur, hcur);  // weights in flight while the previous kernel drains
  constexpr bool kTok = EpiTok<Epi>::value;
  const bool fin_thread = threadIdx.x < MT && int(threadIdx.x) < n_x;  // thread m finishes token m
  typename EpiTok<Epi>::type tok{};
  typename Epi::Pre pre_next{};  // (with Tok: the epilogue inputs of the thread's next group)
  if constexpr (kTok) {
    if (fin_thread) {
      tok = epi.token(threadIdx.x);
      if (g < n_groups) pre_next = epi.prefetch(g, threadIdx.x, tok);
    }
  }
  griddep_wait();
  trace.waited();
  griddep_launch_dependents();
  // This lane's slice of the activation rows, fp32: vector v = lane + 32 i of slice `warp`.
  float4 xa[MT][S::PER_LANE], xb[MT][S::PER_LANE];
  rows.load(n_x, rows_pre, xa, xb);
  if constexpr (W::kCorrections) {
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int i = 0; i < S::PER_LANE; ++i) {
        const int v = lane + 32 * i;
        if (S::NV % 32 == 0 || v < S::NV)
          s_x[(m * 2 + 0) * (K / 8) + warp * S::NV + v] = xa[m][i], s_x[(m * 2 + 1) * (K / 8) + warp * S::NV + v] = xb[m][i];
      }
  }
  int buf = 0;
  for (; g < n_groups; g += gridDim.x) {
    const int gn = g + gridDim.x;
    if (gn < n_groups) load_group(gn, wnxt, hnxt);
    typename Epi::Pre pre{};
    if constexpr (kTok) {
      pre = pre_next;
      if (fin_thread && gn < n_groups) pre_next = epi.prefetch(gn, threadIdx.x, tok);
    } else if (fin_thread) {
      pre = epi.prefetch(g, threadIdx.x);
    }
    float acc[R][MT];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        float a = 0.f;
#pragma unroll
        for (int i = 0; i < S::PER_LANE; ++i)
          if (S::NV % 32 == 0 || lane + 32 * i < S::NV) a = dot8(wf.decode(wcur[r][i], hcur[r]), xa[m][i], xb[m][i], a);
        acc[r][m] = warp_sum(a);
      }
    if (lane == 0)
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < MT; ++m) s_part[buf][warp][r][m] = acc[r][m];
    __syncthreads();
    if (fin_thread) {
      const int m = threadIdx.x;
      const float* xm = reinterpret_cast<const float*>(s_x + m * 2 * (K / 8));
      float v[R];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < kStreamWarps; ++w) s += s_part[buf][w][r][m];
        v[r] = wf.correct(hcur[r], s, [&](uint32_t col) { return xm[((col % 8) / 4 * (K / 8) + col / 8) * 4 + col % 4]; });
      }
      if constexpr (kTok)
        epi.finish(g, m, v, pre, tok);
      else
        epi.finish(g, m, v, pre);
    }
    buf ^= 1;
    if (gn < n_groups) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        hcur[r] = hnxt[r];
#pragma unroll
        for (int i = 0; i < S::PER_LANE; ++i) wcur[r][i] = wnxt[r][i];
      }
    }
  }
  epi.after(n_x);
  trace.end(kTraceOProj);
}

// The CTAs of `kernel` (kStreamWarps warps, no dynamic shared memory) that fit on the current device at once.
template <typename Kernel>
int resident_ctas(Kernel kernel, int threads = kStreamWarps * 32) {
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0));
  return current_device_sms() * (per_sm > 0 ? per_sm : 1);
}

// Launches gemv_stream_kernel on a persistent grid: the CTAs that fit on the device at once (capped by the
// group count), measured once per instantiation.
template <int K, int MT, int R, typename Epi, typename Rows, typename W>
void launch_gemv_stream(const Rows& rows, int n_x, int n_groups, const Epi& epi, const W& wf, cudaStream_t stream) {
  auto kernel = gemv_stream_kernel<K, MT, R, Epi, Rows, W>;
  static const int resident = resident_ctas(kernel);
  const int grid = resident < n_groups ? resident : n_groups;
  launch_pdl(kernel, dim3(grid), dim3(kStreamWarps * 32), 0, stream, rows, n_x, n_groups, epi, wf);
}

// One activation row (batch-1 decode), a warp per group: warp-major persistent grid over groups of R rows, each
// warp dots whole rows (lane = 16-byte vectors lane, lane + 32, ...; all R x VPL weight vectors of a group in
// flight at once: 148-180 registers at K = 2880, R = 2, so one CTA of 8 warps per SM; capped at two per SM the
// registers spilled) against the row staged in shared memory as fp32, reduces with shuffles and finishes the
// group in lane 0: no CTA barrier per group. (gemv_stream_kernel's per-group barrier held 38% of q/k/v's warp
// stall samples at batch 1: ncu, H100.) The prologue is the same Rows::load as gemv_stream_kernel (8 warp
// slices, bit for bit the same activations), dumped to shared memory once. Launch: launch_gemv_warp.
template <int K, int R, typename Epi, typename Rows, typename W, int WARPS = kStreamWarps>
__global__ void __launch_bounds__(WARPS * 32, 1)
    gemv_warp_kernel(Rows rows, int n_groups, Epi epi, W wf, int pre_rows) {
  CtaTrace trace;  // (kTraceQkv: the one user of this kernel)
  static_assert(WARPS >= kStreamWarps, "warps 0-7 run Rows::load (its 8 slices); more warps only add groups");
  using S = StreamShape<K>;
  using Vec = typename W::Vec;
  using Hdr = typename W::Hdr;
  constexpr int NV = K / 8, VPL = (NV + 31) / 32;
  __shared__ float4 s_xa[NV], s_xb[NV];  // elements 8v..8v+3 / 8v+4..8v+7 of the row, fp32
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  auto load_group = [&](int g, Vec (&w)[R][VPL], Hdr (&h)[R], int r0 = 0, int r1 = R) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < r0 || r >= r1) continue;
      const size_t row = epi.row_index(g, r);
      h[r] = wf.header(row);
      wf.template load<VPL, NV>(row, 0, lane, w[r]);
    }
  };
  const int stride = gridDim.x * WARPS;
  int g = warp * gridDim.x + blockIdx.x;
  Vec w[R][VPL];
  Hdr h[R];
  const bool slice_warp = warp < kStreamWarps;  // warps past 8 (WARPS > 8) skip the activation prologue
  typename Rows::Pre rows_pre{};
  if (slice_warp) rows_pre = rows.before_wait(1);  // (small, first in the queue)
  if (g < n_groups) load_group(g, w, h, 0, pre_rows);  // in flight while the previous kernel drains
  // Lane 0's epilogue inputs of the warp's current group, in shared memory (registers are the weights'); the first
  // group's before the wait (gemv_warp_kernel's Epi::prefetch reads only step inputs and constants).
  __shared__ typename Epi::Pre s_pre[WARPS];
  if (lane == 0 && g < n_groups) s_pre[warp] = epi.prefetch(g, 0);
  griddep_wait();
  trace.waited();
  griddep_launch_dependents();
  if (slice_warp) {
    float4 xa[1][S::PER_LANE], xb[1][S::PER_LANE];
    rows.load(1, rows_pre, xa, xb);  // (its barriers, if any, are over warps 0-7: kSliceBarrier)
    if (pre_rows < R && g < n_groups) load_group(g, w, h, pre_rows, R);
#pragma unroll
    for (int i = 0; i < S::PER_LANE; ++i) {
      const int v = lane + 32 * i;
      if (S::NV % 32 == 0 || v < S::NV) s_xa[warp * S::NV + v] = xa[0][i], s_xb[warp * S::NV + v] = xb[0][i];
    }
  } else if (pre_rows < R && g < n_groups) {
    load_group(g, w, h, pre_rows, R);
  }
  __syncthreads();
  trace.mark();  // (trace builds: the activation prologue's end)
  while (g < n_groups) {
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float a = 0.f;
#pragma unroll
      for (int i = 0; i < VPL; ++i) {
        const int v = lane + 32 * i;
        if (NV % 32 == 0 || v < NV) a = dot8(wf.decode(w[r][i], h[r]), s_xa[v], s_xb[v], a);
      }
      acc[r] = a;
    }
    Hdr hg[R];  // (this group's headers: the next group's replace h below)
#pragma unroll
    for (int r = 0; r < R; ++r) hg[r] = h[r];
    const int gn = g + stride;
    if (gn < n_groups) load_group(gn, w, h);  // the next group's loads overlap this one's reduction and epilogue
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = warp_sum(acc[r]);
    if (lane == 0) {
      const float* xa = reinterpret_cast<const float*>(s_xa);
      const float* xb = reinterpret_cast<const float*>(s_xb);
#pragma unroll
      for (int r = 0; r < R; ++r)
        acc[r] = wf.correct(hg[r], acc[r], [&](uint32_t col) { return (col % 8 < 4 ? xa : xb)[col / 8 * 4 + col % 4]; });
      epi.finish(g, 0, acc, s_pre[warp]);
      if (gn < n_groups) s_pre[warp] = epi.prefetch(gn, 0);  // while the next group's weights arrive
    }
    g = gn;
  }
  epi.after(1);
#ifdef MXS_CTA_TRACE
  __syncthreads();  // (trace builds: the CTA's end is its last warp's)
#endif
  trace.end(kTraceQkv);
}

// Launches gemv_warp_kernel on the CTAs that fit on the device at once (capped by the groups' warps). pre_rows
// (0..R): rows of each warp's first group requested before griddep_wait; the rest follow Rows::load's loads.
template <int K, int R, int WARPS = kStreamWarps, typename Epi, typename Rows, typename W>
void launch_gemv_warp(const Rows& rows, int n_groups, const Epi& epi, const W& wf, cudaStream_t stream,
                      int pre_rows = R) {
  auto kernel = gemv_warp_kernel<K, R, Epi, Rows, W, WARPS>;
  static const int resident = resident_ctas(kernel, WARPS * 32);
  const int need = (n_groups + WARPS - 1) / WARPS;
  launch_pdl(kernel, dim3(resident < need ? resident : need), dim3(WARPS * 32), 0, stream, rows, n_groups, epi,
             wf, pre_rows);
}

}  // namespace mxs::cuda
