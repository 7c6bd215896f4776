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

// grid: (row-pair tiles, n_experts slots of the active list); K = input features, N_PAIRS = output row pairs.
template <Which W, int K, int N_PAIRS, int MT>
__global__ void __launch_bounds__(kWarps * 32, 2) moe_gemv_mxfp4_kernel(MoeGemvParams p) {
  constexpr int kUnitsPerWarp = units_per_warp<int(W)>(), kUnitsPerCta = kWarps * kUnitsPerWarp;
  extern __shared__ float4 s_dyn[];
  uint32_t* s_lut = reinterpret_cast<uint32_t*>(s_dyn);
  float4* s_x = s_dyn + kLutWords / 4;
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
  fill_lut(s_lut);

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
        const int pid = p.index.pair_list[begin + m0 + m];
        const float v0 = bf(bf(acc[0][m]) + to_f32(bias[2 * unit]));
        const float v1 = bf(bf(acc[1][m]) + to_f32(bias[2 * unit + 1]));
        if constexpr (W == Which::kGateUp) {
          const float g = fminf(v0, p.swiglu_limit);
          const float u = fminf(fmaxf(v1, -p.swiglu_limit), p.swiglu_limit);
          const float ga = bf(g * p.swiglu_alpha);
          const float sig = bf(1.0f / (1.0f + expf(-ga)));
          const float glu = bf(g * sig);
          static_cast<bf16_t*>(p.act)[size_t(pid) * N_PAIRS + unit] = to_bf16(bf(u + 1.0f) * glu);
        } else {
          const float rw = p.topk_w[pid];
          bf16_t* y = static_cast<bf16_t*>(p.yw) + size_t(pid) * R + 2 * unit;
          y[0] = to_bf16(v0 * rw);
          y[1] = to_bf16(v1 * rw);
        }
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
  moe_gemv_mxfp4_kernel<W, K, N_PAIRS, MT><<<grid, kWarps * 32, smem, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

// Token-tile size: gate_up 1 for one token, else 4; down always 1 (at <= 128 registers its MT = 2 and 4
// variants spill; further token tiles re-read the expert's rows from L1/L2).
template <Which W, int K, int N_PAIRS>
void dispatch_mt(const MoeGemvParams& p, cudaStream_t stream) {
  if constexpr (W == Which::kDown) {
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

// Residual + sequential bf16 expert sum + next RMSNorm; one CTA per token.
template <int PER_THREAD>
__global__ void __launch_bounds__(kNormThreads) moe_combine_kernel(MoeGemvParams p) {
  const int t = blockIdx.x, H = p.hidden;
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
  float xv[PER_THREAD];
#pragma unroll
  for (int i = 0; i < PER_THREAD; ++i) {
    const int c = threadIdx.x + i * kNormThreads;
    xv[i] = 0.f;
    if (c >= H) continue;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < kMaxTopK; ++s)
      if (s < p.top_k) acc = bf(acc + to_f32(yw[(size_t(t) * p.top_k + (key[s] & 7)) * H + c]));
    xv[i] = bf(to_f32(x[c]) + acc);
    x[c] = to_bf16(xv[i]);
  }
  if (p.next_norm)
    rmsnorm_row_write<PER_THREAD>(xv, static_cast<const bf16_t*>(p.next_norm), H, p.eps,
                                  static_cast<bf16_t*>(p.xn_out) + size_t(t) * H);
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
  if (p.hidden == 2880)
    moe_combine_kernel<(2880 + kNormThreads - 1) / kNormThreads><<<p.n_tokens, kNormThreads, 0, stream>>>(p);
  else
    moe_combine_kernel<1><<<p.n_tokens, kNormThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
