// MXFP4 expert GEMVs on the packed layout (see moe_gemv_mxfp4.h, moe_gemm_pack.h).
// CTA = 4 warps = one 64-row group of one active expert over one K piece of KTP k-tiles (64 k each). In the
// packed layout the piece's nibbles are KTP contiguous 2 KB k-tiles and its scales KTP contiguous 128-byte
// words, so lanes 0..KTP-1 of warp 0 issue one bulk copy per k-tile (each on its own mbarrier: the warps start
// on k-tile 0 while the rest stream in) right at CTA start (one-token down: 2 before griddepcontrol.wait, the rest
// behind its act load); up to 10 CTAs per SM keep ~200 KB per SM in flight. The LDG variant (one-token gate_up of
// big_scales layers) has each thread load its own 16 bytes + scale word of every k-tile straight into registers
// instead (no barriers, no shared staging of weights).
// Warp w owns rows 16 w .. 16 w + 15 of the group: per k-tile a lane takes its 16 bytes and its scale word,
// moe_pack_dequant gives the mma.sync A fragments of 4 k16 steps (fragment row g = weight
// row 16 w + 2 g, row g + 8 = 16 w + 2 g + 1), and B = the staged activations of up to 8 pairs (column n =
// pair m0 + n). Accumulators: D (row g, pairs 2c, 2c + 1), (row g + 8, pairs 2c, 2c + 1), i.e. a lane ends
// with both rows of its row pair (gate/up, or two adjacent outputs).
// The piece's fp32 partials go to `partials` [R/64 groups][NP pieces][P pairs by sorted position][64 rows];
// the last CTA of (expert, group) (arrival counter) sums the NP pieces in order (deterministic) and runs
// store_pair. The whole-K kernels further down (moe_gemv_gate_up_one_kernel: one-token gate_up;
// moe_gemv_rows_whole_kernel: 2+ tokens) keep that sum order within one CTA and replaced this kernel wherever
// they measured faster (dispatch()); it stays for one-token down and for big_scales layers.
#include "cuda/kernels/moe_gemv_mxfp4.h"

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/bulk_copy.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/mma_bf16.cuh"
#include "cuda/kernels/moe_pack_dequant.cuh"
#include "cuda/kernels/cta_trace.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {

MXS_CTA_TRACE_BINDER(moe_gemv_mxfp4)
namespace {

enum class Which { kGateUp, kDown };

// The epilogue's inputs besides the dots for output pair `unit` (rows 2 unit, 2 unit + 1 of expert e; `bias`
// already offset to e) of pair `pid`: the two biases and (down) the pair's routing weight.
struct PairIn {
  float b0, b1, rw;
};
template <Which W>
__device__ __forceinline__ PairIn pair_inputs(const MoeGemvParams& p, const bf16_t* bias, int pid, int unit) {
  return {to_f32(bias[2 * unit]), to_f32(bias[2 * unit + 1]), W == Which::kDown ? p.topk_w[pid] : 0.f};
}

// Epilogue of one output pair for pair `pid`, from the fp32 dots of its two rows: gate_up -> bias + clamped SwiGLU
// into act, down -> bias + routing weight into yw (the rounding points of moe_gemv_mxfp4.h).
template <Which W, int N_PAIRS>
__device__ __forceinline__ void store_pair(const MoeGemvParams& p, int pid, int unit, float acc0, float acc1,
                                           const PairIn& in) {
  const float v0 = bf(bf(acc0) + in.b0);
  const float v1 = bf(bf(acc1) + in.b1);
  if constexpr (W == Which::kGateUp) {
    const float g = fminf(v0, p.swiglu_limit);
    const float u = fminf(fmaxf(v1, -p.swiglu_limit), p.swiglu_limit);
    const float ga = bf(g * p.swiglu_alpha);
    const float sig = bf(1.0f / (1.0f + expf(-ga)));
    const float glu = bf(g * sig);
    static_cast<bf16_t*>(p.act)[size_t(pid) * N_PAIRS + unit] = to_bf16(bf(u + 1.0f) * glu);
  } else {
    const float rw = in.rw;
    bf16_t* y = static_cast<bf16_t*>(p.yw) + size_t(pid) * (2 * N_PAIRS) + 2 * unit;
    y[0] = to_bf16(v0 * rw);
    y[1] = to_bf16(v1 * rw);
  }
}

constexpr int kThreads = 128;
constexpr int kMaxPieceKtiles = 9;  // 45 k-tiles of K = 2880 -> 5 pieces of 9 (19.6 KB of weights per CTA)
// One token, down: k-tiles of the piece requested before griddep_wait (the rest follow the act load). H100, 20b,
// batch 1 (session 14): 9 -> 4 took a step from 1.929-1.941 to 1.910-1.926 ms (sweep 7 / 5 / 3 / 2 / 1: 1.911-1.928
// / 1.910-1.927 / 1.910-1.941 / 1.916-1.926 / 1.927-1.950).
constexpr int kDownPreKtiles = 4;
// The same for one-token down on bulk copies (the default since session 16): H100, same call, ms per batch-1 step,
// pre 0 / 1 / 2 / 3 / 4 / 9: 20b 1.908-1.916 / 1.841-1.855 / 1.833-1.847 / 1.837-1.841 / 1.867-1.869 / 1.943-1.951.
constexpr int kDownBulkPreKtiles = 2;

// K-tiles per piece: the largest divisor of the k-tile count <= kMaxPieceKtiles (pieces of equal size).
constexpr int piece_ktiles(int kt) {
  for (int d = kMaxPieceKtiles; d > 1; --d)
    if (kt % d == 0) return d;
  return 1;
}

template <int K, int ROWS>
struct Shape {
  static constexpr int KT = K / 64, KTP = piece_ktiles(KT), NP = KT / KTP, KW = KTP * 64;
  static constexpr int SX = KW + 8;  // staged row stride (elements): consecutive rows 16 bytes apart mod 128, so
                                     // the 16-byte B loads of lanes (g, c) (row g, bytes 32 c..) never collide
  static constexpr int kSmem = KTP * 2048 + KTP * 128 + ROWS * SX * 2 + KTP * 8;
};

// Shared by the kernels below. Stores 16-byte vector v of a row (elements 8 v .. 8 v + 7) into the staged
// row at `row`: within each k-tile (32 bf16x2 words w), word w sits at 8 (w % 4) + 2 (w / 8) + (w / 4) % 2, so the
// 8 B words of lane c (k16 step s: words 8 s + c and 8 s + c + 4) are 32 contiguous bytes.
__device__ __forceinline__ void stage_vector(bf16_t* row, int v, const uint4& val) {
  uint32_t* dst = reinterpret_cast<uint32_t*>(row + (v / 8) * 64);
  const int w0 = (v % 8) * 4, base = 2 * (w0 / 8) + (w0 / 4) % 2;
  dst[base] = val.x, dst[8 + base] = val.y, dst[16 + base] = val.z, dst[24 + base] = val.w;
}

// One k-tile: B from the staged row at xb (lane c's 32 bytes of the k-tile), this thread's 16 bytes + scale word
// dequantized into the A fragments of 4 k16 steps; even steps accumulate into acc[0], odd ones into acc[1].
template <bool BIG>
__device__ __forceinline__ void ktile_mma(const uint4& q, uint32_t sw, const bf16_t* xb, float (&acc)[2][4]) {
  const uint4 b01 = *reinterpret_cast<const uint4*>(xb);      // steps 0, 1: (b0, b1) x 2
  const uint4 b23 = *reinterpret_cast<const uint4*>(xb + 8);  // steps 2, 3
  uint32_t a[4][4];
  moe_pack_dequant<BIG>(q, sw, a);
  mma_bf16(acc[0], a[0], b01.x, b01.y);
  mma_bf16(acc[1], a[1], b01.z, b01.w);
  mma_bf16(acc[0], a[2], b23.x, b23.y);
  mma_bf16(acc[1], a[3], b23.z, b23.w);
}

// grid: (R / 64 groups, NP pieces, active expert slots). ROWS: staged pairs per tile (1: a single token, every
// B column is pair m0 and only column 0 is stored; 8: tiles of 8 pairs).
// BIG: the layer has scale bytes > 128 (MoeGemmWeights::big_scales; moe_pack_dequant.cuh).
template <Which W, int K, int R, int ROWS, bool LDG, bool BIG>
__global__ void __launch_bounds__(kThreads, LDG ? 5 : W == Which::kDown ? 7 : 8)
    moe_gemv_mxfp4_kernel(MoeGemvParams p, int pre_ktiles, int epi_early) {
  CtaTrace trace;
  constexpr uint32_t kTraceId = W == Which::kGateUp ? kTraceGateUp : kTraceDown;
  using S = Shape<K, ROWS>;
  constexpr int KTP = S::KTP, NP = S::NP, KW = S::KW, SX = S::SX, NG = R / 64;
  extern __shared__ uint4 s_dyn4[];
  uint8_t* s_q = reinterpret_cast<uint8_t*>(s_dyn4);                // [KTP][2048] nibbles
  uint32_t* s_sc = reinterpret_cast<uint32_t*>(s_q + KTP * 2048);   // [KTP][32] scale words
  bf16_t* s_x = LDG ? reinterpret_cast<bf16_t*>(s_dyn4) : reinterpret_cast<bf16_t*>(s_sc + KTP * 32);  // [ROWS][SX]
  uint64_t* s_bar = reinterpret_cast<uint64_t*>(s_x + ROWS * SX);   // [KTP]
  const int group = blockIdx.x, piece = blockIdx.y, slot = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  if constexpr (!LDG) {
    if (tid < KTP) mbarrier_init(&s_bar[tid], 1);
    if (tid == 0) fence_mbarrier_init();
    __syncthreads();
  }
  // gate_up reads the route index its predecessor (the router) writes. down reads it before its wait: the
  // router completed before any gate_up CTA passed its own wait, and gate_up lets this launch start only after
  // that, so the weight copies below overlap gate_up's tail.
  if constexpr (W == Which::kGateUp) griddep_wait(), trace.waited();
  const auto row_src = [&](int pid) {  // the piece's slice of pair pid's input row
    return (W == Which::kGateUp ? static_cast<const bf16_t*>(p.xn) + size_t(pid / p.top_k) * K
                                : static_cast<const bf16_t*>(p.act) + size_t(pid) * K) + piece * KW;
  };
  // One token, gate_up: the piece's slice of the input row (pair 0's: the token's) depends on nothing but the
  // wait, so it is requested with the expert id rather than behind the expert's weights (one vector per thread).
  static_assert(ROWS > 1 || KW / 8 <= kThreads, "one 16-byte vector of the row per thread");
  uint4 xv = make_uint4(0, 0, 0, 0);
  if (W == Which::kGateUp && ROWS == 1 && tid < KW / 8) xv = *reinterpret_cast<const uint4*>(row_src(0) + tid * 8);
  const int e = p.index.active_experts[slot];  // -1 past the active ones (moe_router.h): one dependent load
  // One token (ROWS == 1): its top-k experts are distinct, so every active expert has exactly one pair and the
  // sorted position of slot's pair is the slot itself; its pair id is the only lookup left (down only).
  const int pid1 = ROWS == 1 && W == Which::kDown ? p.index.pair_list[slot] : 0;
  if (e < 0) {
    if constexpr (W == Which::kDown) griddep_wait();
    return;
  }
  const uint8_t* blocks = W == Which::kGateUp ? p.w.gate_up_blocks : p.w.down_blocks;
  const uint8_t* scales = W == Which::kGateUp ? p.w.gate_up_scales : p.w.down_scales;
  const size_t grp = size_t(e) * NG + group;
  // LDG (one-token gate_up of big_scales layers, and down with MXS_DOWN_LDG=1): the weights are used once, so each
  // thread loads its own 16 bytes + scale word of every k-tile straight into registers (9 x 16 B in flight per
  // thread, 5 CTAs/SM: at 6 the register cap spilled and a batch-1 step took 1.798 ms vs 1.766, at 4 1.824; H200,
  // 20b); no shared staging, no barriers (4% faster at batch 1 than the bulk copies then, H200, session 3). Bulk
  // copies into shared memory otherwise (more tokens: the token tiles re-read them). One-token down went back to
  // them in session 16: 53 registers and 21 KB of shared memory let all 900 CTAs (45 groups x 5 pieces x 4
  // experts) be resident at once, 7+ per SM, where the register kernel's 5 per SM ran 1.36 waves (H100, same
  // call: 20b 1.871-1.895 -> 1.833-1.847 ms per batch-1 step, 120b 2.626-2.670 -> 2.569-2.595).
  uint4 qr[LDG ? KTP : 1];
  uint32_t swr[LDG ? KTP : 1];
  // LDG: k-tiles [kt0, kt1) of this thread's weights into registers.
  const auto load_ktiles = [&](int kt0, int kt1) {
    if constexpr (LDG) {
#pragma unroll
      for (int kt = 0; kt < KTP; ++kt) {
        if (kt < kt0 || kt >= kt1) continue;
        qr[kt] = ldg_stream(blocks + grp * (64 * K / 2) + size_t(piece * KTP + kt) * 2048 + tid * 16);
        swr[kt] = ldg_stream_u32(scales + grp * (64 * K / 32) + size_t(piece * KTP + kt) * 128 + (warp * 8 + g) * 4);
      }
    }
  };
  // down: only the first pre_ktiles k-tiles before griddep_wait, the rest right after the act load is issued
  // (bytes in flight ahead of that dependent load delay it: kDownPreKtiles). gate_up: all.
  const int kt_pre = W == Which::kDown ? pre_ktiles : KTP;
  load_ktiles(0, kt_pre);
  // Bulk copies of k-tiles [kt0, kt1) into their stage slots (lane kt of warp 0 issues k-tile kt).
  const auto bulk_ktiles = [&](int kt0, int kt1) {
    if (!LDG && warp == 0 && lane >= kt0 && lane < kt1) {
      const int kt = lane;
      const uint32_t sc_bytes = kt == 0 ? KTP * 128 : 0;  // k-tile 0's barrier also carries all the scale words
      mbarrier_arrive_expect_tx(&s_bar[kt], 2048 + sc_bytes);
      bulk_copy_g2s_weights(s_q + kt * 2048, blocks + grp * (64 * K / 2) + size_t(piece * KTP + kt) * 2048, 2048,
                            &s_bar[kt]);
      if (kt == 0)
        bulk_copy_g2s_weights(s_sc, scales + grp * (64 * K / 32) + size_t(piece) * KTP * 128, sc_bytes, &s_bar[0]);
    }
  };
  // One-token down on bulk copies: as with the register loads, kt_pre k-tiles before the wait, the rest behind the
  // act load (the route index and weights are known early; bytes in flight delay the act load).
  constexpr bool kBulkSplit = !LDG && ROWS == 1 && W == Which::kDown;
  bulk_ktiles(0, kBulkSplit ? kt_pre : KTP);
  int begin = slot, n_pairs = 1;
  if constexpr (ROWS > 1) begin = p.index.expert_offsets[e], n_pairs = p.index.expert_offsets[e + 1] - begin;
  if constexpr (W == Which::kDown) griddep_wait(), trace.waited();  // act
  griddep_launch_dependents();

  const int P = p.n_tokens * p.top_k;
  const bf16_t* xb = s_x + (ROWS == 1 ? 0 : g * SX) + 16 * c;  // lane c's 32 bytes of each k-tile
  for (int m0 = 0; m0 < n_pairs; m0 += ROWS) {
    if (m0 > 0) __syncthreads();  // the previous tile's reads of s_x are done
    const int n_rows = min(n_pairs - m0, ROWS);
    // Rows past n_rows are left as they are: column n of D depends only on column n of B, and is not stored.
    const auto stage = [&](int m, int v, const uint4& val) { stage_vector(s_x + m * SX, v, val); };
    if constexpr (ROWS == 1) {
      if (W == Which::kDown && tid < KW / 8) xv = *reinterpret_cast<const uint4*>(row_src(pid1) + tid * 8);
      load_ktiles(kt_pre, KTP);  // down: behind the act load
      if (kBulkSplit) bulk_ktiles(kt_pre, KTP);
      if (tid < KW / 8) stage(0, tid, xv);
    } else {
      // Warp w stages rows w and w + 4, lane = 16-byte vectors lane, lane + 32, ...: one pair-list lookup per
      // row and all of a thread's loads in flight before its first store (v1 looked up the pair and divided by
      // top_k per vector, in a loop whose loads waited on each other: ncu, H100, batch 64, gate_up: the
      // staging's stores, loads and divisions were ~20% of the stall samples).
      constexpr int VPR = KW / 8, VPL = (VPR + 31) / 32, RPW = ROWS / (kThreads / 32);
      // Rows in flight together: both (batch 64 on an H100: 8.53 -> 8.01 ms per step vs v1; one at a time:
      // 8.14), but one for the BIG variant, whose registers then spilled.
      constexpr int RIF = BIG ? 1 : RPW;
#pragma unroll
      for (int r0 = 0; r0 < RPW; r0 += RIF) {
        uint4 val[RIF][VPL];
#pragma unroll
        for (int r = 0; r < RIF; ++r) {
          const int m = warp + (r0 + r) * (kThreads / 32);
          if (m >= n_rows) continue;
          const bf16_t* src = row_src(p.index.pair_list[begin + m0 + m]);
#pragma unroll
          for (int j = 0; j < VPL; ++j)
            if (lane + 32 * j < VPR) val[r][j] = *reinterpret_cast<const uint4*>(src + (lane + 32 * j) * 8);
        }
#pragma unroll
        for (int r = 0; r < RIF; ++r) {
          const int m = warp + (r0 + r) * (kThreads / 32);
          if (m >= n_rows) continue;
#pragma unroll
          for (int j = 0; j < VPL; ++j)
            if (lane + 32 * j < VPR) stage(m, lane + 32 * j, val[r][j]);
        }
      }
    }
    __syncthreads();
    float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // two chains: even / odd k16 steps
    // One k-tile of A (16 bytes + scale word) in registers ahead: its shared loads overlap this one's math.
    uint4 q;
    uint32_t sw;
    if constexpr (LDG) {
      q = qr[0], sw = swr[0];
    } else {
      mbarrier_wait(&s_bar[0], 0);  // (returns at once after the first token tile)
      q = *reinterpret_cast<const uint4*>(s_q + tid * 16);
      sw = s_sc[warp * 8 + g];
    }
#pragma unroll
    for (int kt = 0; kt < KTP; ++kt) {
      uint4 qn = q;
      uint32_t swn = sw;
      if (kt + 1 < KTP) {
        if constexpr (LDG) {
          qn = qr[kt + 1], swn = swr[kt + 1];
        } else {
          mbarrier_wait(&s_bar[kt + 1], 0);
          qn = *reinterpret_cast<const uint4*>(s_q + (kt + 1) * 2048 + tid * 16);
          swn = s_sc[(kt + 1) * 32 + warp * 8 + g];
        }
      }
      ktile_mma<BIG>(q, sw, xb + kt * 64, acc);
      q = qn, sw = swn;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = m0 + 2 * c + h;
      if ((ROWS == 1 && (c != 0 || h != 0)) || m >= n_pairs) continue;
      const float2 v = make_float2(acc[0][h] + acc[1][h], acc[0][2 + h] + acc[1][2 + h]);  // rows 2g, 2g + 1
      *reinterpret_cast<float2*>(p.partials + ((size_t(group) * NP + piece) * P + begin + m) * 64 + 16 * warp +
                                 2 * g) = v;
    }
  }
  // The last CTA of (expert, group) adds the pieces in order and stores the group's 32 row pairs per pair. Only
  // warp 0 stays: lane 0 publishes (fence after the barrier, which orders the other warps' partial stores
  // before it) and counts; the other warps leave at once (ncu: a fence in every thread and a second barrier
  // around the count were the kernel's largest stalls, holding the CTA's slot through the atomic's round trip).
  __syncthreads();
  if (warp != 0) return;
  const bf16_t* bias =
      static_cast<const bf16_t*>(W == Which::kGateUp ? p.w.gate_up_bias : p.w.down_bias) + size_t(e) * R;
  // One token: lane u's pair id, biases and routing weight are requested before the arrival, so that the last
  // CTA's tail waits on one round trip (the partials) instead of three (partials, pair id, routing weight). H100,
  // batch 1, 8 interleaved runs (session 14): 20b 1.927-1.933 vs 1.937-1.952 ms, 120b 2.684-2.698 vs 2.724-2.734.
  // MXS_MOE_EPI_LATE=1: the loads after the arrival (A/B).
  int pid_early = 0;
  PairIn in_early{};
  if (ROWS == 1 && epi_early) {
    pid_early = W == Which::kDown ? pid1 : p.index.pair_list[slot];
    in_early = pair_inputs<W>(p, bias, pid_early, group * 32 + lane);
  }
  bool last = false;
  if (lane == 0) {
    __threadfence();
    last = atomicAdd(&p.tile_counters[size_t(slot) * NG + group], 1u) == unsigned(NP - 1);
    if (last) p.tile_counters[size_t(slot) * NG + group] = 0u;  // no CTA of this launch counts it again
  }
  if (!__shfl_sync(0xffffffffu, last, 0)) {
    trace.end(kTraceId);
    return;
  }
  __threadfence();  // acquire: the other pieces' partials (read through L2 below)
  trace.mark();
  for (int i = lane; i < n_pairs * 32; i += 32) {
    const int m = i >> 5, u = i & 31;
    float2 sum = make_float2(0.f, 0.f);
#pragma unroll
    for (int k = 0; k < NP; ++k) {
      const float2 v =
          __ldcg(reinterpret_cast<const float2*>(p.partials + ((size_t(group) * NP + k) * P + begin + m) * 64 + 2 * u));
      sum.x += v.x, sum.y += v.y;
    }
    if (ROWS == 1 && epi_early) {  // (one iteration per lane: m = 0, u = lane)
      store_pair<W, R / 2>(p, pid_early, group * 32 + u, sum.x, sum.y, in_early);
    } else {
      const int pid = p.index.pair_list[begin + m];  // (ROWS 1: begin = slot)
      store_pair<W, R / 2>(p, pid, group * 32 + u, sum.x, sum.y, pair_inputs<W>(p, bias, pid, group * 32 + u));
    }
  }
  trace.end(kTraceId);
}

// The whole-K kernels' loads: this thread's 16 bytes and scale word of k-tile kt of one 64-row group (`blocks` /
// `scales` already offset to the group and the thread) into registers; the bytes are used once (ldg_stream).
__device__ __forceinline__ void load_ktile(const uint8_t* blocks, const uint8_t* scales, int kt, uint4& q,
                                           uint32_t& sw) {
  q = ldg_stream(blocks + size_t(kt) * 2048);
  sw = ldg_stream_u32(scales + size_t(kt) * 128);
}

// The k-loop of the whole-K kernels below: k-tile kt comes from ring slot kt % RING, whose refill with k-tile
// kt + RING (`load(kt, slot)`) is requested before the k-tile's math; B from the staged rows at xb. The sum keeps the
// split kernel's order: two chains per piece of KTP k-tiles, chains added, pieces added in order, into tot[h][row]
// (B columns 2c + h; rows 2g and 2g + 1 of the warp's 16).
template <int KT, int KTP, int RING, typename Load>
__device__ __forceinline__ void whole_k_dots(uint4 (&qr)[RING], uint32_t (&swr)[RING], const Load& load,
                                             const bf16_t* xb, float (&tot)[2][2]) {
  float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // [chain: even / odd k16 steps][fragment]
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) {
    const int r = kt % RING;
    const uint4 q = qr[r];
    const uint32_t sw = swr[r];
    if (kt + RING < KT) load(kt + RING, r);
    ktile_mma<false>(q, sw, xb + kt * 64, acc);
    if ((kt + 1) % KTP == 0) {  // a piece of the split kernel ends: its partials join the sums
#pragma unroll
      for (int h = 0; h < 2; ++h) tot[h][0] += acc[0][h] + acc[1][h], tot[h][1] += acc[0][2 + h] + acc[1][2 + h];
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[0][i] = 0.f, acc[1][i] = 0.f;
    }
  }
}

// One token, gate_up, the whole K in one CTA: grid (R / 64 groups, top_k slots), 4 warps. Each thread streams its
// 16 bytes + scale word of all KT k-tiles through a ring of KTP registers (k-tile kt + KTP is requested as kt is
// consumed) and the CTA runs the epilogue itself: no partials, no arrival counter, no second round trip at the
// end. The sum keeps the split kernel's order bit for bit (two chains per piece of KTP k-tiles, chains added,
// pieces added in order), so both give the same act. Layers with scale bytes > 128 (the BIG dequantization, which
// spills here) take the split kernel. Compiled for 4 CTAs per SM (101 registers; the 20b grid of 90 x 4 = 360 CTAs
// is still one wave): at 5 it spilled 12 bytes once the weight loads carried the L2 policy register, for the same
// step time (H100, docs/PERF.md session 21).
template <int K, int R>
__global__ void __launch_bounds__(kThreads, 4) moe_gemv_gate_up_one_kernel(MoeGemvParams p) {
  CtaTrace trace;
  constexpr int KT = K / 64, KTP = piece_ktiles(KT), NG = R / 64, NV = K / 8, VPT = (NV + kThreads - 1) / kThreads;
  __shared__ __align__(16) bf16_t s_x[KT * 64];  // the token's row, each k-tile in the stage order below
  const int group = blockIdx.x, slot = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  griddep_wait();  // xn and the route index come from the router
  trace.waited();
  uint4 xv[VPT];
  const uint4* xrow = static_cast<const uint4*>(p.xn);
#pragma unroll
  for (int j = 0; j < VPT; ++j)
    if (tid + j * kThreads < NV) xv[j] = xrow[tid + j * kThreads];
  const int e = p.index.active_experts[slot];  // every slot is active at one token (top_k distinct experts)
  const size_t grp = size_t(e) * NG + group;
  const uint8_t* blocks = p.w.gate_up_blocks + grp * (64 * K / 2) + tid * 16;
  const uint8_t* scales = p.w.gate_up_scales + grp * (64 * K / 32) + (warp * 8 + g) * 4;
  uint4 qr[KTP];
  uint32_t swr[KTP];
  const auto load = [&](int kt, int r) { load_ktile(blocks, scales, kt, qr[r], swr[r]); };
#pragma unroll
  for (int kt = 0; kt < KTP; ++kt) load(kt, kt);
  const int unit = group * 32 + warp * 8 + g;  // lanes c = 0 store output pair `unit`
  const int pid = p.index.pair_list[slot];
  const PairIn in = pair_inputs<Which::kGateUp>(p, static_cast<const bf16_t*>(p.w.gate_up_bias) + size_t(e) * R, pid,
                                                unit);
  griddep_launch_dependents();
#pragma unroll
  for (int j = 0; j < VPT; ++j)
    if (tid + j * kThreads < NV) stage_vector(s_x, tid + j * kThreads, xv[j]);
  __syncthreads();
  float tot[2][2] = {};  // (column 0: the token)
  whole_k_dots<KT, KTP, KTP>(qr, swr, load, s_x + 16 * c, tot);
  if (c == 0) store_pair<Which::kGateUp, R / 2>(p, pid, unit, tot[0][0], tot[0][1], in);
  trace.end(kTraceGateUp);
}

// 2+ tokens, the whole K in one CTA: grid (R / 64 groups, active expert slots), 4 warps, the same ring and sum
// order as moe_gemv_gate_up_one_kernel, with the expert's pairs as the B columns in tiles of 8: warp w stages pair
// rows w and w + 4 of the tile in shared memory (row stride K + 8: rows 16 bytes apart mod 128, so lanes (g, c) do
// not collide), and lane (g, c) ends with pairs 2c, 2c + 1 of the tile for its row pair. An expert has at most one
// pair per token, so a step of <= 8 tokens takes one tile; an expert with more pairs streams its weights again per
// tile (an expert gets n_tokens x top_k / n_experts pairs on average: 4 at 32 tokens for 20b, so few pass 8).
// gate_up waits before anything (its route index is the router's); down requests `pre` k-tiles of its ring before
// its wait (the route index is two launches back) and the rest behind its act rows. Bit for bit the split kernel's
// outputs.
template <Which W, int K, int R>
__global__ void __launch_bounds__(kThreads, 4) moe_gemv_rows_whole_kernel(MoeGemvParams p, int pre) {
  constexpr bool kGU = W == Which::kGateUp;
  constexpr int KT = K / 64, KTP = piece_ktiles(KT), NG = R / 64, NV = K / 8, SX = K + 8, RING = KTP, TP = 8;
  constexpr int VPL = (NV + 31) / 32, HALF = (VPL + 1) / 2;  // a row's 16-byte vectors per lane, staged in halves
  extern __shared__ uint4 s_dyn4[];
  bf16_t* s_x = reinterpret_cast<bf16_t*>(s_dyn4);  // [TP][SX] the tile's input rows, each k-tile in stage order
  const int group = blockIdx.x, slot = blockIdx.y;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  if constexpr (kGU) griddep_wait();  // the route index and xn come from the router
  const int e = p.index.active_experts[slot];  // -1 past the active experts
  if (e < 0) {
    if constexpr (!kGU) griddep_wait();
    return;
  }
  const size_t grp = size_t(e) * NG + group;
  const uint8_t* blocks = (kGU ? p.w.gate_up_blocks : p.w.down_blocks) + grp * (64 * K / 2) + tid * 16;
  const uint8_t* scales = (kGU ? p.w.gate_up_scales : p.w.down_scales) + grp * (64 * K / 32) + (warp * 8 + g) * 4;
  uint4 qr[RING];
  uint32_t swr[RING];
  const auto load = [&](int kt, int r) { load_ktile(blocks, scales, kt, qr[r], swr[r]); };
  const int n_pre = kGU ? RING : pre;
#pragma unroll
  for (int kt = 0; kt < RING; ++kt)
    if (kt < n_pre) load(kt, kt);
  const int begin = p.index.expert_offsets[e], n_pairs = p.index.expert_offsets[e + 1] - begin;
  const int unit = group * 32 + warp * 8 + g;  // lanes store output pair `unit` of their tile columns
  const bf16_t* bias = static_cast<const bf16_t*>(kGU ? p.w.gate_up_bias : p.w.down_bias) + size_t(e) * R;
  // The epilogue inputs of the first tile's columns 2c, 2c + 1, loaded ahead (later tiles: after their k-loop).
  int pid[2] = {0, 0};
  PairIn in[2] = {};
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = 2 * c + h;
    pid[h] = m < n_pairs ? p.index.pair_list[begin + m] : 0;
    in[h] = m < n_pairs ? pair_inputs<W>(p, bias, pid[h], unit) : PairIn{};
  }
  if constexpr (!kGU) griddep_wait();  // act
  bool rest_due = !kGU;  // down: the ring's k-tiles past n_pre are still to request (behind the first act loads)
  const auto load_rest = [&] {
    if (!rest_due) return;
#pragma unroll
    for (int kt = 0; kt < RING; ++kt)
      if (kt >= n_pre) load(kt, kt);
    rest_due = false;
  };
  for (int m0 = 0;;) {
    const int n_tile = min(n_pairs - m0, TP);
    // Stage (stage_vector): warp w rows w and w + 4; lane = vectors lane + 32 j.
#pragma unroll
    for (int rr = 0; rr < TP / 4; ++rr) {
      const int m = warp + 4 * rr;
      if (m >= n_tile) continue;
      const int pm = p.index.pair_list[begin + m0 + m];
      const bf16_t* src = kGU ? static_cast<const bf16_t*>(p.xn) + size_t(pm / p.top_k) * K
                              : static_cast<const bf16_t*>(p.act) + size_t(pm) * K;
#pragma unroll
      for (int j0 = 0; j0 < VPL; j0 += HALF) {
        uint4 val[HALF];
#pragma unroll
        for (int j = 0; j < HALF; ++j)
          if (j0 + j < VPL && lane + 32 * (j0 + j) < NV)
            val[j] = *reinterpret_cast<const uint4*>(src + (lane + 32 * (j0 + j)) * 8);
        load_rest();
#pragma unroll
        for (int j = 0; j < HALF; ++j)
          if (j0 + j < VPL && lane + 32 * (j0 + j) < NV) stage_vector(s_x + m * SX, lane + 32 * (j0 + j), val[j]);
      }
    }
    load_rest();  // (if this warp staged nothing)
    if (m0 == 0) griddep_launch_dependents();
    __syncthreads();
    float tot[2][2] = {};  // [h][row 2g / 2g + 1]
    // B column g = pair m0 + g (columns past the tile are not stored)
    whole_k_dots<KT, KTP, RING>(qr, swr, load, s_x + g * SX + 16 * c, tot);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int m = 2 * c + h;
      if (m >= n_tile) continue;
      if (m0 == 0) {
        store_pair<W, R / 2>(p, pid[h], unit, tot[h][0], tot[h][1], in[h]);
      } else {
        const int pm = p.index.pair_list[begin + m0 + m];
        store_pair<W, R / 2>(p, pm, unit, tot[h][0], tot[h][1], pair_inputs<W>(p, bias, pm, unit));
      }
    }
    m0 += TP;
    if (m0 >= n_pairs) break;
    __syncthreads();  // the tile's reads of s_x are done
#pragma unroll
    for (int kt = 0; kt < RING; ++kt) load(kt, kt);  // the weights again for the next tile
  }
}

// MXS_DOWN_PRE_KT (A/B): down's k-tiles requested before griddepcontrol.wait, at most max_kt; dflt when unset.
int down_pre_ktiles(int max_kt, int dflt) {
  const char* v = std::getenv("MXS_DOWN_PRE_KT");
  return std::min(max_kt, v ? std::max(0, std::atoi(v)) : dflt);
}

template <Which W, int K, int R, int ROWS, bool LDG, bool BIG>
void launch_scales(const MoeGemvParams& p, cudaStream_t stream) {
  using S = Shape<K, ROWS>;
  const int smem = LDG ? ROWS * S::SX * 2 : S::kSmem;  // LDG: the staged activations only
  // The largest shared-memory carveout: up to 10 CTAs of ~21 KB per SM with bulk copies (the default split
  // allowed 7); L1 is not needed (weights arrive in shared memory or registers).
  static const bool smem_ok = (allow_smem(moe_gemv_mxfp4_kernel<W, K, R, ROWS, LDG, BIG>, smem),
                               cudaFuncSetAttribute(moe_gemv_mxfp4_kernel<W, K, R, ROWS, LDG, BIG>,
                                                    cudaFuncAttributePreferredSharedMemoryCarveout, 100),
                               true);
  (void)smem_ok;
  const int max_active = p.n_tokens * p.top_k < p.n_experts ? p.n_tokens * p.top_k : p.n_experts;
  static const int pre_ktiles = down_pre_ktiles(S::KTP, LDG ? kDownPreKtiles : kDownBulkPreKtiles);  // one token
  static const int epi_early = std::getenv("MXS_MOE_EPI_LATE") ? 0 : 1;
  launch_pdl(moe_gemv_mxfp4_kernel<W, K, R, ROWS, LDG, BIG>, dim3(R / 64, S::NP, max_active), dim3(kThreads),
             smem, stream, p, pre_ktiles, epi_early);
  CUDA_CHECK_LAUNCH();
}

template <Which W, int K, int R, int ROWS, bool LDG>
void launch(const MoeGemvParams& p, cudaStream_t stream) {
  if (p.w.big_scales) return launch_scales<W, K, R, ROWS, LDG, true>(p, stream);
  launch_scales<W, K, R, ROWS, LDG, false>(p, stream);
}

template <int K, int R>
void launch_gate_up_one(const MoeGemvParams& p, cudaStream_t stream) {
  launch_pdl(moe_gemv_gate_up_one_kernel<K, R>, dim3(R / 64, p.top_k), dim3(kThreads), 0, stream, p);
  CUDA_CHECK_LAUNCH();
}

template <Which W, int K, int R>
void launch_rows_whole(const MoeGemvParams& p, cudaStream_t stream) {
  constexpr int smem = 8 * (K + 8) * 2;
  static const bool smem_ok = (allow_smem(moe_gemv_rows_whole_kernel<W, K, R>, smem), true);
  (void)smem_ok;
  static const int pre = down_pre_ktiles(piece_ktiles(K / 64), kDownPreKtiles);
  const int max_active = std::min(p.n_tokens * p.top_k, p.n_experts);
  launch_pdl(moe_gemv_rows_whole_kernel<W, K, R>, dim3(R / 64, max_active), dim3(kThreads), smem, stream, p,
             pre);
  CUDA_CHECK_LAUNCH();
}

template <Which W, int K, int R>
void dispatch(const MoeGemvParams& p, cudaStream_t stream) {
  // MXS_GU_SPLIT_K=1 (A/B): one-token gate_up in K pieces with the last-CTA sum, like down.
  static const bool gu_split = std::getenv("MXS_GU_SPLIT_K") != nullptr;
  if constexpr (W == Which::kGateUp)
    if (p.n_tokens == 1 && !p.w.big_scales && !gu_split) return launch_gate_up_one<K, R>(p, stream);
  // 2+ tokens: both GEMVs with the whole K per CTA (H100, ms per step: 20b batch 2 2.92-2.95 -> 2.68-2.69, 8
  // 4.65-4.67 -> 4.17-4.18, 16 5.70-5.72 -> 5.24, 48 7.50 -> 7.08-7.11; 120b batch 64 24.42 -> 21.96 between the
  // full checks of 63bad80 and aae83d9). 20b takes the grouped GEMM from 64 tokens; 120b (128 experts) keeps the
  // GEMVs up to 255 tokens, where the whole-K kernels also win although an expert of > 8 pairs streams its weights
  // again per 8-pair tile (H100, same call, split -> whole: batch 96 27.58-27.63 -> 24.74-24.77 ms, 128
  // 29.51-29.56 -> 26.31-26.43, 192 33.43-33.53 -> 31.21-31.24; batch 64 unchanged). MXS_ROWS_SPLIT_K=1 (A/B): the
  // K-piece kernels; MXS_ROWS_WHOLE_MAX=N: whole-K only up to N tokens.
  static const bool rows_split = std::getenv("MXS_ROWS_SPLIT_K") != nullptr;
  static const int whole_max =
      std::getenv("MXS_ROWS_WHOLE_MAX") ? std::atoi(std::getenv("MXS_ROWS_WHOLE_MAX")) : kMoeGemvMaxPairs;
  if (p.n_tokens >= 2 && p.n_tokens <= whole_max && !p.w.big_scales && !rows_split)
    return launch_rows_whole<W, K, R>(p, stream);
  // One token: down on bulk copies (every CTA resident at once; see the kernel), MXS_DOWN_LDG=1 (A/B) the register
  // loads; gate_up here only for big_scales layers or MXS_GU_SPLIT_K, on register loads (a bulk-copy split gate_up
  // measured 5% slower per batch-1 step than the whole-K kernel, H100, session 16).
  static const bool down_ldg = std::getenv("MXS_DOWN_LDG") != nullptr;
  if (W == Which::kDown && p.n_tokens == 1 && !down_ldg) return launch<W, K, R, 1, false>(p, stream);
  if (p.n_tokens == 1) return launch<W, K, R, 1, true>(p, stream);
  return launch<W, K, R, 8, false>(p, stream);
}

int pieces(int k) { return (k / 64) / piece_ktiles(k / 64); }

void check(const MoeGemvParams& p, const char* name) {
  MXS_CHECK(p.n_tokens >= 1, strfmt("%s: n_tokens must be >= 1", name));
  const bool ok = (p.hidden == 2880 && p.intermediate == 2880) || (p.hidden == 64 && p.intermediate == 64);
  MXS_CHECK(ok, strfmt("%s: hidden = %d, intermediate = %d is not supported (supported: 2880/2880, 64/64)", name,
                       p.hidden, p.intermediate));
  MXS_CHECK(p.n_tokens * p.top_k <= kMoeGemvMaxPairs,
            strfmt("%s: %d pairs > kMoeGemvMaxPairs = %d (use the grouped GEMM)", name, p.n_tokens * p.top_k,
                   kMoeGemvMaxPairs));
  MXS_CHECK(p.w.gate_up_blocks && p.w.down_blocks && p.partials && p.tile_counters,
            strfmt("%s: needs the packed experts, partials and tile_counters", name));
}
}  // namespace

void moe_gemv_mxfp4_gate_up(const MoeGemvParams& p, cudaStream_t stream) {
  check(p, "moe_gemv_mxfp4_gate_up");
  if (p.hidden == 2880) return dispatch<Which::kGateUp, 2880, 5760>(p, stream);
  return dispatch<Which::kGateUp, 64, 128>(p, stream);
}

void moe_gemv_mxfp4_down(const MoeGemvParams& p, cudaStream_t stream) {
  check(p, "moe_gemv_mxfp4_down");
  if (p.hidden == 2880) return dispatch<Which::kDown, 2880, 2880>(p, stream);
  return dispatch<Which::kDown, 64, 64>(p, stream);
}

size_t moe_gemv_partial_floats(int hidden, int intermediate, int max_pairs) {
  const size_t gu = size_t(2 * intermediate) * pieces(hidden), dn = size_t(hidden) * pieces(intermediate);
  return (gu > dn ? gu : dn) * size_t(max_pairs);
}

size_t moe_gemv_counter_count(int hidden, int intermediate, int n_experts) {
  const int groups = 2 * intermediate / 64 > hidden / 64 ? 2 * intermediate / 64 : hidden / 64;
  return size_t(groups) * size_t(n_experts);
}

}  // namespace mxs::cuda
