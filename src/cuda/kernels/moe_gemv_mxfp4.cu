// MXFP4 expert GEMVs (see moe_gemv_mxfp4.h).
// Mapping: a warp owns a pair of adjacent rows (gate/up unit i = rows 2i, 2i+1 for gate_up; rows 2u, 2u+1 for
// down) and a lane owns whole 32-element blocks: per block it loads 16 bytes of nibbles per row plus the
// scale byte, decodes byte -> bf16x2 through a per-lane copy of a 256-entry table in shared memory (bank =
// lane: conflict-free), and dots with the staged activations; the block's partial sum is scaled by 2^(s-127)
// once. Activations are staged as fp32 in a block-major layout: float4 chunk c (elements 4c..4c+3) of block
// g of row m sits at [(m * 8 + c) * n_blocks + g], so consecutive lanes read consecutive 16-byte words.
#include "cuda/kernels/moe_gemv_mxfp4.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {
namespace {

constexpr int kWarps = 8;
// Row pairs per warp (a CTA covers 32 pairs = 64 rows of one expert).
template <int W>
constexpr int units_per_warp() {
  return 4;
}
constexpr int kLutWords = 256 * 32;                    // [byte][lane] bf16x2
constexpr int kMaxTopK = 8;

enum class Which { kGateUp, kDown };

__device__ __forceinline__ void fill_lut(uint32_t* s_lut) {
  for (int i = threadIdx.x; i < kLutWords; i += blockDim.x) {
    const int byte = i >> 5;
    s_lut[i] = uint32_t(e2m1_bf16_bits(byte & 15)) | (uint32_t(e2m1_bf16_bits(byte >> 4)) << 16);
  }
}

// Stages rows src(m) (bf16 [K]) of the tile into the block-major fp32 layout.
template <int K, int MT, typename RowFn>
__device__ __forceinline__ void stage_blocks_f32(float4* s_x, int n_rows, RowFn src) {
  constexpr int NB = K / 32;
  for (int i = threadIdx.x; i < MT * NB * 8; i += blockDim.x) {
    const int m = i / (NB * 8), rem = i % (NB * 8), g = rem / 8, c = rem % 8;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (m < n_rows) {
      const uint2 w = *reinterpret_cast<const uint2*>(src(m) + g * 32 + c * 4);
      v = make_float4(lo_f32(w.x), hi_f32(w.x), lo_f32(w.y), hi_f32(w.y));
    }
    s_x[(m * 8 + c) * NB + g] = v;
  }
}

// The packed weights of one row pair (rows row0, row0 + 1) as a lane holds them: its blocks g = lane + 32 i.
template <int K>
struct PairRegs {
  static constexpr int NB = K / 32;
  static constexpr int PER_LANE = (NB + 31) / 32;
  uint4 q[2][PER_LANE];
  float sc[2][PER_LANE];
};

template <int K>
__device__ __forceinline__ void load_pair(const uint8_t* blocks, const uint8_t* scales, size_t row0, PairRegs<K>& w) {
  constexpr int NB = PairRegs<K>::NB, PER_LANE = PairRegs<K>::PER_LANE;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int g = lane + 32 * i;
      const bool ok = NB % 32 == 0 || g < NB;
      w.q[r][i] = ok ? ldg_stream(blocks + ((row0 + r) * NB + g) * 16) : make_uint4(0, 0, 0, 0);
      w.sc[r][i] = ok ? e8m0_to_f32(__ldg(scales + (row0 + r) * NB + g)) : 0.f;
    }
}

// acc[r][m] = row r of the pair . staged activation row m (reduced over the warp).
template <int K, int MT>
__device__ __forceinline__ void dot_pair(const PairRegs<K>& w, const float4* s_x, const uint32_t* s_lut,
                                         float (&acc)[2][MT]) {
  constexpr int NB = PairRegs<K>::NB, PER_LANE = PairRegs<K>::PER_LANE;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;
  const uint32_t* lut = s_lut + lane;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int g = min(lane + 32 * i, NB - 1);  // lanes past the last block add 0 (their scale is 0)
    uint32_t d[2][16];  // decoded bf16x2 of the block, per row
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const uint32_t words[4] = {w.q[r][i].x, w.q[r][i].y, w.q[r][i].z, w.q[r][i].w};
#pragma unroll
      for (int b = 0; b < 16; ++b) d[r][b] = lut[((words[b >> 2] >> (8 * (b & 3))) & 0xff) * 32];
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float part[2] = {0.f, 0.f};
#pragma unroll
      for (int c = 0; c < 8; ++c) {
        const float4 xv = s_x[(m * 8 + c) * NB + g];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          part[r] = fmaf(lo_f32(d[r][2 * c]), xv.x, part[r]);
          part[r] = fmaf(hi_f32(d[r][2 * c]), xv.y, part[r]);
          part[r] = fmaf(lo_f32(d[r][2 * c + 1]), xv.z, part[r]);
          part[r] = fmaf(hi_f32(d[r][2 * c + 1]), xv.w, part[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) acc[r][m] = fmaf(part[r], w.sc[r][i], acc[r][m]);
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = warp_sum(acc[r][m]);
}

// Epilogue of one output pair (rows 2 unit, 2 unit + 1 of expert e; `bias` already offset to e) for pair
// `pid`, from the fp32 dots of its two rows: gate_up -> bias + clamped SwiGLU into act, down -> bias + routing
// weight into yw (the rounding points of moe_gemv_mxfp4.h).
template <Which W, int N_PAIRS>
__device__ __forceinline__ void store_pair(const MoeGemvParams& p, int pid, int unit, float acc0, float acc1,
                                           const bf16_t* bias) {
  const float v0 = bf(bf(acc0) + to_f32(bias[2 * unit]));
  const float v1 = bf(bf(acc1) + to_f32(bias[2 * unit + 1]));
  if constexpr (W == Which::kGateUp) {
    const float g = fminf(v0, p.swiglu_limit);
    const float u = fminf(fmaxf(v1, -p.swiglu_limit), p.swiglu_limit);
    const float ga = bf(g * p.swiglu_alpha);
    const float sig = bf(1.0f / (1.0f + expf(-ga)));
    const float glu = bf(g * sig);
    static_cast<bf16_t*>(p.act)[size_t(pid) * N_PAIRS + unit] = to_bf16(bf(u + 1.0f) * glu);
  } else {
    const float rw = p.topk_w[pid];
    bf16_t* y = static_cast<bf16_t*>(p.yw) + size_t(pid) * (2 * N_PAIRS) + 2 * unit;
    y[0] = to_bf16(v0 * rw);
    y[1] = to_bf16(v1 * rw);
  }
}

// grid: (row-pair tiles, n_experts slots of the active list); K = input features, N_PAIRS = output row pairs.
template <Which W, int K, int N_PAIRS, int MT>
__global__ void __launch_bounds__(kWarps * 32, 2) moe_gemv_mxfp4_kernel(MoeGemvParams p) {
  constexpr int kUnitsPerWarp = units_per_warp<int(W)>(), kUnitsPerCta = kWarps * kUnitsPerWarp;
  extern __shared__ float4 s_dyn[];
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(s_dyn);
  float4* s_x = s_dyn + kLutWords / 4;
  fill_lut(s_lut);  // constant: overlaps the previous kernel's tail
  griddep_wait();   // routing, activations
  griddep_launch_dependents();
  const int slot = blockIdx.y;
  if (slot >= *p.index.num_active) return;
  const int e = p.index.active_experts[slot];
  const int begin = p.index.expert_offsets[e], n_pairs = p.index.expert_offsets[e + 1] - begin;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr int R = 2 * N_PAIRS;  // output rows of one expert
  const uint8_t* blocks = W == Which::kGateUp ? p.w.gate_up_blocks : p.w.down_blocks;
  const uint8_t* scales = W == Which::kGateUp ? p.w.gate_up_scales : p.w.down_scales;
  const bf16_t* bias = static_cast<const bf16_t*>(W == Which::kGateUp ? p.w.gate_up_bias : p.w.down_bias) + size_t(e) * R;
  // Software pipeline over the warp's units: the next unit's weights are in flight while the current one is
  // computed; the first unit's loads are issued before the LUT fill and the activation staging. Two units of
  // registers (not all four) keep the kernel at <= 128 registers, two CTAs per SM.
  auto unit_of = [&](int k) { return min(blockIdx.x * kUnitsPerCta + k * kWarps + warp, N_PAIRS - 1); };
  PairRegs<K> cur, nxt;
  load_pair<K>(blocks, scales, size_t(e) * R + 2 * unit_of(0), cur);

  for (int m0 = 0; m0 < n_pairs; m0 += MT) {
    if (m0 > 0) load_pair<K>(blocks, scales, size_t(e) * R + 2 * unit_of(0), cur);
    __syncthreads();
    stage_blocks_f32<K, MT>(s_x, n_pairs - m0, [&](int m) {
      const int pid = p.index.pair_list[begin + m0 + m];
      return W == Which::kGateUp ? static_cast<const bf16_t*>(p.xn) + size_t(pid / p.top_k) * K
                                 : static_cast<const bf16_t*>(p.act) + size_t(pid) * K;
    });
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kUnitsPerWarp; ++k) {
      if (k + 1 < kUnitsPerWarp) load_pair<K>(blocks, scales, size_t(e) * R + 2 * unit_of(k + 1), nxt);
      const int unit = blockIdx.x * kUnitsPerCta + k * kWarps + warp;
      float acc[2][MT];
      dot_pair<K, MT>(cur, s_x, s_lut, acc);  // (a clamped duplicate row past N_PAIRS; not stored)
      if (k + 1 < kUnitsPerWarp) cur = nxt;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (unit >= N_PAIRS || lane != m || m0 + m >= n_pairs) continue;
        store_pair<W, N_PAIRS>(p, p.index.pair_list[begin + m0 + m], unit, acc[0][m], acc[1][m], bias);
      }
    }
  }
}

template <Which W, int K, int N_PAIRS, int MT>
void launch(const MoeGemvParams& p, cudaStream_t stream) {
  constexpr int smem = kLutWords * 4 + MT * K * 4;
  static const bool smem_ok = (allow_smem(moe_gemv_mxfp4_kernel<W, K, N_PAIRS, MT>, smem), true);
  (void)smem_ok;
  const int max_active = p.n_tokens * p.top_k < p.n_experts ? p.n_tokens * p.top_k : p.n_experts;
  constexpr int kUnitsPerCta = kWarps * units_per_warp<int(W)>();
  const dim3 grid((N_PAIRS + kUnitsPerCta - 1) / kUnitsPerCta, max_active);
  launch_pdl(moe_gemv_mxfp4_kernel<W, K, N_PAIRS, MT>, grid, dim3(kWarps * 32), smem, stream, p);
  CUDA_CHECK_LAUNCH();
}

// ---- Tensor-core path (K = 2880, the 20b/120b experts) ----
// mma.sync m16n8k16 (bf16 x bf16 -> fp32). A warp owns a tile of 8 output pairs = 16 rows: A-fragment row g
// (g = lane / 4) is row 2 unit of the pair (gate / even row), row g + 8 is row 2 unit + 1, so one lane ends
// with both rows of its pair. Columns n of B / D are the tile's (up to 8) tokens. K runs in chunks of 4
// MXFP4 blocks: lane c = lane % 4 of a quad streams the whole block 4 ch + c (16 B) of both its rows, so an
// mma k16 step s of the chunk takes bytes 2s, 2s+1 of each lane's block (k-slots 2c, 2c+1 <- elements
// 32c + 4s + {0,1}; 2c+8, 2c+9 <- 32c + 4s + {2,3}); B is read with the same permutation from the staged
// bf16 activations. Bytes decode through the per-lane table; the block scale (a power of two) is applied
// exactly in bf16 (fma.rn.bf16x2 by 2^(s-127)) before the mma, so one fp32 accumulator spans all blocks.
// Two warps split K per tile (chunks [0, 12) and [12, 23)) and reduce through shared memory; kDepth chunks
// of loads stay in flight per lane. Per element: ~1.5 instructions (byte extract, table load, scale) vs ~4
// on the CUDA-core path, which is what bounds the batch-1 GEMV below the copy bandwidth.
namespace tc {
constexpr int kWarps = 8;                  // 4 tiles x 2 K halves
constexpr int kTiles = kWarps / 2;
constexpr int kPairsPerCta = kTiles * 8;   // 32 output pairs = 64 rows of one expert
constexpr int kDepth = 4;                  // chunks of loads in flight per lane (2 x 16 B each)

template <int K, int ROWS>
struct Shape {
  static constexpr int NB = K / 32, NCHUNK = (NB + 3) / 4, KPAD = NCHUNK * 128;
  static constexpr int CH_HALF = (NCHUNK + 1) / 2;  // chunks per K half (the second half's last may be empty)
  // Staged row stride in elements: 8 token rows get a 16-byte skew between rows (fewer bank conflicts).
  static constexpr int SX = ROWS == 1 ? KPAD : KPAD + 8;
  static constexpr int kSmem = kLutWords * 4 + ROWS * SX * 2 + kTiles * 32 * 16;
};

__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// d = a * s exactly (s a power of two or zero, as a bf16x2 word): fma with -0 keeps +0 products +0.
__device__ __forceinline__ uint32_t bf16x2_scale(uint32_t a, uint32_t s) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(s), "r"(0x80008000u));
  return d;
}

__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// One lane's share of chunk ch: block 4 ch + c of rows row0 and row0 + 1 (zeros past the last block).
template <int NB, int NCHUNK>
__device__ __forceinline__ void load_chunk(const uint8_t* blocks, const uint8_t* scales, size_t row0, int ch,
                                           uint4 (&q)[2], uint32_t (&sc)[2]) {
  const int b = ch * 4 + (threadIdx.x & 3);
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (ch < NCHUNK && b < NB) {
      q[r] = ldg_stream(blocks + ((row0 + r) * NB + b) * 16);
      uint32_t s;  // asm volatile: issued here with the block's 16 B, not sunk to its first use
      asm volatile("ld.global.nc.u8 %0, [%1];" : "=r"(s) : "l"(scales + (row0 + r) * NB + b));
      sc[r] = (s << 7) | (s << 23);  // e8m0 -> bf16x2 2^(s-127) (s = 0 -> 0, as e8m0_to_f32)
    } else {
      q[r] = make_uint4(0, 0, 0, 0);
      sc[r] = 0;
    }
  }
}

// grid: (N_PAIRS / 32, active expert slots). ROWS = staged token rows (1: one token; 8: tiles of 8 pairs).
template <Which W, int K, int N_PAIRS, int ROWS>
__global__ void __launch_bounds__(kWarps * 32, 3) moe_gemv_mxfp4_tc_kernel(MoeGemvParams p) {
  using S = Shape<K, ROWS>;
  static_assert(N_PAIRS % kPairsPerCta == 0, "the tensor-core path needs whole CTAs of 32 pairs");
  constexpr int NB = S::NB, NCHUNK = S::NCHUNK, SX = S::SX, CH_HALF = S::CH_HALF, R = 2 * N_PAIRS;
  extern __shared__ uint4 s_dyn4[];
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(s_dyn4);
  bf16_t* s_x = reinterpret_cast<bf16_t*>(s_lut + kLutWords);  // [ROWS][SX] bf16, zero padded
  float4* s_red = reinterpret_cast<float4*>(s_x + ROWS * SX);  // [kTiles][32] second-half partial sums
  fill_lut(s_lut);  // constant: overlaps the previous kernel's tail
  griddep_wait();   // routing, activations
  griddep_launch_dependents();
  const int slot = blockIdx.y;
  if (slot >= *p.index.num_active) return;
  const int e = p.index.active_experts[slot];
  const int begin = p.index.expert_offsets[e], n_pairs = p.index.expert_offsets[e + 1] - begin;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int tile = warp >> 1, half = warp & 1;
  const int unit = blockIdx.x * kPairsPerCta + tile * 8 + g;  // this lane's pair (A rows g and g + 8)
  const uint8_t* blocks = W == Which::kGateUp ? p.w.gate_up_blocks : p.w.down_blocks;
  const uint8_t* scales = W == Which::kGateUp ? p.w.gate_up_scales : p.w.down_scales;
  const bf16_t* bias = static_cast<const bf16_t*>(W == Which::kGateUp ? p.w.gate_up_bias : p.w.down_bias) + size_t(e) * R;
  const size_t row0 = size_t(e) * R + 2 * unit;
  const int ch0 = half * CH_HALF;

  uint4 q[kDepth][2];
  uint32_t sc[kDepth][2];
#pragma unroll
  for (int d = 0; d < kDepth; ++d) load_chunk<NB, NCHUNK>(blocks, scales, row0, ch0 + d, q[d], sc[d]);

  for (int m0 = 0; m0 < n_pairs; m0 += 8) {
    if (m0 > 0)
#pragma unroll
      for (int d = 0; d < kDepth; ++d) load_chunk<NB, NCHUNK>(blocks, scales, row0, ch0 + d, q[d], sc[d]);
    __syncthreads();  // LUT written; the previous tile's reads of s_x / s_red done
    const int n_rows = min(n_pairs - m0, ROWS);
    for (int i = threadIdx.x; i < ROWS * (SX / 8); i += blockDim.x) {
      const int m = i / (SX / 8), v = i % (SX / 8);
      uint4 val = make_uint4(0, 0, 0, 0);
      if (m < n_rows && v < K / 8) {
        const int pid = p.index.pair_list[begin + m0 + m];
        const bf16_t* src = W == Which::kGateUp ? static_cast<const bf16_t*>(p.xn) + size_t(pid / p.top_k) * K
                                                : static_cast<const bf16_t*>(p.act) + size_t(pid) * K;
        val = *reinterpret_cast<const uint4*>(src + v * 8);
      }
      reinterpret_cast<uint4*>(s_x)[i] = val;
    }
    __syncthreads();

    float acc[4] = {0.f, 0.f, 0.f, 0.f};  // D: (row g, tokens 2c, 2c+1), (row g+8, tokens 2c, 2c+1)
    const uint32_t* lut = s_lut + lane;
    // B: token g (ROWS = 1: every lane reads token 0; the columns n > 0 of D are then unused copies).
    const bf16_t* xrow = s_x + (ROWS == 1 ? 0 : g * SX) + c * 32;
#pragma unroll
    for (int j = 0; j < CH_HALF; ++j) {
      const int d = j % kDepth, ch = ch0 + j;
      const bf16_t* xb = xrow + ch * 128;
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        uint32_t a[4];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint32_t w = word_of(q[d][r], s >> 1) >> ((s & 1) * 16);
          a[r] = bf16x2_scale(lut[(w & 0xff) * 32], sc[d][r]);            // k-slots 2c, 2c+1
          a[r + 2] = bf16x2_scale(lut[((w >> 8) & 0xff) * 32], sc[d][r]);  // k-slots 2c+8, 2c+9
        }
        const uint2 b = ch < NCHUNK ? *reinterpret_cast<const uint2*>(xb + 4 * s) : make_uint2(0, 0);
        mma_16816(acc, a, b.x, b.y);
      }
      if (j + kDepth < CH_HALF) load_chunk<NB, NCHUNK>(blocks, scales, row0, ch + kDepth, q[d], sc[d]);
    }
    if (half == 1) s_red[tile * 32 + lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
    __syncthreads();
    if (half == 0) {
      const float4 o = s_red[tile * 32 + lane];
      const float sum[4] = {acc[0] + o.x, acc[1] + o.y, acc[2] + o.z, acc[3] + o.w};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = 2 * c + h;
        if (m >= n_rows) continue;
        store_pair<W, N_PAIRS>(p, p.index.pair_list[begin + m0 + m], unit, sum[h], sum[2 + h], bias);
      }
    }
  }
}

template <Which W, int K, int N_PAIRS, int ROWS>
void launch(const MoeGemvParams& p, cudaStream_t stream) {
  constexpr int smem = Shape<K, ROWS>::kSmem;
  static const bool smem_ok = (allow_smem(moe_gemv_mxfp4_tc_kernel<W, K, N_PAIRS, ROWS>, smem), true);
  (void)smem_ok;
  const int max_active = p.n_tokens * p.top_k < p.n_experts ? p.n_tokens * p.top_k : p.n_experts;
  const dim3 grid(N_PAIRS / kPairsPerCta, max_active);
  launch_pdl(moe_gemv_mxfp4_tc_kernel<W, K, N_PAIRS, ROWS>, grid, dim3(kWarps * 32), smem, stream, p);
  CUDA_CHECK_LAUNCH();
}
}  // namespace tc

// Token-tile size: gate_up 1 for one token, else 4; down always 1 (at <= 128 registers its MT = 2 and 4
// variants spill; further token tiles re-read the expert's rows from L1/L2).
template <Which W, int K, int N_PAIRS>
void dispatch_mt(const MoeGemvParams& p, cudaStream_t stream) {
  if constexpr (K == 2880) {  // tensor-core path: one staged token, or tiles of 8
    if (p.n_tokens == 1) return tc::launch<W, K, N_PAIRS, 1>(p, stream);
    return tc::launch<W, K, N_PAIRS, 8>(p, stream);
  } else if constexpr (W == Which::kDown) {
    return launch<W, K, N_PAIRS, 1>(p, stream);
  } else {
    if (p.n_tokens == 1) return launch<W, K, N_PAIRS, 1>(p, stream);
    if (p.n_tokens == 2) return launch<W, K, N_PAIRS, 2>(p, stream);
    return launch<W, K, N_PAIRS, 4>(p, stream);
  }
}

void check(const MoeGemvParams& p, const char* name) {
  MXS_CHECK(p.n_tokens >= 1, strfmt("%s: n_tokens must be >= 1", name));
  const bool ok = (p.hidden == 2880 && p.intermediate == 2880) || (p.hidden == 64 && p.intermediate == 64);
  MXS_CHECK(ok, strfmt("%s: hidden = %d, intermediate = %d is not supported (supported: 2880/2880, 64/64)", name,
                       p.hidden, p.intermediate));
}

// Residual + sequential bf16 expert sum + next RMSNorm. Grid (token, chunk of 256 columns), thread per column:
// the sum is a short dependent chain per element, so spreading a token over ceil(H / 256) CTAs (12 for 20b)
// instead of one keeps it a few microseconds (one CTA per token took 18 us at batch 1: ~2,000 dependent
// instructions per warp on one SM). Each CTA writes its slice of x and its partial sum of squares; the last
// CTA of the token (arrival counter) adds the partials in chunk order (deterministic) and writes xn for the row.
constexpr int kCombineThreads = 256;
constexpr int kMaxCombineChunks = 16;

__global__ void __launch_bounds__(kCombineThreads) moe_combine_kernel(MoeGemvParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int t = blockIdx.x, chunk = blockIdx.y, n_chunks = gridDim.y, H = p.hidden;
  const int c = chunk * kCombineThreads + threadIdx.x;
  // Slots in ascending expert id (a sorting network over <= 8 register values, no local memory).
  int key[kMaxTopK];
#pragma unroll
  for (int s = 0; s < kMaxTopK; ++s) key[s] = s < p.top_k ? (p.topk_idx[t * p.top_k + s] << 3 | s) : 0x7fffffff;
#pragma unroll
  for (int i = 0; i < kMaxTopK; ++i)
#pragma unroll
    for (int j = 0; j + 1 < kMaxTopK - i; ++j) {
      const int a = min(key[j], key[j + 1]), b = max(key[j], key[j + 1]);
      key[j] = a, key[j + 1] = b;
    }
  bf16_t* x = static_cast<bf16_t*>(p.x) + size_t(t) * H;
  const bf16_t* yw = static_cast<const bf16_t*>(p.yw);
  float xv = 0.f;
  if (c < H) {
    float y[kMaxTopK];
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s)  // all loads first, then the ordered chain
      y[s] = s < p.top_k ? to_f32(yw[(size_t(t) * p.top_k + (key[s] & 7)) * H + c]) : 0.f;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s)
      if (s < p.top_k) acc = bf(acc + y[s]);
    xv = bf(to_f32(x[c]) + acc);
    x[c] = to_bf16(xv);
  }
  if (!p.next_norm) return;
  const float ss = block_sum(xv * xv);
  __shared__ bool s_last;
  __shared__ float s_scale;
  if (n_chunks > 1) {
    if (threadIdx.x == 0) p.norm_partials[t * kMaxCombineChunks + chunk] = ss;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&p.norm_counters[t], 1u) == unsigned(n_chunks) - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
  }
  if (threadIdx.x == 0) {
    float total = ss;
    if (n_chunks > 1) {
      total = 0.f;
      for (int k = 0; k < n_chunks; ++k) total += __ldcg(&p.norm_partials[t * kMaxCombineChunks + k]);
      p.norm_counters[t] = 0u;
    }
    s_scale = 1.0f / sqrtf(total / float(H) + p.eps);
  }
  __syncthreads();
  const float r = s_scale;
  const bf16_t* w = static_cast<const bf16_t*>(p.next_norm);
  bf16_t* out = static_cast<bf16_t*>(p.xn_out) + size_t(t) * H;
  for (int k = threadIdx.x; k < H; k += kCombineThreads) out[k] = to_bf16(to_f32(w[k]) * (to_f32(__ldcg(x + k)) * r));
}

}  // namespace

void moe_gemv_mxfp4_gate_up(const MoeGemvParams& p, cudaStream_t stream) {
  check(p, "moe_gemv_mxfp4_gate_up");
  if (p.hidden == 2880) return dispatch_mt<Which::kGateUp, 2880, 2880>(p, stream);
  return dispatch_mt<Which::kGateUp, 64, 64>(p, stream);
}

void moe_gemv_mxfp4_down(const MoeGemvParams& p, cudaStream_t stream) {
  check(p, "moe_gemv_mxfp4_down");
  if (p.hidden == 2880) return dispatch_mt<Which::kDown, 2880, 1440>(p, stream);
  return dispatch_mt<Which::kDown, 64, 32>(p, stream);
}

void moe_combine(const MoeGemvParams& p, cudaStream_t stream) {
  check(p, "moe_combine");
  MXS_CHECK(p.top_k <= 8, "moe_combine: top_k must be <= 8");
  const int n_chunks = (p.hidden + kCombineThreads - 1) / kCombineThreads;
  MXS_CHECK(n_chunks <= kMaxCombineChunks, "moe_combine: hidden too large");
  MXS_CHECK(!p.next_norm || n_chunks == 1 || (p.norm_partials && p.norm_counters),
            "moe_combine: the fused norm over several column chunks needs norm_partials and norm_counters");
  launch_pdl(moe_combine_kernel, dim3(p.n_tokens, n_chunks), dim3(kCombineThreads), 0, stream, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
