// Paged decode attention with sinks and sliding window; see attention_decode.h.
// attention_decode_split: one CTA per (token, kv head, key split), one warp per q head of the GQA group over
// 64-key tiles staged in shared memory (details above the kernel). Scores follow the reference rounding
// S = bf(bf(q.k) * 0.125); the softmax itself is fp32 (the reference's bf16 P is not reproduced).
#include "cuda/kernels/attention_decode.h"

#include <cmath>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;

// Split path: CTA per (token, kv head, split of keys_per_split keys); warp h = q head h of the GQA group.
// The CTA walks its split in tiles of 64 keys: all 256 threads stage the tile's K and V rows (16-byte loads,
// all issued before the first use) in shared memory, then every warp scores the tile for its head (lane =
// keys lane and lane + 32, q broadcast from shared memory), keeps an online softmax (m warp-uniform, l per
// lane) and accumulates P.V (lane = head dims 2 lane, 2 lane + 1, P broadcast by shuffle). The 8 heads share
// every K/V byte; no warp walks a long serial chain (the v1 kernel gave one 32-key tile to each of 4 warps
// for all 8 heads: ~2,000 dependent instructions per warp, 22 us for 128 keys at batch 1).
// Partials (m, l, unnormalized o) go to the workspace; with `counters` the last CTA of a (token, kv head)
// to finish merges them with the sink (no second launch); without, attention_decode_combine does.
constexpr int kSplitWarps = 8;    // = GQA group
constexpr int kSplitTile = 64;    // keys staged per tile
constexpr int kKRowPad = 72;      // staged K row: 64 + 8 bf16 = 144 B, conflict-free 16-byte reads by 8 lanes

__device__ __forceinline__ void merge_partials_to_out(const AttentionDecodeParams& p, int t, int h, int lane) {
  const float sink = to_f32(static_cast<const bf16_t*>(p.sinks)[h]);
  const size_t base = (size_t(t) * p.n_heads + h) * p.n_splits;
  float M = sink;
  for (int z = 0; z < p.n_splits; ++z)
    if (__ldcg(&p.part_ml[(base + z) * 2 + 1]) > 0.f) M = fmaxf(M, __ldcg(&p.part_ml[(base + z) * 2]));
  float L = expf(sink - M), O0 = 0.f, O1 = 0.f;
  for (int z = 0; z < p.n_splits; ++z) {
    const float lz = __ldcg(&p.part_ml[(base + z) * 2 + 1]);
    if (lz == 0.f) continue;
    const float f = expf(__ldcg(&p.part_ml[(base + z) * 2]) - M);
    const float2 o = __ldcg(reinterpret_cast<const float2*>(p.part_o + (base + z) * kHeadDim) + lane);
    L += lz * f;
    O0 += o.x * f;
    O1 += o.y * f;
  }
  uint32_t* out = reinterpret_cast<uint32_t*>(static_cast<bf16_t*>(p.out) + (size_t(t) * p.n_heads + h) * kHeadDim);
  const __nv_bfloat162 v = __floats2bfloat162_rn(O0 / L, O1 / L);
  out[lane] = *reinterpret_cast<const uint32_t*>(&v);
}

__global__ void __launch_bounds__(kSplitWarps * 32) attention_decode_split(AttentionDecodeParams p) {
  __shared__ __align__(16) bf16_t s_k[kSplitTile][kKRowPad];
  __shared__ __align__(16) bf16_t s_v[kSplitTile][kHeadDim];
  __shared__ __align__(16) float s_q[kSplitWarps][kHeadDim];
  __shared__ bool s_last;
  griddep_wait();  // q and the cache come from qkv_rope
  griddep_launch_dependents();
  const int t = blockIdx.x, g = blockIdx.y, z = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int h = g * kSplitWarps + warp;
  const int pos = p.meta.positions[t];
  const int32_t* table = p.meta.block_tables + size_t(p.meta.token_seq[t]) * p.meta.max_blocks_per_seq;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int k_begin = lo + z * p.keys_per_split;
  const int k_end = min(pos + 1, k_begin + p.keys_per_split);
  {
    const uint32_t qq = reinterpret_cast<const uint32_t*>(static_cast<const bf16_t*>(p.q) +
                                                          (size_t(t) * p.n_heads + h) * kHeadDim)[lane];
    s_q[warp][2 * lane] = lo_f32(qq);
    s_q[warp][2 * lane + 1] = hi_f32(qq);
  }
  const size_t head_stride = size_t(p.kv.block_size) * kHeadDim;  // one (block, K|V, head) slab
  const bf16_t* kv = static_cast<const bf16_t*>(p.kv.base);

  float m = -INFINITY, l = 0.f, o0 = 0.f, o1 = 0.f;  // m warp-uniform; l per lane (summed at the end)
  for (int k0 = k_begin; k0 < k_end; k0 += kSplitTile) {
    const int n = min(kSplitTile, k_end - k0);
    __syncthreads();  // the previous tile is consumed (first tile: s_q written)
    // Stage K and V: 64 keys x 8 uint4 each, 4 loads per thread in flight.
    uint4 stage[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = threadIdx.x + r * kSplitWarps * 32, which = i >> 9, j = (i & 511) >> 3, c = i & 7;
      stage[r] = make_uint4(0, 0, 0, 0);
      if (j < n) {
        const int key = k0 + j;
        const int block = table[key / p.kv.block_size];
        stage[r] = *reinterpret_cast<const uint4*>(kv + ((size_t(block) * 2 + which) * p.kv.n_kv_heads + g) * head_stride +
                                                   size_t(key % p.kv.block_size) * kHeadDim + c * 8);
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int i = threadIdx.x + r * kSplitWarps * 32, which = i >> 9, j = (i & 511) >> 3, c = i & 7;
      uint4* dst = which ? reinterpret_cast<uint4*>(&s_v[j][0]) : reinterpret_cast<uint4*>(&s_k[j][0]);
      dst[c] = stage[r];
    }
    __syncthreads();
    float s[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int j = lane + 32 * r;
      const uint4* kr = reinterpret_cast<const uint4*>(&s_k[j][0]);
      const float4* qh = reinterpret_cast<const float4*>(s_q[warp]);
      float d = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) d = dot8(kr[i], qh[2 * i], qh[2 * i + 1], d);
      s[r] = j < n ? bf(bf(d) * 0.125f) : -INFINITY;
    }
    const float m_new = fmaxf(m, warp_max(fmaxf(s[0], s[1])));  // finite: key k0 is valid
    const float corr = expf(m - m_new);                            // first tile: exp(-inf) = 0
    const float p0 = expf(s[0] - m_new), p1 = expf(s[1] - m_new);  // invalid keys: 0
    l = l * corr + p0 + p1;
    o0 *= corr, o1 *= corr;
    m = m_new;
    const uint32_t* vcol = reinterpret_cast<const uint32_t*>(&s_v[0][0]) + lane;
#pragma unroll 8
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(0xffffffffu, j < 32 ? p0 : p1, j & 31);
      const uint32_t v2 = vcol[j * (kHeadDim / 2)];
      o0 = fmaf(pj, lo_f32(v2), o0);
      o1 = fmaf(pj, hi_f32(v2), o1);
    }
  }
  l = warp_sum(l);
  if (p.n_splits == 1) {  // no partials: merge with the sink here
    const float sink = to_f32(static_cast<const bf16_t*>(p.sinks)[h]);
    const float M = l > 0.f ? fmaxf(m, sink) : sink;
    const float f = l > 0.f ? expf(m - M) : 0.f;
    const float L = expf(sink - M) + l * f;
    uint32_t* out = reinterpret_cast<uint32_t*>(static_cast<bf16_t*>(p.out) + (size_t(t) * p.n_heads + h) * kHeadDim);
    const __nv_bfloat162 v = __floats2bfloat162_rn(o0 * f / L, o1 * f / L);
    out[lane] = *reinterpret_cast<const uint32_t*>(&v);
    return;
  }
  const size_t idx = (size_t(t) * p.n_heads + h) * p.n_splits + z;
  reinterpret_cast<float2*>(p.part_o + idx * kHeadDim)[lane] = make_float2(o0, o1);
  if (lane == 0) p.part_ml[idx * 2] = m, p.part_ml[idx * 2 + 1] = l;
  if (p.counters == nullptr) return;  // attention_decode_combine merges
  // The last CTA of this (token, kv head) to finish merges the splits (read through L2) and resets the counter.
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&p.counters[t * p.n_kv_heads + g], 1u) == unsigned(p.n_splits) - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  merge_partials_to_out(p, t, h, lane);
  if (threadIdx.x == 0) p.counters[t * p.n_kv_heads + g] = 0u;
}

// One thread per (token, head, dim): merges the splits and the sink, writes bf16.
__global__ void __launch_bounds__(256) attention_decode_combine(AttentionDecodeParams p) {
  const int t = blockIdx.x;
  const int h = blockIdx.y * 4 + threadIdx.x / kHeadDim, dim = threadIdx.x % kHeadDim;
  if (h >= p.n_heads) return;
  const float sink = to_f32(static_cast<const bf16_t*>(p.sinks)[h]);
  const size_t base = (size_t(t) * p.n_heads + h) * p.n_splits;
  float M = sink;
  for (int z = 0; z < p.n_splits; ++z)
    if (p.part_ml[(base + z) * 2 + 1] > 0.f) M = fmaxf(M, p.part_ml[(base + z) * 2]);
  float L = expf(sink - M), O = 0.f;
  for (int z = 0; z < p.n_splits; ++z) {
    const float lz = p.part_ml[(base + z) * 2 + 1];
    if (lz == 0.f) continue;
    const float f = expf(p.part_ml[(base + z) * 2] - M);
    L += lz * f;
    O += p.part_o[(base + z) * kHeadDim + dim] * f;
  }
  static_cast<bf16_t*>(p.out)[size_t(t) * p.n_heads * kHeadDim + size_t(h) * kHeadDim + dim] = to_bf16(O / L);
}

}  // namespace

void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && p.n_splits >= 1, "attention_decode: n_tokens and n_splits must be >= 1");
  MXS_CHECK(p.n_kv_heads > 0 && p.n_heads % p.n_kv_heads == 0, "attention_decode: n_heads % n_kv_heads != 0");
  const int group = p.n_heads / p.n_kv_heads;
  if (group != 8)
    throw Error(strfmt("attention_decode: GQA group %d (n_heads %d / n_kv_heads %d) is not supported "
                       "(supported: 8, head_dim 64)", group, p.n_heads, p.n_kv_heads));
  if (p.exact) return attention_decode_exact(p, stream);
  MXS_CHECK(p.keys_per_split % kSplitTile == 0,
            strfmt("attention_decode: keys_per_split = %d must be a multiple of %d", p.keys_per_split, kSplitTile));
  const dim3 grid(p.n_tokens, p.n_kv_heads, p.n_splits);
  launch_pdl(attention_decode_split, grid, dim3(kSplitWarps * 32), 0, stream, p);
  CUDA_CHECK_LAUNCH();
  if (p.n_splits > 1 && p.counters == nullptr) {
    attention_decode_combine<<<dim3(p.n_tokens, (p.n_heads + 3) / 4), 256, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace mxs::cuda
