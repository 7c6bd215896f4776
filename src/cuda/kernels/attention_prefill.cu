// Flash-attention prefill over the paged KV cache; see attention_prefill.h and
// docs/KERNELS-attention-prefill.md.
//
// CTA = (query tile of TQ = 4 * WARPS tokens, kv head g). Its M dimension is the TQ x 8 (query, head) pairs
// of the group, row r = query (r / 8), q head g * 8 + (r % 8): the 8 heads of one token are contiguous in q
// and out (1 KiB), and the 8 heads share every K/V tile. Warp w owns rows [32w, 32w + 32) = two m16 tiles =
// queries 4w .. 4w + 3; in the mma C layout lane l holds rows l/4 and l/4 + 8 of an m16 tile, i.e. head
// l/4 of two consecutive queries, so a thread's causal limits are those of its 4 queries.
// Key tiles of KT (64 or 128) positions, aligned to KT (a power-of-two block never straddles a tile), are
// gathered through the block table with cp.async (zero-filled beyond the last query position, so no table
// entry past the context or below the first query's window is read) into a 2-stage ring; smem rows are 128 B with the 16-B chunk index XOR
// (row & 7), so ldmatrix's 8 row addresses hit 8 different bank groups.
// Per sub-tile of KS (32 or 64) keys and warp: S = Q K^T (2 m-tiles x KS/8 n-tiles x 4 k-steps mma), mask
// if the sub-tile crosses the diagonal or the window edge, online softmax in the log2 domain (fp32), P ->
// bf16 A fragments in registers (the C layout of two n8 tiles is the A layout of one k16 step), O += P V
// (V read with ldmatrix.trans). The running max starts at the sink logit with the sink's term kept apart,
// so every row has a finite max even when all its keys are masked, and the sink joins the denominator at
// the end; it moves lazily (only when a tile's max exceeds it by 2^8), so most tiles skip the O rescale.
#include "cuda/kernels/attention_prefill.h"

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/attention_mma.cuh"
#include "cuda/kernels/attention_prefill_tile.cuh"
#include "cuda/kernels/attention_prefill_wgmma.h"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;
constexpr int kGroup = 8;      // q heads per kv head
constexpr int kStages = 2;
constexpr float kRescaleSlack = 8.f;            // log2 units: the running max may lag the true max by 2^8
using namespace attn;  // cp.async, ldmatrix, mma_bf16, fast_exp2, pack_bf16x2, swz (attention_mma.cuh)


// WARPS: 4 or 8 (TQ = 16 or 32 queries). KT: keys per pipeline stage (64 or 128). KS: keys per softmax
// sub-tile (32 or 64, <= KT): S = Q K^T, mask, online softmax and O += P V run per sub-tile, so the S
// registers are 2 x KS/8 x 4 and the next sub-tile's Q K^T MMAs do not depend on this one's softmax.
template <int WARPS, int KT, int KS>
__global__ void __launch_bounds__(WARPS * 32, 8 / WARPS) attention_prefill_kernel(AttentionPrefillParams p) {
  constexpr int kKeyTile = KT;
  constexpr int kN = KS / 8;              // n8 tiles of S per m-tile and sub-tile
  constexpr int kThreads = WARPS * 32;
  constexpr int kRows = WARPS * 32;       // (query, head) rows of the CTA
  extern __shared__ __align__(128) bf16_t smem[];
  bf16_t* s_q = smem;                                   // [kRows][64]; reused for the output
  bf16_t* s_k = s_q + kRows * kHeadDim;                 // [kStages][KT][64]
  bf16_t* s_v = s_k + kStages * kKeyTile * kHeadDim;    // [kStages][KT][64]

  griddep_wait();  // q and the cache come from qkv_rope (PDL: nothing global is read before this)
  griddep_launch_dependents();
  const int g = blockIdx.x;                             // kv head
  const PrefillTileKeys tk = prefill_tile_keys(p, p.tiles[p.n_tiles - 1 - blockIdx.y]);  // longest tiles first
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int first = tk.first, nq = tk.nq, p_first = tk.p_first, p_last = tk.p_last;
  const int kt_begin = tk.kt_begin(kKeyTile), kt_end = tk.kt_end(kKeyTile);  // key tiles with a visible key

  for (int i = tid; i < kRows * 8; i += kThreads) copy_q_chunk(p, g, tk, i >> 3, i & 7, s_q);
  // K/V tile: thread t copies chunk (t & 7) of rows t/8 + j * (threads/8), K and V alike, so one table
  // lookup serves both (attention_prefill_tile.cuh).
  constexpr int kRowsPerPass = kThreads / 8;
  static_assert(kKeyTile % kRowsPerPass == 0, "key tile rows must split evenly over the threads");
  const int ld_c = tid & 7, ld_r = tid >> 3;
  const PagedKvGather gather = paged_kv_gather(p, g, tk, ld_c);
  auto load_kv = [&](int kt, int stage) {
#pragma unroll
    for (int j = 0; j < kKeyTile / kRowsPerPass; ++j) {
      const int r = ld_r + j * kRowsPerPass;
      const int dst = stage * kKeyTile * kHeadDim + swz(r, ld_c);
      gather.copy(kt * kKeyTile + r, smem_u32(s_k + dst), smem_u32(s_v + dst));
    }
  };
  load_kv(kt_begin, 0);
  cp_async_commit();

  // This thread's rows: m-tile mt, half hf -> query warp*4 + mt*2 + hf, head lane/4 of the group.
  const int gid = lane >> 2, tig = lane & 3;
  int qpos[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int qi = warp * 4 + mt * 2 + hf;
      qpos[mt][hf] = qi < nq ? p.meta.positions[first + qi] : -1;  // -1: padding row, every key masked
    }
  const float sink2 = to_f32(static_cast<const bf16_t*>(p.sinks)[g * kGroup + gid]) * kLog2e;

  float o[2][8][4];
  float m[2][2], l[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) m[mt][hf] = sink2, l[mt][hf] = 0.f;
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][n][e] = 0.f;
  }
  uint32_t qa[2][4][4];  // A fragments of Q: [m-tile][k-step of 16 dims][4], loaded once

  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int stage = (kt - kt_begin) & 1;
    if (kt + 1 < kt_end) {
      load_kv(kt + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (kt == kt_begin) {
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const int r = warp * 32 + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          ldmatrix_x4(qa[mt][kk], smem_u32(s_q + swz(r, kk * 2 + (lane >> 4))));
        }
    }

#pragma unroll
    for (int sub = 0; sub < KT / KS; ++sub) {
      const bf16_t* sk = s_k + (stage * kKeyTile + sub * KS) * kHeadDim;
      const bf16_t* sv = s_v + (stage * kKeyTile + sub * KS) * kHeadDim;
      const int key0 = kt * kKeyTile + sub * KS;
      if (key0 > p_last || key0 + KS <= tk.lo) continue;  // sub-tile with no visible key (KS < KT only)
      // S = Q K^T (raw dot products): s[mt][n][e], key = key0 + 8n + 2*tig + (e & 1), row half = e >> 1.
      // (sk rows are sub-tile relative; the swizzle uses the absolute smem row, a multiple of 8 apart.)
      float s[2][kN][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int n = 0; n < kN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][n][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int np = 0; np < kN / 2; ++np) {
          uint32_t b[4];  // b0, b1 of n-tile 2np, then of n-tile 2np + 1
          const int r = np * 16 + (lane & 7) + (lane >> 4) * 8;
          ldmatrix_x4(b, smem_u32(sk + swz(r, kk * 2 + ((lane >> 3) & 1))));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(s[mt][2 * np], qa[mt][kk], b[0], b[1]);
            mma_bf16(s[mt][2 * np + 1], qa[mt][kk], b[2], b[3]);
          }
        }

      // Scores with the reference's rounding points (gpt-oss-spec.md §3.4, cpu attention_with_sink):
      // S = bf(bf(q.k) * 0.125). Without them (fp32 S) a prompt's attention drifts from the reference by
      // ~1e-2 relative on peaky rows, enough to flip near-tied MoE routing on random weights.
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int n = 0; n < kN; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][n][e] = bf(bf(s[mt][n][e]) * 0.125f);

      // Mask only sub-tiles that cross the diagonal (a key after the first query) or the window's edge.
      if (key0 + KS - 1 > p_first || (p.window > 0 && key0 <= p_last - p.window)) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int n = 0; n < kN; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = key0 + 8 * n + 2 * tig + (e & 1);
              const int qp = qpos[mt][e >> 1];
              if (key > qp || (p.window > 0 && key <= qp - p.window)) s[mt][n][e] = -INFINITY;
            }
      }

      // Online softmax in the log2 domain: m is the running max of S * log2(e), finite from the
      // start (the sink), so p = exp2(s * scale - m) is one FFMA + EX2 and a masked key gives exp2(-inf) = 0.
      float corr[2][2];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float mx = -INFINITY;
#pragma unroll
          for (int n = 0; n < kN; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * hf], s[mt][n][2 * hf + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          // Lazy max: m moves only when the tile's max exceeds it by more than kRescaleSlack, so p <= 2^8
          // (exact enough in fp32 sums and as bf16 MMA operands) and most tiles skip the O rescale.
          const float cand = mx * kLog2e;
          const float m_new = cand > m[mt][hf] + kRescaleSlack ? cand : m[mt][hf];
          corr[mt][hf] = fast_exp2(m[mt][hf] - m_new);  // exactly 1 when m did not move
          m[mt][hf] = m_new;
          float sum = 0.f;
#pragma unroll
          for (int n = 0; n < kN; ++n) {
            const float p0 = fast_exp2(fmaf(s[mt][n][2 * hf], kLog2e, -m_new));
            const float p1 = fast_exp2(fmaf(s[mt][n][2 * hf + 1], kLog2e, -m_new));
            s[mt][n][2 * hf] = p0, s[mt][n][2 * hf + 1] = p1;
            sum += p0 + p1;
          }
          l[mt][hf] = l[mt][hf] * corr[mt][hf] + sum;  // this thread's partial (quad-reduced at the end)
        }
      // Rescale O only when some row of the warp moved its max (rare once the max has settled).
      if (__any_sync(0xffffffffu, corr[0][0] != 1.f || corr[0][1] != 1.f || corr[1][0] != 1.f || corr[1][1] != 1.f)) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) o[mt][n][e] *= corr[mt][e >> 1];
      }

      // O += P V: P's A fragment for k-step kk = the C fragments of n-tiles 2kk (keys +0..7), 2kk+1 (+8..15).
#pragma unroll
      for (int kk = 0; kk < kN / 2; ++kk) {
        uint32_t pa[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          pa[mt][0] = pack_bf16x2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
          pa[mt][1] = pack_bf16x2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
          pa[mt][2] = pack_bf16x2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
          pa[mt][3] = pack_bf16x2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
          uint32_t b[4];  // (keys 0-7, dims 16dp..+7), (keys 8-15, same), then dims 16dp+8..+15
          const int r = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
          ldmatrix_x4_trans(b, smem_u32(sv + swz(r, dp * 2 + (lane >> 4))));
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            mma_bf16(o[mt][2 * dp], pa[mt], b[0], b[1]);
            mma_bf16(o[mt][2 * dp + 1], pa[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites this stage
  }

  // Epilogue: out = bf(O / den), staged through this warp's own rows of s_q (only this warp read them) for
  // 16-byte coalesced stores (attention_prefill_tile.cuh).
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float inv = prefill_inv_den(l[mt][hf], m[mt][hf], sink2);
      const int r = warp * 32 + mt * 16 + hf * 8 + gid;
#pragma unroll
      for (int n = 0; n < 8; ++n) stage_out_pair(s_q, r, n, tig, o[mt][n][2 * hf] * inv, o[mt][n][2 * hf + 1] * inv);
    }
  __syncwarp();
  store_out_rows<8>(p, g, tk, s_q, warp * 32, lane);
}

template <int WARPS, int KT, int KS>
void launch(const AttentionPrefillParams& p, cudaStream_t stream) {
  constexpr int kSmem = (WARPS * 32 + 2 * kStages * KT) * kHeadDim * int(sizeof(uint16_t));
  static const bool attr_ok = [] {
    CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_kernel<WARPS, KT, KS>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
    return true;
  }();
  (void)attr_ok;
  launch_pdl(attention_prefill_kernel<WARPS, KT, KS>, dim3(p.n_kv_heads, p.n_tiles), dim3(WARPS * 32), kSmem, stream,
             p);
}

template <int WARPS>
void launch_warps(const AttentionPrefillParams& p, int kt, int ks, cudaStream_t stream) {
  if (kt == 64)
    ks == 64 ? launch<WARPS, 64, 64>(p, stream) : launch<WARPS, 64, 32>(p, stream);
  else
    ks == 64 ? launch<WARPS, 128, 64>(p, stream) : launch<WARPS, 128, 32>(p, stream);
}

}  // namespace

void attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_kv_heads > 0 && p.n_heads == p.n_kv_heads * kGroup,
            strfmt("attention_prefill: n_heads %d / n_kv_heads %d is not a GQA group of 8 (head_dim 64)", p.n_heads,
                   p.n_kv_heads));
  MXS_CHECK(p.kv.n_kv_heads == p.n_kv_heads && p.kv.block_size > 0, "attention_prefill: bad KvLayerView");
  if (p.n_tiles == 0) return;
  MXS_CHECK(p.n_tiles > 0 && p.n_tiles <= 65535, strfmt("attention_prefill: n_tiles = %d", p.n_tiles));
  const int bs = p.kv.block_size;
  MXS_CHECK((bs & (bs - 1)) == 0, strfmt("attention_prefill: block_size %d is not a power of two", bs));
  MXS_CHECK(2LL * p.n_kv_heads * bs * kHeadDim < (1LL << 31), "attention_prefill: KV block too large");
  const int kt = p.key_tile ? p.key_tile : p.window > 0 ? kPrefillDefaultKeyTileSliding : kPrefillDefaultKeyTileFull;
  const int ks = p.sub_tile ? p.sub_tile : std::min(kt, kPrefillDefaultSubTile);
  MXS_CHECK((kt == 64 || kt == 128) && (ks == 32 || ks == 64) && ks <= kt,
            strfmt("attention_prefill: key_tile %d / sub_tile %d (supported: 64 or 128 / 32 or 64, <= key_tile)",
                   kt, ks));
  static const int forced = std::getenv("MXS_PREFILL_ATTN") ? std::atoi(std::getenv("MXS_PREFILL_ATTN")) : -1;
  const int impl = forced >= 0 ? forced : p.impl;
  if (impl == AttentionPrefillParams::kWgmma ||
      (impl == AttentionPrefillParams::kAuto && p.key_tile == 0 && p.sub_tile == 0))
    return attention_prefill_wgmma(p, stream);
  if (p.tile_q == kPrefillTileQ16)
    launch_warps<4>(p, kt, ks, stream);
  else if (p.tile_q == kPrefillTileQ32)
    launch_warps<8>(p, kt, ks, stream);
  else
    throw Error(strfmt("attention_prefill: tile_q = %d (supported: 16, 32)", p.tile_q));
}

}  // namespace mxs::cuda
