// MXFP4 grouped GEMMs for MoE prefill (see moe_gemm_mxfp4.h; packed layout in moe_gemm_pack.h; design and
// measurements in docs/KERNELS-moe-gemm.md).
// CTA = WGS consumer warpgroups (64 weight rows each: WGS = 2 for token tiles N_MAX <= 64, 3 for 128 / 192)
// x up to N_MAX of one expert's sorted tokens, + producer warps (1 for N_MAX <= 64, a warpgroup above, which
// gives registers to the consumers with setmaxnreg); K in tiles of 64. The producers fill an S-deep ring of
// stages (per k-tile: WGS x 2 KB of packed nibbles, WGS x 128 B of scale words, and the N token rows in the
// 128-byte swizzle the wgmma B descriptor expects), completing on full[slot]:
//   copy engine (every tile but gate_up's 192 at a mean of <= 288 pairs per expert; copy_engine() below): lane 0
//     of the producer warp issues, per k-tile, one 2-D TMA box per 32 (64 for 128 / 192 tiles) token rows of
//     the sorted rows (gate_up first gathers xn[pair / top_k] into yw, free until down writes it), one 3-D box of
//     the tile's WGS x 2 KB of nibbles and one of its WGS x 128 B of scale words (make_tensor_map_bytes_3d), all
//     on full[slot] with their byte count. One warp's cp.async (24 per lane and k-tile) bounded the small tiles:
//     TMA made them 1.4x faster (H100, session 9). Each copy instruction costs the producer ~15 instructions
//     (the compiler's one-lane issue loop and uniform-register moves): with a 32-row box and a bulk copy per
//     warpgroup (12 per k-tile) down's 192 tile was producer-bound (ncu, P = 16384: the producer warp never
//     waited on empty, consumers waited on full 38% of their samples); 3-D boxes (4-5 per k-tile) made the copy
//     engine the faster producer for the 128 tiles too (session 17, docs/KERNELS-moe-gemm.md);
//   cp.async (gate_up's 192 tiles at a mean of <= 288): the producer warpgroup's 16-byte cp.async (gathering rows
//     of xn straight from the token matrix) and cp.async.mbarrier.arrive.
// Each consumer thread reads its 16 B back, decodes 32 e2m1 codes with shifts and masks into 16 bf16x2 registers,
// scales them exactly by 2^(scale - 1) (one fma.rn.bf16x2 each; the decode leaves a 2^-126 factor), and its
// warpgroup issues 4 wgmma.m64nNk16 (A = registers, B = shared-memory descriptor). A registers come in NA sets used
// in turn (2; 3 for 128-token tiles, whose 64 accumulators leave the room): the wgmma of k-tiles j - 1 .. j - NA +
// 1 may still read theirs while set j is written; wgmma.wait_group NA - 1 keeps that many k-tiles of MMAs in flight
// behind the dequantization of the next, after which the slot of j - NA + 1 is released (empty[slot], one arrival
// per consumer warp).
// Persistent scheduler: tiles are numbered (expert, 64 WGS-row m tile, token tile) with the token tile
// innermost (CTAs working at the same time share an expert's weight rows in L2). Static (p.sched null): CTA b
// takes tiles b, b + grid, ... Dynamic (p.sched set): CTA b's first tile is b, each later one comes from a
// global counter taken by producer thread 0 when it starts loading that tile, published to the CTA through a
// ring of kTileRing (tile id, mbarrier) entries; ragged tiles (an expert's last token tile) cost less than
// full ones, so a fixed share left SMs idle at the end (ncu, 2,048-token prefill, H200: SM active cycles from
// 20% below to 7% above the mean). Both roles loop tile by tile (per-tile values hoisted out of the k-loop);
// the producers run across tile boundaries (the next tile's first k-tiles load during an epilogue). The MMA
// width of each tile is its token count rounded up to 32, at most N_MAX (48-token tiles: 32 or 48).
#include "cuda/kernels/moe_gemm_mxfp4.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/bulk_copy.cuh"
#include "cuda/kernels/moe_gemm_pack.h"
#include "cuda/kernels/moe_pack_dequant.cuh"
#include "cuda/kernels/tma.cuh"
#include "cuda/kernels/wgmma.cuh"
#include "cuda/tensor_map.h"

namespace mxs::cuda {
namespace {

enum class Which { kGateUp, kDown };
constexpr int kMaxExperts = 128;
// Shared memory: a ring of S stages, each a B tile [N_MAX rows][128 B] (128-byte swizzle, 1024-aligned: the
// swizzle repeats every 1024 B) in the B ring, and the A bytes [WGS wg][128 thr][16 B] + scale words
// [WGS wg][32][4 B] in the A ring after it. WGS = consumer warpgroups of the CTA (64 weight rows each, all on
// the same token tile). Configurations (chosen by the token tile N_MAX):
//   N_MAX 32, 48, 64: 2 warpgroups, 1 producer warp; 3 CTAs per SM for 32 (7 stages) and 48 (5 stages; its B
//                   stage holds 64 rows, two TMA boxes), 2 for 64 (8 stages; at 3 its 75 registers would
//                   spill): weight streaming, where more warps hide more of the dequantization's dependent
//                   latency (H100, 2 -> 3 CTAs of 32: gate_up P = 512 0.152-0.153 -> 0.131 ms, 73% of copy
//                   bandwidth; decode batch 128 8.82 -> 8.10-8.13 ms per step; the 48 tile instead of 64 at
//                   P = 1024: gate_up 0.168 -> 0.145, down 0.090 -> 0.080, decode batch 256 10.91-10.95 ->
//                   10.09-10.17 ms).
//   N_MAX 128, 192: 3 warpgroups (192 weight rows: each gathered B tile feeds 1.5x the MMAs of a 128-row
//                   tile), producer warpgroup; setmaxnreg moves registers from the producers (56) to the
//                   consumers (152: 96 accumulators + 2 x 16 A registers): 3 x 128 x 152 + 128 x 56 = 65536.
// (N_MAX = 256 with 2 warpgroups of 208 registers was built and measured slower than 192 at every size: 8
// consumer warps per SM hide the dequantization latency worse than 12; see docs/KERNELS-moe-gemm.md.)
// TMA = the copy-engine producer (above). Its 192-token tiles take one MMA width for every tile (single-width
// k-loop: its commit stays in the loop, so the wgmma of k-tile j overlap the dequantization of j + 1, and 160
// consumer registers keep ptxas from serializing them; H100, same call: down P = 16384 0.501 -> 0.435 ms, 32768
// 0.936 -> 0.881); a ragged last tile then pays the full width, which is why gate_up's 192 tiles of the (112,
// 224] band stay on cp.async (their multi-width k-loop; P = 4096 0.297-0.301 vs 0.307-0.313 ms).
template <int N_MAX, bool TMA>
struct Cfg {
  static_assert(N_MAX == 32 || N_MAX == 48 || N_MAX == 64 || N_MAX == 128 || N_MAX == 192, "token tile");
  static constexpr int kWgs = N_MAX >= 128 ? 3 : 2;
  static constexpr int kConsumers = 128 * kWgs;
  // Producer threads: one warp for the small tiles; a warpgroup above (one warp cannot issue N_MAX x 8 row
  // chunks per k-tile fast enough, and setmaxnreg works per warpgroup).
  static constexpr int kProducerThreads = N_MAX <= 64 ? 32 : 128;
  static constexpr int kThreadsAll = kConsumers + kProducerThreads;
  static constexpr int kCtasPerSm = N_MAX <= 48 ? 3 : N_MAX <= 64 ? 2 : 1;
  static constexpr bool kSetMaxNreg = kWgs == 3;
  static constexpr bool kTma = TMA;
  static constexpr bool kSingleWidth = TMA && N_MAX == 192;  // every tile's MMAs N_MAX wide
  static constexpr int kConsumerRegs = kSingleWidth ? 160 : 152, kProducerRegs = kSingleWidth ? 32 : 56;
  // A register sets used in turn: 3 for 128-token tiles (64 accumulators leave the room: the wgmma of two
  // k-tiles may run behind the dequantization of the next; H100: gate_up P = 8192 0.683-0.693 -> 0.664-0.667
  // ms, 2k prefill 30.9-31.6 -> 30.2-30.5 ms), 2 otherwise (192 tiles: 96 accumulators).
  static constexpr int kASets = N_MAX == 128 ? 3 : 2;
  // setmaxnreg.inc blocks until the CTA's pool has the registers (a budget over it hangs the kernel): the pool
  // is what the launch allocated, threads x the per-thread count ptxas gives the kernel (65536 / threads,
  // rounded down to 8: 128 for 512 threads, 168 for 384), not always the whole register file.
  static constexpr int kLaunchRegs = (65536 / kThreadsAll) / 8 * 8;
  static_assert(!kSetMaxNreg || kConsumers * kConsumerRegs + 128 * kProducerRegs <= kThreadsAll * kLaunchRegs,
                "register pool");
  static constexpr int kRowsPerProducer = N_MAX * 8 / kProducerThreads;  // B chunks (rows) per producer thread
  // Token rows per B box of the copy-engine producer: 32 for the small tiles (a ragged tile loads what it needs),
  // 64 for the 128 / 192 tiles (fewer copies: the producer's instructions per k-tile bounded down's 192 tile).
  static constexpr int kTmaBoxRows = N_MAX <= 64 ? 32 : 64;
  static constexpr int kBBytes = (N_MAX + kTmaBoxRows - 1) / kTmaBoxRows * kTmaBoxRows * 128;  // whole boxes (48: 64)
  static constexpr int kABytes = kWgs * 2048;           // A bytes of a stage; scale words follow
  static constexpr int kASBytes = kABytes + kWgs * 128;  // A + scales of a stage
  // Dynamic scheduler: tile ids published by producer thread 0, one mbarrier each. The producers run at most
  // kStages k-tiles (so at most kStages + 1 tiles) ahead of every reader of an entry: the ring never wraps onto
  // an entry still to be read, and no waiter lags its barrier by two phases.
  static constexpr int kTileRing = 16;
  static constexpr int kExtra =
      1024 + 2 * (kMaxExperts + 1) * 4 + 4 * kConsumers * 4 + 2 * 10 * 8 + kTileRing * (8 + 4);
  // Deep rings for the weight-streaming (small N) tiles: ~40 KB of weights in flight per SM covers the
  // loaded DRAM latency at full bandwidth (3 x 7 stages of tile 32, 3 x 5 of 48, 2 x 8 of 64: 170-200 KB per
  // SM); large tiles take as many stages as the 227 KB of shared memory hold.
  static constexpr int kStages = N_MAX <= 32   ? 7
                                 : N_MAX <= 48 ? 5
                                 : N_MAX <= 64 ? 8
                                               : std::min(10, (232448 - kExtra) / (kBBytes + kASBytes));
  static constexpr int kSmem = kStages * (kBBytes + kASBytes) + kExtra;
  static_assert(kSmem <= 232448 && kCtasPerSm * (kSmem + 1024) <= 233472, "shared memory");
  static_assert(kStages + 2 <= kTileRing && kStages <= 10, "tile ring / barrier space");
};

// ---- PTX wrappers ----
// 16-byte async copy global -> shared (L2 only).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
// Register budget of this warpgroup (all its warps execute the same value; sm_90a).
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }
// v itself, as a value ptxas cannot recompute from its inputs (a shuffle from the own lane): keeps per-thread
// constants in a register where ptxas would rematerialize them inside a hot loop.
__device__ __forceinline__ uint32_t opaque_u32(uint32_t v) {
  uint32_t r;
  asm volatile("shfl.sync.idx.b32 %0, %1, %2, 0x1f, 0xffffffff;\n" : "=r"(r) : "r"(v), "r"(int(threadIdx.x & 31)));
  return r;
}
__device__ __forceinline__ void named_bar_sync(int id, int n_threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n_threads) : "memory");
}
// ---- dequantization: moe_pack_dequant (moe_pack_dequant.cuh, shared with the decode GEMV) ----

// Issues the 4 k16 steps of one k-tile with MMA width NN.
template <int NN>
__device__ __forceinline__ void mma_steps(float* acc, const uint32_t (&a)[4][4], uint64_t desc, bool first) {
#pragma unroll
  for (int s = 0; s < 4; ++s) wgmma_rs<NN>(acc, a[s], desc + 2 * s, (first && s == 0) ? 0 : 1);  // +32 B per k16
}
// One k-tile with the MMA width n_used (a multiple of 32 <= N_MAX): one dispatch per k-tile.
template <int N_MAX>
__device__ __forceinline__ void mma_ktile(float (&acc)[N_MAX / 2], const uint32_t (&a)[4][4], uint64_t desc,
                                          int n_used, bool first) {
  switch (n_used) {
    case 32: mma_steps<32>(acc, a, desc, first); break;
    case 48: if constexpr (N_MAX == 48) mma_steps<48>(acc, a, desc, first); break;
    case 64: if constexpr (N_MAX >= 64) mma_steps<64>(acc, a, desc, first); break;
    case 96: if constexpr (N_MAX >= 96) mma_steps<96>(acc, a, desc, first); break;
    case 128: if constexpr (N_MAX >= 128) mma_steps<128>(acc, a, desc, first); break;
    case 160: if constexpr (N_MAX >= 160) mma_steps<160>(acc, a, desc, first); break;
    default: if constexpr (N_MAX >= 192) mma_steps<192>(acc, a, desc, first); break;  // 192
  }
}

// One tile of work: expert e, m tile mt (64 WGS rows), sorted rows [row0, row0 + n_valid) of pair_list.
struct TileInfo {
  int e, mt, row0, n_valid;
};

// Epilogue of one warpgroup's 64 rows x the tile's tokens. This thread holds rows 2u (A-fragment row g) and
// 2u + 1 (row g + 8) of unit u, tokens 8 j + 2 c + h: acc[4 j + h] (row 2u) and acc[4 j + 2 + h] (row 2u + 1).
// Both tokens h = 0, 1 of a j go through together as bf16x2 words (low half h = 0): one cvt rounds two
// accumulators, one bf16x2 fma adds two biases (bf(bf(acc) + b) in one rounding, see bf16x2_add).
// s_pair / s_rw: the tile's pair ids and routing weights by column (down only, staged by the CTA).
template <Which W, int N_MAX>
__device__ __forceinline__ void epilogue(const MoeGemmParams& p, const TileInfo& t, const float (&acc)[N_MAX / 2],
                                         int M, int u, int c, const int* s_pair, const float* s_rw) {
  constexpr bool kGU = W == Which::kGateUp;
  const bf16_t* bias = static_cast<const bf16_t*>(kGU ? p.w.gate_up_bias : p.w.down_bias) + size_t(t.e) * M;
  const uint32_t b_row0 = uint32_t(reinterpret_cast<const uint16_t*>(bias)[2 * u]) * 0x10001u;  // (b, b)
  const uint32_t b_row1 = uint32_t(reinterpret_cast<const uint16_t*>(bias)[2 * u + 1]) * 0x10001u;
  const int I = p.intermediate;
  // gate_up: act row s = row0 + col, column u; col = 8 j + 2 c + h.
  bf16_t* act = static_cast<bf16_t*>(p.act) + size_t(t.row0 + 2 * c) * I + u;
#pragma unroll
  for (int j = 0; j < N_MAX / 8; ++j) {
    if (j * 8 >= t.n_valid) break;
    const int col0 = j * 8 + 2 * c;
    const uint32_t r0 = bf16x2_add(pack_bf16x2(acc[4 * j], acc[4 * j + 1]), b_row0);      // row 2u, h = 0, 1
    const uint32_t r1 = bf16x2_add(pack_bf16x2(acc[4 * j + 2], acc[4 * j + 3]), b_row1);  // row 2u + 1
    if constexpr (kGU) {
      // Clamped SwiGLU (cpu_ops.cpp swiglu_clamped, its five roundings): g = min(gate, limit), up = clamp(up,
      // +-limit) in fp32 (the limit need not be a bf16 value); ga = bf(g alpha); sig = bf(1 / (1 + e^-ga)) with
      // ex2 and rcp.approx (a few fp32 ulps, far below the bf16 rounding); glu = bf(g sig); out = bf(bf(up + 1)
      // glu), the last product of two bf16 values in one bf16x2 rounding.
      const float L = p.swiglu_limit;
      const float g0 = fminf(lo_f32(r0), L), g1 = fminf(hi_f32(r0), L);
      const uint32_t ga = pack_bf16x2(g0 * p.swiglu_alpha, g1 * p.swiglu_alpha);
      const float e0 = fast_exp2(lo_f32(ga) * -kLog2e), e1 = fast_exp2(hi_f32(ga) * -kLog2e);
      const uint32_t sig = pack_bf16x2(fast_rcp(1.0f + e0), fast_rcp(1.0f + e1));
      const uint32_t glu = pack_bf16x2(g0 * lo_f32(sig), g1 * hi_f32(sig));
      const float u0 = fminf(fmaxf(lo_f32(r1), -L), L), u1 = fminf(fmaxf(hi_f32(r1), -L), L);
      const uint32_t out = bf16x2_mul(pack_bf16x2(u0 + 1.0f, u1 + 1.0f), glu);
      bf16_t* dst = act + size_t(j * 8) * I;
      if (col0 < t.n_valid) *reinterpret_cast<uint16_t*>(dst) = uint16_t(out);
      if (col0 + 1 < t.n_valid) *reinterpret_cast<uint16_t*>(dst + I) = uint16_t(out >> 16);
    } else {
      // Restore to pair order: sorted row s holds pair pair_list[s], so its result goes TO that pair's row
      // (a scatter by the forward permutation = the inverse permutation applied to the sorted rows). The
      // seed's bug was the opposite: it read yw[pair_list[s]] (a gather) where this write was needed.
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = col0 + h;
        if (col >= t.n_valid) continue;
        const float rw = s_rw[col];
        const float v0 = h ? hi_f32(r0) : lo_f32(r0), v1 = h ? hi_f32(r1) : lo_f32(r1);
        *reinterpret_cast<uint32_t*>(static_cast<bf16_t*>(p.yw) + size_t(s_pair[col]) * M + 2 * u) =
            pack_bf16x2(v0 * rw, v1 * rw);
      }
    }
  }
}

// BIG: the layer has scale bytes > 128 (MoeGemmWeights::big_scales; moe_pack_dequant.cuh).
template <Which W, int N_MAX, bool BIG, bool TMA>
__global__ void __launch_bounds__(Cfg<N_MAX, TMA>::kThreadsAll, Cfg<N_MAX, TMA>::kCtasPerSm)
    moe_gemm_mxfp4_kernel(const MoeGemmParams p, const __grid_constant__ CUtensorMap b_map,
                          const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap s_map) {
  using C = Cfg<N_MAX, TMA>;
  constexpr int S = C::kStages, WGS = C::kWgs, NC = C::kConsumers;
  constexpr bool kGU = W == Which::kGateUp;
  extern __shared__ uint8_t s_raw[];
  // 1024-aligned base, derived from s_raw itself so the compiler keeps the shared address space (LDS, not LD).
  uint8_t* smem = s_raw + ((1024u - (smem_u32(s_raw) & 1023u)) & 1023u);
  uint8_t* s_a = smem + S * C::kBBytes;                              // A ring: [S][kASBytes]
  int* s_tile0 = reinterpret_cast<int*>(s_a + S * C::kASBytes);      // [E + 1] first tile of expert e
  int* s_off = s_tile0 + kMaxExperts + 1;                            // [E + 1] expert_offsets
  int* s_pair = s_off + kMaxExperts + 1;                             // [2][NC] down epilogue: pair ids
  float* s_rw = reinterpret_cast<float*>(s_pair + 2 * NC);           // [2][NC] and routing weights
  uint64_t* s_full = reinterpret_cast<uint64_t*>(s_rw + 2 * NC);     // [S] stage filled (producer arrivals)
  uint64_t* s_empty = s_full + S;                                    // [S] stage released (consumer warps)
  constexpr int R = C::kTileRing;
  uint64_t* s_tfull = s_empty + S;                                   // [R] tile id published (dynamic)
  int* s_ring = reinterpret_cast<int*>(s_tfull + R);                 // [R] tile ids (-1: no more)
  const int K = kGU ? p.hidden : p.intermediate, M = kGU ? 2 * p.intermediate : p.hidden;
  // m tiles of 64 WGS rows; the last one may be partial (its warpgroups past M idle).
  const int KT = K / 64, MT64 = M / 64, MT = (MT64 + WGS - 1) / WGS, E = p.n_experts;
  const int tid = threadIdx.x;

  for (int e = tid; e <= E; e += C::kThreadsAll) s_off[e] = p.index.expert_offsets[e];
  if (tid == 0)
    for (int i = 0; i < S; ++i)
      mbarrier_init(&s_full[i], C::kTma ? 1 : C::kProducerThreads), mbarrier_init(&s_empty[i], NC / 32);
  if (tid == 0) {
    for (int i = 0; i < R; ++i) mbarrier_init(&s_tfull[i], 1);
    fence_mbarrier_init();  // visible to the copy engine before the first copy
  }
  __syncthreads();
  if (tid == 0) {
    int n = 0;
    for (int e = 0; e < E; ++e) {
      s_tile0[e] = n;
      n += MT * ((s_off[e + 1] - s_off[e] + N_MAX - 1) / N_MAX);
    }
    s_tile0[E] = n;
  }
  __syncthreads();
  const int total = __shfl_sync(0xffffffffu, s_tile0[E], 0);
  const bool dyn = p.sched != nullptr;
  if (!dyn && int(blockIdx.x) >= total) return;  // (dynamic: such a CTA still counts itself out below)

  // The CTA's i-th tile id, -1 when there is none left. Static: from i. Dynamic: publish() (producer thread 0
  // only, before its read_tile(i)) takes the tile and hands it out; read_tile waits for it (all threads).
  auto static_tile = [&](int i) {
    const int tile = int(blockIdx.x) + i * int(gridDim.x);
    return tile < total ? tile : -1;
  };
  auto publish = [&](int i) {
    int tile = i == 0 ? int(blockIdx.x) : int(atomicAdd(p.sched, 1u)) + int(gridDim.x);
    if (tile >= total) {
      tile = -1;
      // This CTA takes no more tiles. The last CTA to get here knows every counter increment is done and
      // zeroes the workspace for the next launch.
      __threadfence();
      if (atomicAdd(p.sched + 1, 1u) == gridDim.x - 1) p.sched[0] = 0u, p.sched[1] = 0u;
    }
    s_ring[i % R] = tile;
    mbar_arrive(&s_tfull[i % R]);  // release: the id is visible to the waiters' acquire
  };
  auto read_tile = [&](int i) {
    mbarrier_wait(&s_tfull[i % R], (i / R) & 1);
    const int tile = reinterpret_cast<volatile int*>(s_ring)[i % R];
    __syncwarp();
    return __shfl_sync(0xffffffffu, tile, 0);  // uniform for ptxas (see tile_info)
  };

  auto tile_info = [&](int tile) {
    int lo = 0, hi = E;  // s_tile0[lo] <= tile < s_tile0[hi]
    while (hi - lo > 1) {
      const int mid = (lo + hi) >> 1;
      if (s_tile0[mid] <= tile) lo = mid; else hi = mid;
    }
    const int n_nt = (s_off[lo + 1] - s_off[lo] + N_MAX - 1) / N_MAX, local = tile - s_tile0[lo];
    TileInfo t;
    t.e = lo;
    t.mt = local / n_nt;
    t.row0 = s_off[lo] + (local % n_nt) * N_MAX;
    t.n_valid = min(N_MAX, s_off[lo + 1] - t.row0);
    // Uniform already; the shuffles let ptxas prove it, so that branches on the tile around wgmma do not
    // make it serialize every wgmma (C7518/C7520 "wgmma ... serialized ... divergent path").
    t.e = __shfl_sync(0xffffffffu, t.e, 0);
    t.mt = __shfl_sync(0xffffffffu, t.mt, 0);
    t.row0 = __shfl_sync(0xffffffffu, t.row0, 0);
    t.n_valid = __shfl_sync(0xffffffffu, t.n_valid, 0);
    return t;
  };

  // A producer warp's i-th tile id (-1: none left): producer thread 0 takes and publishes it (dynamic), every
  // producer lane reads it.
  auto producer_tile = [&](int i) {
    if (!dyn) return static_tile(i);
    if (tid == NC) publish(i);
    __syncwarp();
    return read_tile(i);
  };

  // Role by warp (shuffled so that ptxas sees a warp-uniform branch; otherwise the consumer path counts as
  // divergent and every wgmma is serialized).
  if (__shfl_sync(0xffffffffu, tid >> 5, 0) >= NC / 32) {
    if constexpr (C::kSetMaxNreg) setmaxnreg_dec<C::kProducerRegs>();
    if constexpr (C::kTma) {
      if (tid - NC >= 32) return;  // producer warps 1-3 of a warpgroup (their registers went to the pool above)
      // ---- copy-engine producer: k-tile kt of the i-th tile into ring slot L % S ----
      // Lane 0 announces the stage's bytes on full[slot] and issues its copies: the B rows [row0, row0 + BR nb)
      // of the sorted matrix as nb TMA boxes (rows past the tile's tokens belong to the next expert or are zeros
      // past n_pairs: they only feed D columns that are not stored), and one 3-D box each of the WGS groups'
      // 2 KB of nibbles and 128 B of scale words. The whole warp runs the loop (tile ids come by shuffle).
      const int lane = tid & 31;
      constexpr int BR = C::kTmaBoxRows;
      uint8_t* s_b = smem;
      if (lane == 0)
        for (const CUtensorMap* m : {&b_map, &a_map, &s_map})
          asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(m)) : "memory");
      int slot = 0, round = 0;
      for (int i = 0;; ++i) {
        const int tile = producer_tile(i);
        if (tile < 0) break;
        const TileInfo t = tile_info(tile);
        const int nb = (t.n_valid + BR - 1) / BR;
        // Whole boxes always: the A / scale box spans WGS groups even where the last m tile has fewer inside M
        // (the next expert's groups, or zeros past the last: their warpgroups idle).
        const uint32_t bytes = uint32_t(nb * BR * 128 + C::kASBytes);
        const int grp = t.e * MT64 + t.mt * WGS;  // weight-row group of warpgroup 0
#pragma unroll 1
        for (int kt = 0; kt < KT; ++kt) {
          mbarrier_wait(&s_empty[slot], (round & 1) ^ 1);  // the consumers released the slot's previous round
          if (lane == 0) {
            mbarrier_arrive_expect_tx(&s_full[slot], bytes);
            uint8_t* sb = s_b + slot * C::kBBytes;
            for (int j = 0; j < nb; ++j) tma_load_2d(sb + j * BR * 128, &b_map, kt * 64, t.row0 + j * BR, &s_full[slot]);
            uint8_t* sa = s_a + slot * C::kASBytes;
            tma_load_3d(sa, &a_map, 0, kt, grp, &s_full[slot]);                // WGS x 2 KB of nibbles
            tma_load_3d(sa + C::kABytes, &s_map, 0, kt, grp, &s_full[slot]);  // WGS x 128 B of scale words
          }
          __syncwarp();
          if (++slot == S) slot = 0, ++round;
        }
      }
      return;
    }
    // ---- cp.async producer (N_MAX >= 128): k-tile kt of the i-th tile into ring slot L % S, L = 0, 1, ... ----
    // One 16-byte cp.async per chunk; completion is signalled on full[slot] by cp.async.mbarrier.arrive
    // (one arrival per producer thread when all of its earlier copies have landed). Consumers never have
    // copies in flight, so their proxy fence (a MEMBAR) does not wait for the prefetches.
    constexpr int PT = C::kProducerThreads, RB = C::kRowsPerProducer, NA = 128 * WGS / PT;
    const int pt = tid - NC, ch = pt & 7;
    const uint8_t* xsrc = static_cast<const uint8_t*>(kGU ? p.xn : p.act);
    const uint8_t* wblocks = kGU ? p.w.gate_up_blocks : p.w.down_blocks;
    const uint8_t* wscales = kGU ? p.w.gate_up_scales : p.w.down_scales;
    const uint32_t sb0 = smem_u32(smem), sa0 = smem_u32(s_a);
    static_assert(C::kTma || (PT == 128 && NA == WGS),
                  "one producer warpgroup: thread pt copies A bytes pt of each warpgroup");
    const uint32_t b_thr = (pt >> 3) * 128 + ((ch ^ ((pt >> 3) & 7)) << 4);  // chunk ch of row pt / 8, swizzled
    // pair / top_k as a multiply-high by ceil(2^32 / top_k): exact for pair * top_k < 2^32 (pair ids < 2^24,
    // top_k <= 128), and cheaper in registers than the division sequence.
    const uint32_t div_m = p.top_k > 1 ? 0xffffffffu / uint32_t(p.top_k) + 1u : 0u;
    int slot = 0, round = 0;
    for (int i = 0;; ++i) {
      const int tile = producer_tile(i);
      if (tile < 0) break;
      const TileInfo t = tile_info(tile);
      // This thread copies chunk ch of the B rows n = pt / 8 + 16 r, r < r_lim (rows past the tile's tokens are
      // not loaded: B row n only feeds D column n, which is not stored), the 16 A bytes of thread pt of each
      // warpgroup inside M, and (pt < 8 n_ok) 16 bytes of scale words. Everything that does not change with
      // the k-tile is hoisted, so that a copy is one address multiply-add and the LDGSTS (the producer's
      // instruction stream bounded the 128 / 192 tiles: ncu, H100, gate_up P = 16384, the consumers found
      // 96% of their stages not yet full).
      // B sources in 16-byte units from xsrc at k-tile 0: gate_up gathers token rows pair / top_k (32-bit
      // offsets: the producer runs on few registers); down reads contiguous sorted rows (one base, 16 rows
      // apart per r).
      uint32_t src16[kGU ? RB : 1];
#pragma unroll
      for (int r = 0; r < (kGU ? RB : 1); ++r) {
        const int n = (pt >> 3) + 16 * r;
        const uint32_t pair = kGU && n < t.n_valid ? uint32_t(p.index.pair_list[t.row0 + n]) : 0u;
        const uint32_t row = kGU ? (div_m ? __umulhi(pair, div_m) : pair) : uint32_t(t.row0 + n);
        src16[r] = row * uint32_t(K / 8) + ch;
      }
      const int r_lim = max(0, (t.n_valid - (pt >> 3) + 15) >> 4);  // rows n < n_valid: r < r_lim
      // A / scale sources at k-tile 0: warpgroup w of the tile reads weight-row group e * MT64 + mt * WGS + w.
      const int n_ok = min(WGS, MT64 - t.mt * WGS);  // warpgroups of the tile inside M
      const size_t grp = size_t(t.e) * MT64 + size_t(t.mt) * WGS;
      const uint8_t* a_src = wblocks + grp * KT * 2048 + pt * 16;
      const uint32_t a_wg_stride = uint32_t(KT) * 2048;  // bytes between the warpgroups' weight-row groups
      const bool s_copy = pt < 8 * n_ok;
      const uint8_t* s_src = wscales + grp * KT * 128 + size_t(pt >> 3) * KT * 128 + (pt & 7) * 16;
#pragma unroll 1
      for (int kt = 0; kt < KT; ++kt) {
        mbarrier_wait(&s_empty[slot], (round & 1) ^ 1);  // the consumers released the slot's previous round
        const uint32_t sb = sb0 + slot * C::kBBytes + b_thr, sa = sa0 + slot * C::kASBytes + pt * 16;
        // B: 4 rows x 8 chunks per warp instruction (coalesced 128-byte rows); row r of this thread is 16 rows
        // (2 KB of the stage) after row r - 1, with the same swizzle (16 r = 0 mod 8).
        const uint8_t* xk = xsrc + size_t(kt) * 128;
#pragma unroll
        for (int r = 0; r < RB; ++r) {
          const uint8_t* src =
              kGU ? xk + size_t(src16[r]) * 16 : xk + size_t(src16[0]) * 16 + size_t(r) * 16 * K * 2;
          if (r < r_lim) cp_async16(sb + r * 2048, src, 16);
        }
        // A: WGS warpgroups x 128 threads x 16 B, contiguous per warpgroup; scale words: WGS x 128 B.
        const uint8_t* ak = a_src + size_t(kt) * 2048;
#pragma unroll
        for (int q = 0; q < NA; ++q)
          if (q < n_ok) cp_async16(sa + q * 2048, ak + size_t(q * a_wg_stride), 16);
        if (s_copy) cp_async16(sa0 + slot * C::kASBytes + C::kABytes + pt * 16, s_src + kt * 128, 16);
        cp_async_mbar_arrive(&s_full[slot]);
        if (++slot == S) slot = 0, ++round;
      }
    }
    cp_async_wait<0>();
    return;
  }
  if constexpr (C::kSetMaxNreg) setmaxnreg_inc<C::kConsumerRegs>();

  // ---- consumer warpgroups: each MMAs its 64 rows ----
  const int wg = tid >> 7, T = tid & 127, c = tid & 3;
  const int u_in_wg = (T >> 5) * 8 + ((tid & 31) >> 2);  // unit of this thread's rows within its 64-row tile
  // This thread's A bytes and scale word in a stage of the A ring; the B tile's descriptor base.
  // (Through an identity shuffle: ptxas otherwise recomputes them from SR_TID every k-tile, an S2R and ~15
  // integer ops ahead of the stage's shared-memory loads.)
  const uint32_t a_thr = opaque_u32(smem_u32(s_a) + wg * 2048 + T * 16);
  const uint32_t s_thr = opaque_u32(smem_u32(s_a) + C::kABytes + wg * 128 + (u_in_wg << 2));
  const bool lane0 = opaque_u32(tid & 31) == 0;
  const uint32_t sb0 = smem_u32(smem);
  float acc[N_MAX / 2];
#pragma unroll
  for (int i = 0; i < N_MAX / 2; ++i) acc[i] = 0.f;
  constexpr int NA_SETS = C::kASets;
  uint32_t afr[NA_SETS][4][4];
  int slot = 0, round = 0;

#pragma unroll 1
  for (int i = 0;; ++i) {
    const int tile = dyn ? read_tile(i) : static_tile(i);
    if (tile < 0) break;
    const TileInfo cur = tile_info(tile);
    // Warpgroups past M idle on a partial m tile; wg is uniform per warp (shuffled for ptxas).
    const bool active = __shfl_sync(0xffffffffu, int(cur.mt * WGS + wg < MT64), 0) != 0;
    const int n_used = __shfl_sync(0xffffffffu, min(N_MAX, (cur.n_valid + 31) & ~31), 0);  // 48: 32 or 48
    int pf_pair = 0;  // down: pair id and routing weight of column tid of the tile, loaded early
    float pf_rw = 0.f;
    if (!kGU && tid < cur.n_valid) pf_pair = p.index.pair_list[cur.row0 + tid];

    // One k-tile: A registers of set BUF (the wgmma of the previous NA_SETS - 1 k-tiles may still read the
    // other sets; the set index restarts per tile because the epilogue waited for all MMAs).
    auto step = [&](auto buf_c, int kt) {
      constexpr int BUF = decltype(buf_c)::value;
      mbarrier_wait(&s_full[slot], round & 1);  // the producer's copies of this k-tile landed
      if constexpr (!C::kTma) fence_proxy_async();  // ... and cp.async's (generic proxy) are visible to wgmma
      if (!kGU && kt == min(1, KT - 1) && tid < cur.n_valid) pf_rw = p.topk_w[pf_pair];
      if (active) {
        const uint4 q = lds128(a_thr + slot * C::kASBytes);
        const uint32_t sw = lds32(s_thr + slot * C::kASBytes);
        moe_pack_dequant<BIG>(q, sw, afr[BUF]);
        wgmma_fence();
        if constexpr (C::kSingleWidth)
          mma_steps<N_MAX>(acc, afr[BUF], b_desc(sb0 + slot * C::kBBytes), kt == 0);
        else
          mma_ktile<N_MAX>(acc, afr[BUF], b_desc(sb0 + slot * C::kBBytes), n_used, kt == 0);
        wgmma_commit();
        wgmma_wait<NA_SETS - 1>();  // the wgmma of k-tile kt - (NA_SETS - 1) retired: its slot can be refilled
      }
      __syncwarp();
      if (kt >= NA_SETS - 1 && lane0)  // release k-tile kt - (NA_SETS - 1)
        mbar_arrive(&s_empty[slot >= NA_SETS - 1 ? slot - (NA_SETS - 1) : slot + S - (NA_SETS - 1)]);
      if (++slot == S) slot = 0, ++round;
    };
#pragma unroll 1
    for (int kt = 0; kt < KT; kt += NA_SETS) {
      step(std::integral_constant<int, 0>{}, kt);
      if (kt + 1 < KT) step(std::integral_constant<int, 1>{}, kt + 1);
      if constexpr (NA_SETS == 3)
        if (kt + 2 < KT) step(std::integral_constant<int, 2>{}, kt + 2);
    }
    int* tile_pair = s_pair + (i & 1) * NC;
    float* tile_rw = s_rw + (i & 1) * NC;
    if (!kGU) {  // stage the pair ids / routing weights for the epilogue (double-buffered by tile parity)
      tile_pair[tid] = pf_pair;
      tile_rw[tid] = pf_rw;
      named_bar_sync(1, NC);
    }
    if (active) {
      wgmma_wait<0>();
      fence_regs(acc);
    }
    // All MMAs of the tile retired: release the stages still held before the epilogue (the producer refills
    // them meanwhile).
    __syncwarp();
    if (lane0)  // the last NA_SETS - 1 k-tiles' stages (fewer if the tile had fewer k-tiles)
      for (int j = min(NA_SETS - 1, KT); j >= 1; --j) mbar_arrive(&s_empty[slot >= j ? slot - j : slot + S - j]);
    if (active) {
      epilogue<W, N_MAX>(p, cur, acc, M, (cur.mt * WGS + wg) * 32 + u_in_wg, c, tile_pair, tile_rw);
      fence_regs(acc);
    }
  }
}

// gate_up's B rows in sorted order: xs[s] = xn[pair_list[s] / top_k] (row_vecs 16-byte vectors per row), so
// that the GEMM's TMA boxes read contiguous rows. One row per CTA iteration (no per-element division).
__global__ void __launch_bounds__(256) moe_gather_rows_kernel(const uint4* __restrict__ xn,
                                                              const int32_t* __restrict__ pair_list, int top_k,
                                                              uint4* __restrict__ xs, int n_rows, int row_vecs) {
  for (int s = blockIdx.x; s < n_rows; s += gridDim.x) {
    const uint4* src = xn + size_t(pair_list[s] / top_k) * row_vecs;
    uint4* dst = xs + size_t(s) * row_vecs;
    for (int c = threadIdx.x; c < row_vecs; c += blockDim.x) dst[c] = src[c];
  }
}

template <Which W, int N_MAX, bool BIG, bool TMA>
void launch_scales(const MoeGemmParams& p, cudaStream_t stream) {
  using C = Cfg<N_MAX, TMA>;
  static const bool smem_ok = (allow_smem(moe_gemm_mxfp4_kernel<W, N_MAX, BIG, TMA>, C::kSmem), true);
  (void)smem_ok;
  static const int n_sm = current_device_sms();
  const int M = W == Which::kGateUp ? 2 * p.intermediate : p.hidden;
  const long max_tiles = long((M / 64 + C::kWgs - 1) / C::kWgs) * ((p.n_pairs + N_MAX - 1) / N_MAX + p.n_experts);
  const int grid = int(std::min<long>(long(n_sm) * C::kCtasPerSm, max_tiles));
  static const bool force_static = std::getenv("MXS_MOE_GEMM_STATIC") != nullptr;  // A/B and debugging
  MoeGemmParams q = p;
  if (force_static) q.sched = nullptr;
  const bool gu = W == Which::kGateUp;
  CUtensorMap b_map{}, a_map{}, s_map{};
  if constexpr (C::kTma) {
    if (gu) {  // B rows in sorted order: xn[pair / top_k] -> yw
      const int row_vecs = p.hidden / 8;
      const int g = std::min(p.n_pairs, n_sm * 8);
      moe_gather_rows_kernel<<<g, 256, 0, stream>>>(static_cast<const uint4*>(p.xn), p.index.pair_list, p.top_k,
                                                    static_cast<uint4*>(p.yw), p.n_pairs, row_vecs);
      CUDA_CHECK_LAUNCH();
    }
    const char* name = gu ? "moe_gemm_mxfp4_gate_up" : "moe_gemm_mxfp4_down";
    const int K = gu ? p.hidden : p.intermediate;
    b_map = make_tensor_map_bf16_2d(gu ? p.yw : p.act, uint64_t(p.n_pairs), uint64_t(K), C::kTmaBoxRows, 64, name);
    // Packed weights (moe_gemm_pack.h) as [groups][k-tiles][2048 B] and scale words as [groups][k-tiles][128 B]:
    // one box per k-tile covers the tile's WGS consecutive 64-row groups.
    const uint64_t groups = uint64_t(p.n_experts) * uint64_t(M / 64);
    a_map = make_tensor_map_bytes_3d(gu ? p.w.gate_up_blocks : p.w.down_blocks, groups, uint64_t(K / 64), 2048,
                                     C::kWgs, name);
    s_map = make_tensor_map_bytes_3d(gu ? p.w.gate_up_scales : p.w.down_scales, groups, uint64_t(K / 64), 128,
                                     C::kWgs, name);
  }
  moe_gemm_mxfp4_kernel<W, N_MAX, BIG, TMA><<<grid, C::kThreadsAll, C::kSmem, stream>>>(q, b_map, a_map, s_map);
  CUDA_CHECK_LAUNCH();
}

// The producer of a 128 / 192 tile (the smaller ones have only the copy engine; down's 192 only it too):
// MoeGemmParams::producer, else the copy engine except for gate_up's 192 tiles at a mean of <= 288 pairs per
// expert (moe_gemm_pick_n_tile's (112, 224] band), where the cp.async gather beat the sorted copy and one MMA
// width (H100: P = 4096 0.297-0.301 vs 0.307-0.313 ms; at P = 16384 0.915-0.930 vs 0.962-0.965).
// MXS_GEMM_CP_ASYNC=1 makes 2 (cp.async) the default: the choice before session 17, for A/Bs.
template <Which W, int N_MAX>
bool copy_engine(const MoeGemmParams& p) {
  if constexpr (N_MAX <= 64 || (W == Which::kDown && N_MAX == 192)) return true;
  static const int env_default = std::getenv("MXS_GEMM_CP_ASYNC") != nullptr ? 2 : 0;
  const int producer = p.producer ? p.producer : env_default;
  if (producer) return producer == 1;
  return W == Which::kDown || N_MAX == 128 || (p.n_pairs + p.n_experts - 1) / p.n_experts > 288;
}

template <Which W, int N_MAX>
void launch(const MoeGemmParams& p, cudaStream_t stream) {
  if (copy_engine<W, N_MAX>(p)) {
    if (p.w.big_scales) return launch_scales<W, N_MAX, true, true>(p, stream);
    return launch_scales<W, N_MAX, false, true>(p, stream);
  }
  if constexpr (N_MAX >= 128 && !(W == Which::kDown && N_MAX == 192)) {  // cp.async configurations
    if (p.w.big_scales) return launch_scales<W, N_MAX, true, false>(p, stream);
    launch_scales<W, N_MAX, false, false>(p, stream);
  }
}

// K = input features, M = output rows of the GEMM named `name`.
void check(const MoeGemmParams& p, int K, int M, const char* name) {
  MXS_CHECK(p.n_pairs >= 1 && p.top_k >= 1 && p.n_experts >= 1 && p.n_experts <= kMaxExperts,
            strfmt("%s: n_pairs %d, top_k %d, n_experts %d (need n_pairs >= 1, 1 <= n_experts <= %d)", name, p.n_pairs,
                   p.top_k, p.n_experts, kMaxExperts));
  MXS_CHECK(K >= 64 && K % 64 == 0 && M >= 64 && M % 64 == 0,
            strfmt("%s: in %d x out %d not supported (both multiples of 64)", name, K, M));
  MXS_CHECK(p.n_tile == 0 || p.n_tile == 32 || p.n_tile == 48 || p.n_tile == 64 || p.n_tile == 128 ||
                p.n_tile == 192,
            strfmt("%s: n_tile %d not supported (0 = auto, 32, 48, 64, 128, 192)", name, p.n_tile));
  MXS_CHECK(p.producer >= 0 && p.producer <= 2, strfmt("%s: producer %d (0 = auto, 1 = copy engine, 2 = cp.async)",
                                                       name, p.producer));
}

template <Which W>
void run(const MoeGemmParams& p, cudaStream_t stream) {
  switch (p.n_tile ? p.n_tile : moe_gemm_pick_n_tile(p.n_pairs, p.n_experts)) {
    case 32: return launch<W, 32>(p, stream);
    case 48: return launch<W, 48>(p, stream);
    case 64: return launch<W, 64>(p, stream);
    case 128: return launch<W, 128>(p, stream);
    default: return launch<W, 192>(p, stream);
  }
}

}  // namespace

// Token tile capacity from the mean pairs per expert m (uniform routing; every tile timed by `bench kernel
// moe-gemm`, column "ms by tile"; data in docs/KERNELS-moe-gemm.md). Weight streaming (copy-engine producer, 2
// consumer warpgroups) up to m = 48: m <= 20: 32 (3 CTAs per SM; H100, rotated rounds, gate_up + down 32 / 48 tile
// at m = 16: 0.204 / 0.209 ms, m = 24: 0.220 / 0.213; gate_up 32 / 64 at m = 20: 0.131 / 0.155), m <= 40: 48 (3 CTAs
// per SM; gate_up 32 / 48 / 64 at m = 28: 0.152 / 0.139 / 0.161, m = 32: 0.194 / 0.145 / 0.168, m = 40: 0.233 /
// 0.169 / 0.175; down at m = 32: 0.108 / 0.080 / 0.090), m <= 48: 64 (2 CTAs per SM; m = 44: gate_up + down even, m
// = 48: gate_up 0.205 / 0.177 with 48 / 64); above, the 3-warpgroup tiles, whose cost is one dequantization per
// token tile plus the MMA columns: 128 up to m = 112 (three A register sets: cheaper per column), 192 where one 192
// tile holds what takes two 128 tiles for most experts, m in (112, 224] (m = 160: 0.420 vs 0.461 ms gate_up), 128
// again for (224, 288] (m = 256: 0.534-0.542 vs 0.556-0.561, down 0.281-0.283 vs 0.308-0.313), and 192 above (m =
// 512: gate_up 0.978-1.000 vs 1.025-1.059, down 0.457-0.483 vs 0.497-0.519; m = 1024: gate_up 1.918-1.939 vs
// 2.110-2.119).
int moe_gemm_pick_n_tile(int n_pairs, int n_experts) {
  const int mean = (n_pairs + n_experts - 1) / n_experts;
  if (mean <= 20) return 32;
  if (mean <= 40) return 48;
  if (mean <= 48) return 64;
  if (mean <= 112) return 128;
  if (mean <= 224) return 192;
  return mean <= 288 ? 128 : 192;
}

void moe_gemm_mxfp4_gate_up(const MoeGemmParams& p, cudaStream_t stream) {
  check(p, p.hidden, 2 * p.intermediate, "moe_gemm_mxfp4_gate_up");
  MXS_CHECK(p.xn != nullptr && p.yw != nullptr && p.act != nullptr,
            "moe_gemm_mxfp4_gate_up: xn, act and yw (the sorted copy of the input rows) must be set");
  run<Which::kGateUp>(p, stream);
}

void moe_gemm_mxfp4_down(const MoeGemmParams& p, cudaStream_t stream) {
  check(p, p.intermediate, p.hidden, "moe_gemm_mxfp4_down");
  run<Which::kDown>(p, stream);
}

}  // namespace mxs::cuda
