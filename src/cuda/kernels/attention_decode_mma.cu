// Tensor-core paged decode attention (attention_decode_mma, declared in attention_decode.h): split-K over keys,
// sinks, sliding window, GQA 8 in the M dimension of mma.sync m16n8k16 (bf16 in, fp32 accumulate).
//
// CTA = (token t, kv head g, key split z), 4 warps. M rows 0..7 = q heads g*8 .. g*8+7 of token t, rows 8..15
// zero padding (their A registers are 0 and their results are never read): every K/V byte is read once per
// (token, kv head) instead of once per q head. The split's keys [k_begin, k_end) are cut into chunks of 16;
// warp w takes chunks w, w+4, ... through its own cp.async ring of STAGES chunks (one chunk = K and V,
// 2 x [16][64] bf16, swizzled rows; 3 stages by default: 4 CTAs per SM), so the key loop has no CTA barrier.
// Rows are gathered through the split's block-table entries (staged in smem up front when they fit); keys
// >= k_end are zero-filled and their table entries never read. Per chunk and warp:
// S = Q K^T (2 n-tiles x 4 k-steps), S = bf(bf(q.k) * 0.125) (the reference's rounding points, as
// attention_prefill), online softmax in the log2 domain in fp32 with the running max started at the sink logit
// (every state finite, a split without keys is (sink, 0, 0)), P rounded to bf16 as the A operand of O += P V
// (V through ldmatrix.trans). The 4 warps then merge through smem; one split writes bf(O / (L + 2^(sink - M))).
// Several splits merge in split order with the sink (deterministic), one of two ways with the same operations:
// - cluster (4-16 splits, the default): the n split CTAs of a (t, g) are one thread-block cluster; each pushes
//   its (M, L, O) items into the shared memory of the CTA that merges them (CTA r of the cluster owns items
//   [r * per, (r + 1) * per) of the 8 heads x 16 four-dim groups, per = ceil(128 / n)), one cluster barrier, and
//   every CTA merges its items from its own shared memory: no global partials, fence or counter;
// - global (2-3 or more than 16 splits, or `cluster_merge` off): every CTA writes its (M, L, O) partials, and the
//   last CTA of (t, g) to arrive (counter) merges them through L2 and resets the counter.
// Measured (H200, `mxserve bench kernel attention-decode`): 93-102% of the copy bandwidth on full layers from batch 64
// at 1k keys; see docs/KERNELS.md.
#include <cmath>

#include <cooperative_groups.h>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_decode.h"
#include "cuda/kernels/attention_mma.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/cluster_barrier.cuh"
#include "cuda/kernels/cta_trace.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {

MXS_CTA_TRACE_BINDER(attention_decode_mma)
namespace {

using namespace attn;
namespace cg = cooperative_groups;

constexpr int kHeadDim = 64;
constexpr int kGroup = 8;      // q heads per kv head = MMA rows used
constexpr int kWarps = 4;
constexpr int kChunk = 16;     // keys per warp step (one MMA k-step of P.V)
constexpr int kStageElems = 2 * kChunk * kHeadDim;  // K [16][64] then V [16][64], bf16
// STAGES: per-warp cp.async ring depth (STAGES chunks in flight per warp); smem STAGES x 16 KiB per CTA, so
// 3 stages fit 4 CTAs per SM (4 x 49.4 KiB), 4 stages 3 CTAs.
template <int STAGES>
constexpr int smem_bytes() { return kWarps * STAGES * kStageElems * 2; }
constexpr int kTabMax = kAttentionMmaMaxTableEntries;
constexpr int kORow = 72;      // fp32 row stride of a warp's [8][64] O tile in the merge (conflict-free float2)
constexpr int kMaxClusterSplits = 16;  // non-portable cluster size (H100 / H200)
// The fewest splits that merge in a cluster: at 2 splits (20b batch 16-32 at 1k context) the cluster launch lost
// ~1% per step against the L2 merge (H100, exp103-104); from 4 it wins (batch 1: 1.618-1.636 -> 1.606-1.611 ms).
constexpr int kMinClusterSplits = 4;
// Merge slots a CTA owns in cluster mode: n splits x ceil(128 / n) items, at most 128 + n.
constexpr int kClusterSlots = kGroup * 16 + kMaxClusterSplits;

__device__ __forceinline__ uint32_t ld_u32(const bf16_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ __forceinline__ void store_bf16x4(void* dst, float a, float b, float c, float d) {
  *reinterpret_cast<uint2*>(dst) = make_uint2(pack_bf16x2(a, b), pack_bf16x2(c, d));
}

// CLUSTER: the split merge of a (token, kv head) in its cluster of n_splits CTAs (gridDim.z; grid z = cluster z).
template <int STAGES, bool CLUSTER>
__global__ void __launch_bounds__(kWarps * 32, 4) attention_decode_mma_kernel(AttentionDecodeParams p) {
  CtaTrace trace;
  if constexpr (CLUSTER) cluster_arrive_relaxed();  // (cluster_barrier.cuh; the wait before the pushes below)
  constexpr int kStages = STAGES;
  extern __shared__ __align__(128) bf16_t smem[];  // [kWarps][kStages][kStageElems]; reused for the merge
  __shared__ int32_t s_tab[kTabMax];
  __shared__ float s_m[kWarps][kGroup], s_l[kWarps][kGroup];
  __shared__ bool s_last;

  // Before griddep_wait only step inputs (positions, token_seq, block tables: host-to-device copies that precede
  // the step's first kernel), weights (sinks) and the cached K / V of keys older than the token (earlier steps
  // wrote them) are read, so the position -> table -> K / V chain overlaps the previous kernel's tail; q and the
  // token's own key / value (qkv_rope), the partials and the counters are touched after it.
  const int t = blockIdx.x, g = blockIdx.y, z = blockIdx.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int pos = p.meta.positions[t];
  const int32_t* table = p.meta.block_tables + size_t(p.meta.token_seq[t]) * p.meta.max_blocks_per_seq;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int k_begin = lo + z * p.keys_per_split;
  const int k_end = min(pos + 1, k_begin + p.keys_per_split);
  const int bs_shift = __ffs(p.kv.block_size) - 1, bs_mask = p.kv.block_size - 1;
  // The split's block-table entries: blocks of keys [k_begin, k_end), all visible (>= lo), so a released
  // sliding block below the window is never looked up. Staged in smem when they fit (splits of <= 4096 keys at
  // block size 16); longer splits read them from global memory (L1) as they go.
  const int b_first = k_begin >> bs_shift;
  const int n_tab = k_end > k_begin ? ((k_end - 1) >> bs_shift) - b_first + 1 : 0;
  const bool tab_staged = n_tab <= kTabMax;
  if (tab_staged)
    for (int i = tid; i < n_tab; i += kWarps * 32) s_tab[i] = table[b_first + i];
  const bf16_t* sinks = static_cast<const bf16_t*>(p.sinks);
  const float sink2 = to_f32(sinks[g * kGroup + gid]) * kLog2e;
  // The sinks of the merges below (this thread's head of the group; the cluster merge's item), loaded now: after
  // the merges' barriers each would be one more L2 round trip on the critical path (~0.5 us, H100 CTA trace).
  const float sink2h = to_f32(sinks[g * kGroup + (tid >> 4)]) * kLog2e;
  float sink2m = 0.f;
  if constexpr (CLUSTER) {
    const int per = (kGroup * 16 + p.n_splits - 1) / p.n_splits, item = z * per + tid;
    if (tid < per && item < kGroup * 16) sink2m = to_f32(sinks[g * kGroup + (item >> 4)]) * kLog2e;
  }
  __syncthreads();  // s_tab

  // Element offsets (32-bit within a block; the block index product in 64 bits): block b, K|V w, head g,
  // position j, chunk c -> b * block_elems + w * kv_elems + g * slab + j * 64 + c * 8.
  const int slab = p.kv.block_size * kHeadDim;
  const int kv_elems = p.kv.n_kv_heads * slab;
  const int block_elems = 2 * kv_elems;
  const bf16_t* kv = static_cast<const bf16_t*>(p.kv.base);
  const int thr_off = g * slab + (lane & 7) * 8;
  bf16_t* ring = smem + warp * kStages * kStageElems;
  // Lane copies 16-byte chunk (lane & 7) of rows lane/8 + 4j (j < 4) of a chunk's K and V.
  auto load_chunk = [&](int c, int stage) {
    const int key0 = k_begin + c * kChunk;
    bf16_t* sk = ring + stage * kStageElems;
#pragma unroll
    for (int j = 0; j < kChunk / 4; ++j) {
      const int r = (lane >> 3) + 4 * j, key = key0 + r;
      const bool ok = key < k_end;
      const bf16_t* src = kv;
      if (ok) {
        const int i = (key >> bs_shift) - b_first;
        const int32_t block = tab_staged ? s_tab[i] : __ldg(table + b_first + i);
        src = kv + size_t(uint32_t(block)) * uint32_t(block_elems) + uint32_t(thr_off + (key & bs_mask) * kHeadDim);
      }
      const int dst = swz(r, lane & 7);
      cp_async16(smem_u32(sk + dst), src, ok ? 16 : 0);
      cp_async16(smem_u32(sk + kChunk * kHeadDim + dst), ok ? src + kv_elems : src, ok ? 16 : 0);
    }
  };

  const int n_chunks = k_end > k_begin ? (k_end - k_begin + kChunk - 1) / kChunk : 0;
  const int n_mine = n_chunks > warp ? (n_chunks - warp + kWarps - 1) / kWarps : 0;
  // The ring's first chunks whose keys are all older than the token (cached by earlier steps, not by this
  // step's qkv_rope) load before griddep_wait, overlapping qkv_rope's tail; the rest (the chunk holding the
  // token's own key and later ones) after it. One commit group per stage either way.
  int s_pre = 0;
  while (s_pre < kStages - 1 && s_pre < n_mine && k_begin + (warp + kWarps * s_pre + 1) * kChunk <= pos) {
    load_chunk(warp + kWarps * s_pre, s_pre);
    cp_async_commit();
    ++s_pre;
  }
  griddep_wait();  // q and the token's key / value come from qkv_rope
  trace.waited();
  griddep_launch_dependents();

  // Q A-fragments for the 4 k-steps of 16 dims: a0/a2 = row gid (head g*8 + gid), a1 = a3 = 0 (padding rows).
  const bf16_t* qh = static_cast<const bf16_t*>(p.q) + (size_t(t) * p.n_heads + g * kGroup + gid) * kHeadDim;
  uint32_t qa[4][4];
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    qa[kk][0] = ld_u32(qh + kk * 16 + 2 * tig);
    qa[kk][1] = 0u;
    qa[kk][2] = ld_u32(qh + kk * 16 + 8 + 2 * tig);
    qa[kk][3] = 0u;
  }

  float o[8][4];  // O, n-tile n = dims 8n..8n+7: o[n][0..1] = row gid, dims 8n + 2 tig (+1); [2..3] padding
#pragma unroll
  for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m = sink2, l = 0.f;  // running max (log2 units) of row gid, this lane's share of the row sum

  for (int s = s_pre; s < kStages - 1; ++s) {
    if (s < n_mine) load_chunk(warp + kWarps * s, s);
    cp_async_commit();
  }
  for (int j = 0; j < n_mine; ++j) {
    const int jn = j + kStages - 1;
    if (jn < n_mine) load_chunk(warp + kWarps * jn, jn % kStages);
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // chunk j has landed (this lane's copies) ...
    __syncwarp();                  // ... and every lane's
    const bf16_t* sk = ring + (j % kStages) * kStageElems;
    const bf16_t* sv = sk + kChunk * kHeadDim;

    // S = Q K^T: s[n][e], key = key0 + 8n + 2 tig + e (e < 2: row gid; e >= 2: padding rows).
    float s[2][4];
#pragma unroll
    for (int n = 0; n < 2; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t b[4];  // (keys 0-7, dims 16kk..+7), (keys 0-7, +8..15), then keys 8-15
      ldmatrix_x4(b, smem_u32(sk + swz((lane & 7) + (lane >> 4) * 8, kk * 2 + ((lane >> 3) & 1))));
      mma_bf16(s[0], qa[kk], b[0], b[1]);
      mma_bf16(s[1], qa[kk], b[2], b[3]);
    }
    const int key0 = k_begin + (warp + kWarps * j) * kChunk;
    float x[2][2], mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int key = key0 + 8 * n + 2 * tig + e;
        x[n][e] = key < k_end ? bf(bf(s[n][e]) * 0.125f) * kLog2e : -INFINITY;
        mx = fmaxf(mx, x[n][e]);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m, mx);
    const float corr = fast_exp2(m - m_new);  // exactly 1 when the max did not move
    m = m_new;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        x[n][e] = fast_exp2(x[n][e] - m_new);  // masked keys: 0
        sum += x[n][e];
      }
    l = l * corr + sum;
    if (__any_sync(0xffffffffu, corr != 1.f)) {
#pragma unroll
      for (int n = 0; n < 8; ++n) o[n][0] *= corr, o[n][1] *= corr;
    }
    // O += P V: P's A fragment for this 16-key k-step = the C fragments of S's two n-tiles, rows 8..15 zero.
    const uint32_t pa[4] = {pack_bf16x2(x[0][0], x[0][1]), 0u, pack_bf16x2(x[1][0], x[1][1]), 0u};
#pragma unroll
    for (int dp = 0; dp < 4; ++dp) {
      uint32_t b[4];  // (keys 0-7, dims 16dp..+7), (keys 8-15, same), then dims 16dp+8..+15
      ldmatrix_x4_trans(b, smem_u32(sv + swz((lane & 7) + ((lane >> 3) & 1) * 8, dp * 2 + (lane >> 4))));
      mma_bf16(o[2 * dp], pa, b[0], b[1]);
      mma_bf16(o[2 * dp + 1], pa, b[2], b[3]);
    }
    __syncwarp();  // every lane has read this stage before it is refilled
  }
  cp_async_wait<0>();  // only empty groups remain; the ring is free for the merge
  __syncwarp();

  // Merge the 4 warps: each writes its O rows (fp32 [8][kORow] at the start of its own ring), m and l.
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  float* wo = reinterpret_cast<float*>(ring);
#pragma unroll
  for (int n = 0; n < 8; ++n)
    *reinterpret_cast<float2*>(wo + gid * kORow + 8 * n + 2 * tig) = make_float2(o[n][0], o[n][1]);
  if (tig == 0) s_m[warp][gid] = m, s_l[warp][gid] = l;
  __syncthreads();
  const int h = tid >> 4, d0 = (tid & 15) * 4;  // this thread's head of the group and 4 dims
  const int head = g * kGroup + h;
  float M = s_m[0][h];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) M = fmaxf(M, s_m[w][h]);
  float L = 0.f, O[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const float f = fast_exp2(s_m[w][h] - M);
    const float4 v =
        *reinterpret_cast<const float4*>(reinterpret_cast<const float*>(smem + w * kStages * kStageElems) + h * kORow + d0);
    L += s_l[w][h] * f;
    O[0] += v.x * f, O[1] += v.y * f, O[2] += v.z * f, O[3] += v.w * f;
  }
  bf16_t* out = static_cast<bf16_t*>(p.out) + (size_t(t) * p.n_heads + head) * kHeadDim + d0;
  if (p.n_splits == 1) {
    const float inv = 1.f / (L + fast_exp2(sink2h - M));  // M >= sink2h: the sink term is <= 1
    store_bf16x4(out, O[0] * inv, O[1] * inv, O[2] * inv, O[3] * inv);
    trace.end(kTraceAttention);
    return;
  }
  if constexpr (CLUSTER) {
    // Item tid = (head h, dims d0..d0+3) goes to CTA tid / per of the cluster, slot z * per + tid % per.
    __shared__ float4 s_po[kClusterSlots];
    __shared__ float2 s_pml[kClusterSlots];
    const int n = p.n_splits, per = (kGroup * 16 + n - 1) / n;
    cg::cluster_group cluster = cg::this_cluster();
    const int owner = tid / per, slot = z * per + tid % per;
    float4* po = cluster.map_shared_rank(&s_po[slot], owner);
    float2* pml = cluster.map_shared_rank(&s_pml[slot], owner);
    cluster_wait();  // (the arrive at the top)
    *po = make_float4(O[0], O[1], O[2], O[3]);
    *pml = make_float2(M, L);
    cluster.sync();  // every split's items are in their owner's smem (release / acquire over the cluster)
    trace.mark();
    if (tid < per && z * per + tid < kGroup * 16) {
      const int item = z * per + tid, mh = g * kGroup + (item >> 4), md0 = (item & 15) * 4;
      float Mz = sink2m;  // every split's max started at the sink, so Mz = max over splits
      for (int zz = 0; zz < n; ++zz) Mz = fmaxf(Mz, s_pml[zz * per + tid].x);
      float Lz = fast_exp2(sink2m - Mz), Oz[4] = {0.f, 0.f, 0.f, 0.f};
      for (int zz = 0; zz < n; ++zz) {
        const float2 ml = s_pml[zz * per + tid];
        const float4 v = s_po[zz * per + tid];
        const float f = fast_exp2(ml.x - Mz);
        Lz += ml.y * f;
        Oz[0] += v.x * f, Oz[1] += v.y * f, Oz[2] += v.z * f, Oz[3] += v.w * f;
      }
      const float inv = 1.f / Lz;
      bf16_t* mout = static_cast<bf16_t*>(p.out) + (size_t(t) * p.n_heads + mh) * kHeadDim + md0;
      store_bf16x4(mout, Oz[0] * inv, Oz[1] * inv, Oz[2] * inv, Oz[3] * inv);
    }
    trace.end(kTraceAttention);
    return;
  }
  const size_t idx = (size_t(t) * p.n_heads + head) * p.n_splits + z;
  *reinterpret_cast<float4*>(p.part_o + idx * kHeadDim + d0) = make_float4(O[0], O[1], O[2], O[3]);
  if ((tid & 15) == 0) *reinterpret_cast<float2*>(p.part_ml + idx * 2) = make_float2(M, L);
  // The last CTA of this (token, kv head) to finish merges the splits (read through L2) and resets the counter.
  __threadfence();
  __syncthreads();
  if (tid == 0) s_last = atomicAdd(&p.counters[t * p.n_kv_heads + g], 1u) == unsigned(p.n_splits) - 1;
  __syncthreads();
  if (!s_last) {
    trace.end(kTraceAttention);
    return;
  }
  trace.mark();
  __threadfence();
  const size_t base = (size_t(t) * p.n_heads + head) * p.n_splits;
  float Mz = sink2h;  // every split's max started at the sink, so Mz = max over splits
  for (int zz = 0; zz < p.n_splits; ++zz) Mz = fmaxf(Mz, __ldcg(&p.part_ml[(base + zz) * 2]));
  float Lz = fast_exp2(sink2h - Mz), Oz[4] = {0.f, 0.f, 0.f, 0.f};
  for (int zz = 0; zz < p.n_splits; ++zz) {
    const float2 ml = __ldcg(reinterpret_cast<const float2*>(p.part_ml + (base + zz) * 2));
    const float4 v = __ldcg(reinterpret_cast<const float4*>(p.part_o + (base + zz) * kHeadDim + d0));
    const float f = fast_exp2(ml.x - Mz);
    Lz += ml.y * f;
    Oz[0] += v.x * f, Oz[1] += v.y * f, Oz[2] += v.z * f, Oz[3] += v.w * f;
  }
  const float inv = 1.f / Lz;
  store_bf16x4(out, Oz[0] * inv, Oz[1] * inv, Oz[2] * inv, Oz[3] * inv);
  if (tid == 0) p.counters[t * p.n_kv_heads + g] = 0u;
  trace.end(kTraceAttention);
}

// Whether n splits of a (token, kv head) can run as one cluster: the runtime places at least one such cluster.
template <int STAGES>
bool cluster_fits(int n) {
  static int fits[kMaxClusterSplits + 1] = {};  // 0 unknown, 1 yes, 2 no
  if (n < kMinClusterSplits || n > kMaxClusterSplits) return false;
  if (fits[n] == 0) {
    auto* k = attention_decode_mma_kernel<STAGES, true>;
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<STAGES>()));
    CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(1, 1, unsigned(n));
    cfg.blockDim = dim3(kWarps * 32);
    cfg.dynamicSmemBytes = smem_bytes<STAGES>();
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeClusterDimension;
    attr.val.clusterDim.x = 1, attr.val.clusterDim.y = 1, attr.val.clusterDim.z = unsigned(n);
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    int clusters = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, k, &cfg));
    fits[n] = clusters > 0 ? 1 : 2;
  }
  return fits[n] == 1;
}

template <int STAGES>
void launch(const AttentionDecodeParams& p, cudaStream_t stream) {
  static const bool attr_ok = [] {
    CUDA_CHECK(cudaFuncSetAttribute(attention_decode_mma_kernel<STAGES, false>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<STAGES>()));
    return true;
  }();
  (void)attr_ok;
  const dim3 grid(p.n_tokens, p.n_kv_heads, p.n_splits);
  if (p.cluster_merge && cluster_fits<STAGES>(p.n_splits))
    launch_pdl_cluster(attention_decode_mma_kernel<STAGES, true>, grid, dim3(kWarps * 32), smem_bytes<STAGES>(),
                       stream, dim3(1, 1, p.n_splits), p);
  else
    launch_pdl(attention_decode_mma_kernel<STAGES, false>, grid, dim3(kWarps * 32), smem_bytes<STAGES>(), stream, p);
  CUDA_CHECK_LAUNCH();
}

void launch_stages(const AttentionDecodeParams& p, int stages, cudaStream_t stream) {
  if (stages == 2)
    launch<2>(p, stream);
  else if (stages == 3)
    launch<3>(p, stream);
  else if (stages == 4)
    launch<4>(p, stream);
  else
    throw Error(strfmt("attention_decode_mma: %d stages (supported: 2, 3, 4)", stages));
}

void check(const AttentionDecodeParams& p) {
  MXS_CHECK(p.n_tokens >= 1 && p.n_splits >= 1 && p.n_splits <= 65535,
            strfmt("attention_decode_mma: n_tokens = %d, n_splits = %d (need >= 1, splits <= 65535)", p.n_tokens,
                   p.n_splits));
  MXS_CHECK(p.n_kv_heads > 0 && p.n_kv_heads <= 65535 && p.n_heads == p.n_kv_heads * kGroup,
            strfmt("attention_decode_mma: n_heads %d / n_kv_heads %d is not a GQA group of 8 (supported: group 8, "
                   "head_dim 64)", p.n_heads, p.n_kv_heads));
  MXS_CHECK(p.kv.n_kv_heads == p.n_kv_heads && p.kv.block_size > 0, "attention_decode_mma: bad KvLayerView");
  const int bs = p.kv.block_size;
  MXS_CHECK((bs & (bs - 1)) == 0, strfmt("attention_decode_mma: block_size %d is not a power of two", bs));
  MXS_CHECK(2LL * p.n_kv_heads * bs * kHeadDim < (1LL << 31), "attention_decode_mma: KV block too large");
  MXS_CHECK(!p.exact, "attention_decode_mma: the exact path is attention_decode's (exact = true)");
  MXS_CHECK(p.keys_per_split >= kChunk && p.keys_per_split % kChunk == 0,
            strfmt("attention_decode_mma: keys_per_split = %d must be a positive multiple of %d", p.keys_per_split,
                   kChunk));
  MXS_CHECK(p.n_splits == 1 || (p.counters != nullptr && p.part_o != nullptr && p.part_ml != nullptr),
            "attention_decode_mma: n_splits > 1 needs part_o, part_ml and zeroed counters (the global merge's, also "
            "where the cluster merge runs: it falls back to them when a cluster does not fit)");
}

}  // namespace

void attention_decode_mma(const AttentionDecodeParams& p, cudaStream_t stream) {
  check(p);
  launch_stages(p, kAttentionMmaDefaultStages, stream);
}

void attention_decode_mma_stages(const AttentionDecodeParams& p, int stages, cudaStream_t stream) {
  check(p);
  launch_stages(p, stages, stream);
}

}  // namespace mxs::cuda
