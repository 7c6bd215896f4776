// Flash-attention prefill on wgmma (sm_90a); same contract and numerics as attention_prefill_kernel
// (attention_prefill.h, docs/KERNELS-attention-prefill.md), for query tiles of 16 or 32 tokens.
//
// CTA = (query tile of 8 NWG tokens of one sequence, kv head g) = NWG (2 or 4) consumer warpgroups + 1 producer
// warp.
// M dimension = (query, head) rows of the GQA group as in the mma.sync kernel: CTA row R = query R / 8, q head
// 8 g + R % 8; consumer warpgroup wg owns rows [64 wg, 64 wg + 64) = queries 8 wg .. 8 wg + 7, and in the wgmma
// D layout thread (warp w of the group, lane = 4 gid + tig) holds rows 16 w + gid and 16 w + gid + 8: head gid
// of queries 8 wg + 2 w and 8 wg + 2 w + 1.
// Producer warp: gathers Q once and then key tiles of KT = 64 positions (K and V, 64 rows x 128 B each)
// through the block table with 16-byte cp.async into an S-stage ring in the 128-byte swizzle (chunk c of row r
// at (c ^ (r & 7)) * 16; tiles 1024-aligned), signalling full[stage] with cp.async.mbarrier.arrive; consumers
// never issue copies, so their async-proxy fence does not wait for the prefetches (docs/KERNELS-moe-gemm.md).
// Consumers per key tile: S = Q K^T as 4 x wgmma.m64n64k16 (A = the warpgroup's 64 Q rows and B = the K
// tile, both K-major in shared memory: as an RS operand ptxas reused Q's registers for temporaries after the
// first tile); the scores rounded to bf16 a pair per cvt and kept packed for the mask and the row max
// (max.bf16x2); the mma.sync kernel's lazy online softmax with the 0.125 scale folded into the exp2 FMA (the
// softmax's instruction count bounds this kernel as much as the tensor pipe does); P -> bf16 A fragments in
// registers (the D layout of key columns 16 s .. 16 s + 15 is the A layout of k16 step s), O += P V as 4 x wgmma.m64n64k16 with B = the V tile read MN-major (TRANS_B: rows are keys,
// i.e. k, and the 64 dims are n), then one arrival per warp on empty[stage].
#include "cuda/kernels/attention_prefill_wgmma.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_mma.cuh"
#include "cuda/kernels/attention_prefill_tile.cuh"
#include "cuda/kernels/bulk_copy.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/wgmma.cuh"

namespace mxs::cuda {
namespace {

using namespace attn;  // fast_exp2, swz (+ cp_async16 from mma_bf16.cuh, pack_bf16x2 / lo_f32 / hi_f32)
constexpr int kHeadDim = 64;
constexpr int kGroup = 8;       // q heads per kv head
constexpr int kKt = 64;         // keys per tile
constexpr int kStages = 4;
constexpr int kTileBytes = kKt * kHeadDim * 2;    // one K or V tile: 8 KB

// NWG consumer warpgroups = 8 NWG queries per CTA (tile_q); one producer warp.
template <int NWG>
struct Cfg {
  static constexpr int kTq = 8 * NWG;
  static constexpr int kRows = kTq * kGroup;  // (query, head) rows
  static constexpr int kConsumers = 128 * NWG;
  static constexpr int kThreads = kConsumers + 32;
  static constexpr int kQBytes = kRows * kHeadDim * 2;
  static constexpr int kSmem = 1024 + kQBytes + kStages * 2 * kTileBytes + 64 * 8;  // + alignment + barriers
  static constexpr int kCtasPerSm = NWG == 2 ? 2 : 1;  // NWG 2: 93 registers, 2 CTAs (81 KB each) per SM
};
// Scores stay unscaled (bf(q.k)) until the exponent: scaling by 0.125 is exact in bf16 and fp32, so
// S * log2(e) = bf(q.k) * (0.125 log2(e)) bit for bit (one rounding and one multiply fewer per score).
constexpr float kScaleLog2 = 0.125f * kLog2e;
constexpr float kRescaleSlack = 8.f;  // as attention_prefill_kernel: the running max may lag by 2^8

// Elementwise max of two bf16x2 words.
__device__ __forceinline__ uint32_t max_bf16x2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("max.bf16x2 %0, %1, %2;\n" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

template <int NWG>
__global__ void __launch_bounds__(Cfg<NWG>::kThreads, Cfg<NWG>::kCtasPerSm)
    attention_prefill_wgmma_kernel(AttentionPrefillParams p) {
  using C = Cfg<NWG>;
  constexpr int kRows = C::kRows, kConsumers = C::kConsumers, kQBytes = C::kQBytes;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  uint8_t* base = smem_raw + (((raw + 1023) & ~1023u) - raw);  // 1024-aligned: the swizzle repeats every 1 KB
  bf16_t* s_q = reinterpret_cast<bf16_t*>(base);                          // [kRows][64]; output staging
  bf16_t* s_kv = reinterpret_cast<bf16_t*>(base + kQBytes);               // [stage][K | V][64 keys][64]
  uint64_t* s_full = reinterpret_cast<uint64_t*>(base + kQBytes + kStages * 2 * kTileBytes);
  uint64_t* s_empty = s_full + kStages;
  uint64_t* s_qfull = s_empty + kStages;
  const int tid = threadIdx.x;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) mbarrier_init(&s_full[s], 32), mbarrier_init(&s_empty[s], kConsumers / 32);
    mbarrier_init(s_qfull, 32);
    fence_mbarrier_init();
  }
  __syncthreads();

  griddep_wait();  // q and the cache come from qkv_rope
  griddep_launch_dependents();
  const int g = blockIdx.x;
  const PrefillTileKeys tk = prefill_tile_keys(p, p.tiles[p.n_tiles - 1 - blockIdx.y]);  // longest tiles first
  const int first = tk.first, nq = tk.nq, p_first = tk.p_first, p_last = tk.p_last;
  const int kt_begin = tk.kt_begin(kKt), kt_end = tk.kt_end(kKt);

  // Role by warp, shuffled so that ptxas sees a warp-uniform branch (else it serializes every wgmma).
  if (__shfl_sync(0xffffffffu, tid >> 5, 0) == kConsumers / 32) {
    // ---- producer warp ----
    const int lane = tid & 31, ch = lane & 7, r0 = lane >> 3;  // chunk ch of rows r0 + 4 j
    for (int j = 0; j < kRows / 4; ++j) copy_q_chunk(p, g, tk, r0 + 4 * j, ch, s_q);
    cp_async_mbar_arrive(s_qfull);
    const PagedKvGather gather = paged_kv_gather(p, g, tk, ch);  // (attention_prefill_tile.cuh)
    for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
      const int stage = i % kStages;
      mbarrier_wait(&s_empty[stage], ((i / kStages) & 1) ^ 1);  // the consumers released its previous round
      bf16_t* sk = s_kv + stage * 2 * (kTileBytes / 2);
      bf16_t* sv = sk + kTileBytes / 2;
#pragma unroll 4
      for (int j = 0; j < kKt / 4; ++j) {
        const int r = r0 + 4 * j;
        gather.copy(kt * kKt + r, smem_u32(sk + swz(r, ch)), smem_u32(sv + swz(r, ch)));
      }
      cp_async_mbar_arrive(&s_full[stage]);
    }
    cp_async_wait<0>();
    return;
  }

  // ---- consumers ----
  const int wg = tid >> 7, w = (tid >> 5) & 3, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  int qpos[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int qi = 8 * wg + 2 * w + hf;
    qpos[hf] = qi < nq ? p.meta.positions[first + qi] : -1;  // -1: padding row, every key masked
  }
  const float sink2 = to_f32(static_cast<const bf16_t*>(p.sinks)[g * kGroup + gid]) * kLog2e;
  const int row0 = 64 * wg + 16 * w;  // this warp's first CTA row

  mbarrier_wait(s_qfull, 0);  // (the proxy fence after each tile's full wait also covers Q)
  const uint64_t q_desc = b_desc(smem_u32(s_q) + wg * 64 * 128);  // this warpgroup's 64 Q rows (K-major A)

  float o[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.f;
  float m[2] = {sink2, sink2}, l[2] = {0.f, 0.f};
  const uint32_t kv0 = smem_u32(s_kv);

  for (int kt = kt_begin, i = 0; kt < kt_end; ++kt, ++i) {
    const int stage = i % kStages;
    mbarrier_wait(&s_full[stage], (i / kStages) & 1);
    fence_proxy_async();  // cp.async wrote the tile through the generic proxy; wgmma reads it through the async one
    const uint32_t sk = kv0 + stage * 2 * kTileBytes, sv = sk + kTileBytes;
    // S = Q K^T: s[4 n + e] = (row half e >> 1, key kt * 64 + 8 n + 2 tig + (e & 1)).
    float s[32];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_ss64(s, q_desc + 2 * kk, b_desc(sk) + 2 * kk, kk > 0);  // +32 B per k16
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(s);

    const int key0 = kt * kKt;
    // S = bf(bf(q.k) * 0.125) = bf(q.k) * 0.125 (exact): the scores rounded to bf16 a pair per cvt, kept packed
    // for the mask and the row max (max.bf16x2: half the max instructions); w[2 n + hf] = keys 8 n + 2 tig, + 1
    // of row half hf.
    uint32_t w[16];
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) w[2 * n + hf] = pack_bf16x2(s[4 * n + 2 * hf], s[4 * n + 2 * hf + 1]);
    if (key0 + kKt - 1 > p_first || (p.window > 0 && key0 <= p_last - p.window)) {
#pragma unroll
      for (int n = 0; n < 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = key0 + 8 * n + 2 * tig + (e & 1);
          const int qp = qpos[e >> 1];
          if (key > qp || (p.window > 0 && key <= qp - p.window)) {
            uint32_t& x = w[2 * n + (e >> 1)];
            x = (e & 1) ? (x & 0x0000ffffu) | 0xff800000u : (x & 0xffff0000u) | 0x0000ff80u;  // bf16 -inf
          }
        }
    }
    float corr[2];
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      uint32_t hm = w[hf];
#pragma unroll
      for (int n = 1; n < 8; ++n) hm = max_bf16x2(hm, w[2 * n + hf]);
      float mx = fmaxf(lo_f32(hm), hi_f32(hm));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float cand = mx * kScaleLog2;  // the scaled max, log2 units
      const float m_new = cand > m[hf] + kRescaleSlack ? cand : m[hf];
      corr[hf] = fast_exp2(m[hf] - m_new);
      m[hf] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        const float p0 = fast_exp2(fmaf(lo_f32(w[2 * n + hf]), kScaleLog2, -m_new));
        const float p1 = fast_exp2(fmaf(hi_f32(w[2 * n + hf]), kScaleLog2, -m_new));
        s[4 * n + 2 * hf] = p0, s[4 * n + 2 * hf + 1] = p1;
        sum += p0 + p1;
      }
      l[hf] = l[hf] * corr[hf] + sum;
    }
    if (corr[0] != 1.f || corr[1] != 1.f) {
#pragma unroll
      for (int i2 = 0; i2 < 32; ++i2) o[i2] *= corr[(i2 >> 1) & 1];
    }
    uint32_t pa[4][4];  // k16 step kk = keys 16 kk .. 16 kk + 15 = D columns of n8 tiles 2 kk, 2 kk + 1
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      pa[kk][0] = pack_bf16x2(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
    }
    // O += P V: B = V tile [64 keys][64 dims] read MN-major; k16 step kk starts 16 rows = 2048 B further.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma_rs<64, 1>(o, pa[kk], b_desc(sv) + 128 * kk, 1);
    wgmma_commit();
    wgmma_wait<0>();
    fence_regs(o);
    if (lane == 0) mbar_arrive(&s_empty[stage]);
  }

  // Epilogue (attention_prefill_tile.cuh): out = bf(O / den), staged in this warp's own Q rows for 16-byte
  // stores, once every warp of the warpgroup is past its last wgmma (their S MMAs read all 64 Q rows).
  asm volatile("bar.sync %0, 128;\n" ::"r"(1 + wg) : "memory");
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const float inv = prefill_inv_den(l[hf], m[hf], sink2);
#pragma unroll
    for (int n = 0; n < 8; ++n)
      stage_out_pair(s_q, row0 + hf * 8 + gid, n, tig, o[4 * n + 2 * hf] * inv, o[4 * n + 2 * hf + 1] * inv);
  }
  __syncwarp();
  store_out_rows<4>(p, g, tk, s_q, row0, lane);
}

template <int NWG>
void launch(const AttentionPrefillParams& p, cudaStream_t stream) {
  using C = Cfg<NWG>;
  static const bool attr_ok = [] {
    CUDA_CHECK(cudaFuncSetAttribute(attention_prefill_wgmma_kernel<NWG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    C::kSmem));
    return true;
  }();
  (void)attr_ok;
  launch_pdl(attention_prefill_wgmma_kernel<NWG>, dim3(p.n_kv_heads, p.n_tiles), dim3(C::kThreads), C::kSmem, stream,
             p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_prefill_wgmma(const AttentionPrefillParams& p, cudaStream_t stream) {
  if (p.tile_q == kPrefillTileQ16) return launch<2>(p, stream);
  if (p.tile_q == kPrefillTileQ32) return launch<4>(p, stream);
  throw Error(strfmt("attention_prefill_wgmma: tile_q = %d (supported: 16, 32)", p.tile_q));
}

}  // namespace mxs::cuda
