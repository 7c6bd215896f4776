// Greedy LM head by screening (see lm_head_screen.h for the bound and why the argmax is exact).
#include "cuda/kernels/lm_head_screen.h"

#include <cfloat>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/gemv_stream.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;
// The activations are quantized to x16 = round(x / sx) in [-32639, 32639] = hi * 256 + lo with hi, lo in
// [-128, 127] (32639 = 127 * 256 + 127 keeps hi in int8), so a dot is two exact int32 sums.
constexpr float kX16Max = 32639.f;

// Byte offset of W[row][col] in the tiled layout (lm_head_screen.h): tile (row / 16, col / 32) of 512 bytes, lane
// g * 4 + t = (row % 8) * 4 + (col % 16) / 4 holds its m16n8k32 A registers a0..a3 = (row % 16 < 8 ? 0 : 1) +
// (col % 32 < 16 ? 0 : 2), 4 consecutive columns each.
__host__ __device__ constexpr size_t screen_offset(int row, int col, int k) {
  const int kt = col / 32, kk = col % 32, rr = row % 16;
  const int lane = (rr % 8) * 4 + (kk % 16) / 4, reg = rr / 8 + 2 * (kk / 16);
  return (size_t(row / 16) * (k / 32) + kt) * 512 + size_t(lane) * 16 + reg * 4 + kk % 4;
}

// ---- packing ----------------------------------------------------------------------------------------------------

// Warp per row (rows n_out.. of the last 16-row block are zero rows): scale = max |w| / 127, q = round(w / scale),
// written 4 columns (one A register) at a time; err and l1 are rounded up past what the fp32 arithmetic here can
// lose (relative 2^-22), so they bound the real-number quantities the screen's bound is made of.
__global__ void pack_lm_screen_kernel(const bf16_t* w, int n_out, int k, int8_t* q, float4* rows) {
  const int lane = threadIdx.x & 31;
  const int row = blockIdx.x * (blockDim.x / 32) + int(threadIdx.x >> 5);
  if (row >= (n_out + 15) / 16 * 16) return;
  const bf16_t* src = w + size_t(min(row, n_out - 1)) * k;
  const bool real = row < n_out;
  float amax = 0.f;
  bool finite = true;
  for (int i = lane; i < k && real; i += 32) {
    const float v = to_f32(src[i]);
    finite &= isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
  amax = warp_max(amax);
  // A non-finite row is never screened out: the exact pass decides.
  const bool zero = !real || !__all_sync(0xffffffffu, finite);
  const float scale = amax / 127.f, inv = amax > 0.f && !zero ? 127.f / amax : 0.f;
  float err = 0.f, l1 = 0.f;
  for (int c4 = lane; c4 < k / 4; c4 += 32) {
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float v = zero ? 0.f : to_f32(src[4 * c4 + e]);
      const int qi = max(-127, min(127, __float2int_rn(v * inv)));
      word |= uint32_t(qi & 0xff) << (8 * e);
      err = fmaxf(err, fabsf(v - float(qi) * scale));
      l1 += float(abs(qi));  // an integer < 2^24: exact
    }
    *reinterpret_cast<uint32_t*>(q + screen_offset(row, 4 * c4, k)) = word;
  }
  err = warp_max(err);
  l1 = warp_sum(l1);
  if (lane != 0) return;
  if (!real)
    rows[row] = make_float4(0.f, 0.f, 0.f, 0.f);
  else if (zero)
    rows[row] = make_float4(0.f, INFINITY, INFINITY, 0.f);
  else
    rows[row] = make_float4(scale, err * (1.f + 0x1p-20f) + amax * 0x1p-22f, l1 * scale * (1.f + 0x1p-20f), 0.f);
}

// ---- the screen: int8 tensor-core GEMV with bounds -------------------------------------------------------------

// d += A (16 x 32 int8, row) * B (32 x 8 int8, col), exact int32.
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint4& a, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a.x), "r"(a.y), "r"(a.z), "r"(a.w), "r"(b0), "r"(b1));
}

// K-parts per 16-row block. At 1-2 rows, four warps per block, each a quarter of K, sum their exact partials in
// shared memory: with the whole K per warp (46 KB for 2880) the last wave of long-running warps left the SMs unevenly
// busy (H200, 20b batch 1 graph 1.335 ms vs 1.325 in parts; batch 2 2.195 vs 2.178-2.187). From 3 rows the per-CTA
// prologue (every token's statistics and quantization) wants the longer CTAs: batch 8 3.102-3.118 whole vs
// 3.208-3.229 ms in parts (exp129 / exp130).
template <int K, int MT>
constexpr int screen_k_parts() {
  return K / 32 >= 32 && MT <= 2 ? 4 : 1;
}
template <int K, int MT>
constexpr int screen_rows_per_cta() {
  return kWarps / screen_k_parts<K, MT>() * 16;
}

// Warp = one 16-row block and K-part, streamed over its 32-column tiles (one 16-byte A fragment per lane each)
// through an 8-deep register ring, the first 8 requested before griddep_wait. Every CTA derives the activation rows'
// max, L1 norm and 16-bit quantization itself (the same order in every CTA) and stages them as int8 planes in shared
// memory: B column n = 2 m + 0 / 1 is token m's hi / lo plane, so one mma per k-tile covers 4 tokens (two n-tiles:
// 8), and lane (g, t) ends with the exact hi and lo sums of rows g and g + 8 for token 4 nt + t: no warp reduction.
template <int K, int MT>
__global__ void __launch_bounds__(kThreads) lm_head_screen_kernel(LmScreenParams p) {
  static_assert(MT >= 1 && MT <= kLmScreenMaxRows && K % 32 == 0, "1-8 activation rows, K a multiple of 32");
  constexpr int KT = K / 32, KS = screen_k_parts<K, MT>(), KTP = (KT + KS - 1) / KS, RING = KTP < 8 ? KTP : 8;
  constexpr int NT = (2 * MT + 7) / 8, NPL = 8 * NT;     // n-tiles, int8 planes
  constexpr int STRIDE = K + 16;                         // plane stride: the 8 g rows of a B load hit 8 bank groups
  constexpr int NC = K / 8, CPT = (NC + kThreads - 1) / kThreads;  // 8-element activation chunks per thread
  __shared__ __align__(16) int8_t s_q[NPL * STRIDE];
  __shared__ float s_amax[kWarps][MT], s_l1[kWarps][MT], s_sx[MT], s_norm1[MT];
  __shared__ unsigned s_lower[MT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rb = blockIdx.x * (kWarps / KS) + warp / KS, kp = warp % KS;
  const int kt_begin = kp * KTP, kt_end = min(KT, kt_begin + KTP);
  const bool active = rb < (p.n_out + 15) / 16;
  const uint4* src = reinterpret_cast<const uint4*>(p.screen.q) + (size_t(active ? rb : 0) * KT + kt_begin) * 32 + lane;
  uint4 ring[RING];
  float4 meta[2];
  if (active) {
#pragma unroll
    for (int j = 0; j < RING; ++j)
      if (kt_begin + j < kt_end) ring[j] = ldg_stream(src + j * 32);
    meta[0] = __ldg(p.screen.rows + rb * 16 + g);
    meta[1] = __ldg(p.screen.rows + rb * 16 + g + 8);
  }
  griddep_wait();
  griddep_launch_dependents();

  // Activation statistics: |x|max and |x|_1 per token (fp32, the same order in every CTA). The chunks are loaded
  // again (from L1) for the quantization rather than held in registers across the barrier.
  const bf16_t* a = static_cast<const bf16_t*>(p.a);
  auto chunk = [&](int m, int c) {
    const int row = m < p.n_rows ? (p.src_rows ? p.src_rows[m] : m) : -1, ch = threadIdx.x + c * kThreads;
    return row >= 0 && ch < NC ? *reinterpret_cast<const uint4*>(a + size_t(row) * K + size_t(ch) * 8)
                               : make_uint4(0, 0, 0, 0);
  };
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float amax = 0.f, l1 = 0.f;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const uint4 r = chunk(m, c);
      const uint32_t u[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float lo = fabsf(lo_f32(u[e])), hi = fabsf(hi_f32(u[e]));
        amax = fmaxf(amax, fmaxf(lo, hi));
        l1 += lo + hi;
      }
    }
    amax = warp_max(amax);
    l1 = warp_sum(l1);
    if (lane == 0) s_amax[warp][m] = amax, s_l1[warp][m] = l1;
  }
  if (threadIdx.x < MT) s_lower[threadIdx.x] = 0u;
  // Planes past the tokens' 2 * MT are zero columns of B.
  for (int i = threadIdx.x; i < (NPL - 2 * MT) * (K / 8); i += kThreads)
    *reinterpret_cast<uint2*>(&s_q[(2 * MT + i / (K / 8)) * STRIDE + (i % (K / 8)) * 8]) = make_uint2(0, 0);
  __syncthreads();
#pragma unroll
  for (int m = 0; m < MT; ++m) {
    float amax = 0.f, l1 = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) amax = fmaxf(amax, s_amax[w][m]), l1 += s_l1[w][m];
    const float sx = amax / kX16Max, inv = amax > 0.f ? kX16Max / amax : 0.f;
    if (threadIdx.x == 0) s_sx[m] = sx, s_norm1[m] = l1;
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int ch = threadIdx.x + c * kThreads;
      if (ch >= NC) continue;
      const uint4 r = chunk(m, c);
      const uint32_t u[4] = {r.x, r.y, r.z, r.w};
      uint32_t hw[2] = {0, 0}, lw[2] = {0, 0};
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const float x = (e & 1) ? hi_f32(u[e / 2]) : lo_f32(u[e / 2]);
        // (a non-finite x gives garbage here and a non-finite bound below: every row is then a candidate)
        const int x16 = max(-int(kX16Max), min(int(kX16Max), __float2int_rn(x * inv)));
        const int hi = (x16 + 128) >> 8, lo = x16 - hi * 256;
        hw[e / 4] |= uint32_t(hi & 0xff) << (8 * (e % 4));
        lw[e / 4] |= uint32_t(lo & 0xff) << (8 * (e % 4));
      }
      *reinterpret_cast<uint2*>(&s_q[(2 * m) * STRIDE + ch * 8]) = make_uint2(hw[0], hw[1]);
      *reinterpret_cast<uint2*>(&s_q[(2 * m + 1) * STRIDE + ch * 8]) = make_uint2(lw[0], lw[1]);
    }
  }
  __syncthreads();

  int acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0;
  if (active) {
    const int8_t* bq = s_q + g * STRIDE + 4 * t;  // B fragment: column g of the n-tile, k = 4 t.. and 16 + 4 t..
    for (int kt0 = kt_begin; kt0 < kt_end; kt0 += RING) {
#pragma unroll
      for (int j = 0; j < RING; ++j) {
        const int kt = kt0 + j;
        if (kt >= kt_end) break;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const int8_t* b = bq + nt * 8 * STRIDE + kt * 32;
          mma_s8(acc[nt], ring[j], *reinterpret_cast<const uint32_t*>(b), *reinterpret_cast<const uint32_t*>(b + 16));
        }
        if (kt + RING < kt_end) ring[j] = ldg_stream(src + (kt - kt_begin + RING) * 32);
      }
    }
  }
  if constexpr (KS > 1) {  // K-parts 1.. hand their exact partial sums to part 0 (integers: any order), in s_q's place
    static_assert(kWarps * NT * 4 * 32 * 4 <= NPL * STRIDE, "the partials fit where the planes were");
    int* s_part = reinterpret_cast<int*>(s_q);  // [warp][nt][4][32]
    __syncthreads();                            // (every warp is done with the planes)
    if (kp != 0)
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int r = 0; r < 4; ++r) s_part[((warp * NT + nt) * 4 + r) * 32 + lane] = acc[nt][r];
    __syncthreads();
    if (kp == 0)
#pragma unroll
      for (int q = 1; q < KS; ++q)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int r = 0; r < 4; ++r) acc[nt][r] += s_part[(((warp + q) * NT + nt) * 4 + r) * 32 + lane];
  }
  if (active && kp == 0) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int m = 4 * nt + t;  // acc[nt] = (hi, lo) of rows g, g + 8 for token m
      if (m >= p.n_rows) continue;
      const float sx = s_sx[m], l1 = s_norm1[m];
      const float ex = 0.52f * sx;  // >= max |x - x16 * sx| (0.5 sx + the fp32 error of x * inv)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = rb * 16 + g + 8 * h;
        if (row >= p.n_out) continue;
        const float scale = meta[h].x, err = meta[h].y, wl1 = meta[h].z;
        const double dot = 256.0 * double(acc[nt][2 * h]) + double(acc[nt][2 * h + 1]);  // exact
        const float approx = float(dot * double(scale) * double(sx));
        // err |x|_1 + l1 ex: the two quantizations; |approx| 2^-7 and the factor: the exact logit's bf16 rounding
        // (2^-9 relative) and this float arithmetic; (max |w|) |x|_1 2^-11: the exact dot's fp32 summation
        // (<= ~100 roundings of 2^-24 along a lane's chain and the warp tree).
        float b = (err * l1 + wl1 * ex) * (1.f + 0x1p-8f) + fabsf(approx) * 0x1p-7f +
                  (127.f * scale + err) * l1 * 0x1p-11f;
        b *= 1.f + 0x1p-10f;
        float up = __fadd_ru(approx, b), lo = __fsub_rd(approx, b);
        if (!(fabsf(up) <= FLT_MAX) || !(fabsf(lo) <= FLT_MAX)) up = INFINITY, lo = -INFINITY;  // inf / NaN
        p.upper[size_t(m) * p.n_out + row] = up;
        atomicMax(&s_lower[m], orderable_bits(lo));
      }
    }
  }
  __syncthreads();
  if (threadIdx.x < MT && int(threadIdx.x) < p.n_rows) atomicMax(&p.lower_max[threadIdx.x], s_lower[threadIdx.x]);
}

// ---- the exact pass over the candidates ---------------------------------------------------------------------------

constexpr int kListCap = 512;  // candidates per CTA and round (more: another round)
constexpr int kPerThread = 16;  // upper entries per thread and round (loads in flight at once)

// One CTA per SM. Every thread compares kPerThread uppers per round with its token's T; candidates go to a shared
// list that the warps recompute one row each, exactly as gemv_bf16_kernel<K, MT, kStore, W> computes that row
// (dot_vecs' order, the format's exception corrections, bf16 rounding), then fold into row_argmax.
template <int K, int MT, typename W>
__global__ void __launch_bounds__(kThreads) lm_head_finish_kernel(LmScreenParams p, W wf) {
  constexpr int NV8 = K / 8, PER_LANE = (NV8 + 31) / 32;
  extern __shared__ float4 s_x[];  // [MT][2][K / 8] (gemv_core.cuh layout)
  __shared__ uint32_t s_list[kListCap];
  __shared__ int s_count;
  __shared__ float s_t[MT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // The activations are the output of the kernel before the screen: loadable before the wait (pdl.cuh).
  stage_rows_f32<K, MT>(s_x, static_cast<const bf16_t*>(p.a), p.n_rows,
                        [&](int m) { return p.src_rows ? p.src_rows[m] : m; });
  griddep_wait();
  griddep_launch_dependents();
  if (threadIdx.x < MT) {
    const uint32_t key = int(threadIdx.x) < p.n_rows ? __ldcg(&p.lower_max[threadIdx.x]) : 0u;
    s_t[threadIdx.x] = key == 0u ? -INFINITY : from_orderable_bits(key);
  }
  if (threadIdx.x == 0) s_count = 0;
  // Every CTA has read its T (above, before the barrier inside): the last one clears them for the next launch.
  if (last_cta_arrive(p.done_counter, gridDim.x) && threadIdx.x == 0) {
    for (int m = 0; m < p.n_rows; ++m) p.lower_max[m] = 0u;
    *p.done_counter = 0u;
  }

  const int total = p.n_rows * p.n_out, stride = gridDim.x * kThreads;
  bf16_t* y = static_cast<bf16_t*>(p.y);
  auto exact = [&](uint32_t idx) {  // the whole warp
    const int m = int(idx / uint32_t(p.n_out)), row = int(idx % uint32_t(p.n_out));
    typename W::Vec wv[PER_LANE];
    const typename W::Hdr hdr = wf.header(size_t(row));
    wf.template load<PER_LANE, NV8>(size_t(row), 0, lane, wv);
    float acc[1][1];
    dot_vecs<K, 1, 1>(
        [&](int, int i) {
          const bool in = NV8 % 32 == 0 || lane + 32 * i < NV8;
          return in ? wf.decode(wv[i], hdr) : make_uint4(0, 0, 0, 0);
        },
        s_x + m * 2 * NV8, acc);
    if (lane == 0) {
      const float dot = wf.correct(hdr, acc[0][0], [&](uint32_t col) { return staged_element<K>(s_x, m, col); });
      const bf16_t v = to_bf16(dot);
      y[size_t(m) * p.n_out + row] = v;
      atomicMax(&p.row_argmax[m], argmax_key(to_f32(v), row));
      if (p.n_candidates) atomicAdd(&p.n_candidates[m], 1u);
    }
  };
  const int first = blockIdx.x * kThreads + int(threadIdx.x);
  for (int base = first; __syncthreads_or(base < total); base += kPerThread * stride) {
    float up[kPerThread];
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) {
      const int idx = base + e * stride;
      up[e] = idx < total ? __ldcg(p.upper + idx) : -INFINITY;
    }
    uint32_t pending = 0;
#pragma unroll
    for (int e = 0; e < kPerThread; ++e) {
      const int idx = base + e * stride;
      if (idx < total && up[e] >= s_t[idx / p.n_out]) pending |= 1u << e;
    }
    // Rounds of at most kListCap candidates per CTA until none is left.
    while (__syncthreads_or(pending != 0u)) {
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        if (!(pending >> e & 1u)) continue;
        const int slot = atomicAdd(&s_count, 1);
        if (slot >= kListCap) break;
        s_list[slot] = uint32_t(base + e * stride);
        pending &= ~(1u << e);
      }
      __syncthreads();
      const int n = min(s_count, kListCap);
      for (int c = warp; c < n; c += kWarps) exact(s_list[c]);
      __syncthreads();
      if (threadIdx.x == 0) s_count = 0;
    }
  }
}

template <int K, int MT, typename W>
void launch_finish(const LmScreenParams& p, const W& wf, cudaStream_t stream) {
  static const int n_sms = [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  constexpr int smem = staged_bytes<K, MT>();
  static const bool smem_ok = (allow_smem(lm_head_finish_kernel<K, MT, W>, smem), true);
  (void)smem_ok;
  launch_pdl(lm_head_finish_kernel<K, MT, W>, dim3(n_sms), dim3(kThreads), smem, stream, p, wf);
  CUDA_CHECK_LAUNCH();
}

template <int K, int MT>
void launch(const LmScreenParams& p, cudaStream_t stream) {
  constexpr int rows_per_cta = screen_rows_per_cta<K, MT>();
  launch_pdl(lm_head_screen_kernel<K, MT>, dim3((p.n_out + rows_per_cta - 1) / rows_per_cta), dim3(kThreads), 0,
             stream, p);
  CUDA_CHECK_LAUNCH();
  if (p.w_bf12.bytes != nullptr)
    launch_finish<K, MT>(p, Bf12Format<K>{p.w_bf12}, stream);
  else
    launch_finish<K, MT>(p, Bf16Format<K>{static_cast<const bf16_t*>(p.w)}, stream);
}

// 1, 2, 4 or 8 staged rows (the screen's mma covers 4 tokens per n-tile either way).
template <int K>
void dispatch_rows(const LmScreenParams& p, cudaStream_t stream) {
  if (p.n_rows == 1) return launch<K, 1>(p, stream);
  if (p.n_rows == 2) return launch<K, 2>(p, stream);
  if (p.n_rows <= 4) return launch<K, 4>(p, stream);
  launch<K, 8>(p, stream);
}

}  // namespace

size_t lm_screen_rows(int n_out) { return (size_t(n_out) + 15) / 16 * 16; }

void pack_lm_screen(const void* w, int n_out, int k, int8_t* q, float4* rows, cudaStream_t stream) {
  MXS_CHECK(n_out >= 1 && k >= 32 && k % 32 == 0,
            strfmt("pack_lm_screen: n_out = %d, k = %d (k: a multiple of 32)", n_out, k));
  constexpr int warps = 8;
  const int n_rows = int(lm_screen_rows(n_out));
  pack_lm_screen_kernel<<<(n_rows + warps - 1) / warps, warps * 32, 0, stream>>>(static_cast<const bf16_t*>(w), n_out,
                                                                                k, q, rows);
  CUDA_CHECK_LAUNCH();
}

size_t lm_screen_offset(int row, int col, int k) { return screen_offset(row, col, k); }

void lm_head_screen(const LmScreenParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_rows >= 1 && p.n_rows <= kLmScreenMaxRows && p.n_out >= 1,
            strfmt("lm_head_screen: n_rows = %d (1..%d), n_out = %d", p.n_rows, kLmScreenMaxRows, p.n_out));
  MXS_CHECK(p.screen.q && p.screen.rows && (p.w || p.w_bf12.bytes) && p.y && p.row_argmax && p.upper && p.lower_max &&
                p.done_counter,
            "lm_head_screen: screen weights, exact weights, y, row_argmax and the workspaces are required");
  MXS_CHECK(int64_t(p.n_rows) * p.n_out < (int64_t(1) << 31), "lm_head_screen: n_rows * n_out must fit in int32");
  switch (p.k) {
    case 2880: return dispatch_rows<2880>(p, stream);
    case 64: return dispatch_rows<64>(p, stream);
    default: throw Error(strfmt("lm_head_screen: k = %d is not supported (supported: 2880, 64)", p.k));
  }
}

}  // namespace mxs::cuda
