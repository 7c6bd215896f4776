// Paged decode attention with sinks and sliding window; see attention_decode.h.
// attention_decode_split: one CTA per (token, kv head, key split); its 4 warps take interleaved tiles of
// 32 keys (lane = key for the scores, lane = 2 head dims for P.V) and keep an online softmax per q head of
// the GQA group; the 8 q heads of a group share every K/V read. Scores follow the reference rounding
// S = bf(bf(q.k) * 0.125); the softmax itself is fp32 (the reference's bf16 P is not reproduced).
#include "cuda/kernels/attention_decode.h"

#include <cmath>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;
constexpr int kWarps = 4;
constexpr int kTile = 32;
constexpr int kExactMaxKeys = kExactAttentionMaxKeys;

template <int G>
__global__ void __launch_bounds__(kWarps * 32) attention_decode_split(AttentionDecodeParams p) {
  __shared__ float s_q[G][kHeadDim];
  __shared__ __align__(16) float s_p[kWarps][kTile][G];
  __shared__ float s_m[kWarps][G], s_l[kWarps][G];
  __shared__ float s_o[kWarps][G][kHeadDim];

  const int t = blockIdx.x, g = blockIdx.y, z = blockIdx.z;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pos = p.meta.positions[t];
  const int seq = p.meta.token_seq[t];
  const int32_t* table = p.meta.block_tables + size_t(seq) * p.meta.max_blocks_per_seq;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int k_begin = lo + z * p.keys_per_split;
  const int k_end = min(pos + 1, k_begin + p.keys_per_split);

  const bf16_t* q = static_cast<const bf16_t*>(p.q) + size_t(t) * p.n_heads * kHeadDim + size_t(g) * G * kHeadDim;
  for (int i = threadIdx.x; i < G * kHeadDim; i += blockDim.x) s_q[i / kHeadDim][i % kHeadDim] = to_f32(q[i]);
  __syncthreads();

  const size_t head_stride = size_t(p.kv.block_size) * kHeadDim;  // one (block, K|V, head) slab
  const bf16_t* kv = static_cast<const bf16_t*>(p.kv.base);
  auto row_ptr = [&](int key, int which) {
    const int block = table[key / p.kv.block_size];
    return kv + ((size_t(block) * 2 + which) * p.kv.n_kv_heads + g) * head_stride +
           size_t(key % p.kv.block_size) * kHeadDim;
  };

  float m[G], l[G], acc[G][2];
#pragma unroll
  for (int h = 0; h < G; ++h) m[h] = -INFINITY, l[h] = 0.f, acc[h][0] = acc[h][1] = 0.f;

  for (int tile = k_begin + warp * kTile; tile < k_end; tile += kWarps * kTile) {
    const int key = tile + lane;
    const bool valid = key < k_end;
    float score[G];
    if (valid) {
      const uint4* kr = reinterpret_cast<const uint4*>(row_ptr(key, 0));
      uint4 kv8[8];
#pragma unroll
      for (int i = 0; i < 8; ++i) kv8[i] = kr[i];
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const float4* qh = reinterpret_cast<const float4*>(s_q[h]);
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = dot8(kv8[i], qh[2 * i], qh[2 * i + 1], d);
        score[h] = bf(bf(d) * 0.125f);
      }
    } else {
#pragma unroll
      for (int h = 0; h < G; ++h) score[h] = -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < G; ++h) {
      const float m_new = fmaxf(m[h], warp_max(score[h]));  // finite: lane 0 holds a valid key
      const float corr = expf(m[h] - m_new);
      const float pr = valid ? expf(score[h] - m_new) : 0.f;
      l[h] = l[h] * corr + pr;
      acc[h][0] *= corr;
      acc[h][1] *= corr;
      m[h] = m_new;
      s_p[warp][lane][h] = pr;
    }
    __syncwarp();
    // All 32 value rows of the tile are loaded before the first use (independent loads in flight).
    const int n_valid = min(kTile, k_end - tile);
    uint32_t vt[kTile];
#pragma unroll
    for (int j = 0; j < kTile; ++j)
      vt[j] = j < n_valid ? reinterpret_cast<const uint32_t*>(row_ptr(tile + j, 1))[lane] : 0u;
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      const float v0 = lo_f32(vt[j]), v1 = hi_f32(vt[j]);
      const float4 pa = *reinterpret_cast<const float4*>(&s_p[warp][j][0]);
      const float4 pb = *reinterpret_cast<const float4*>(&s_p[warp][j][4]);
      const float pj[8] = {pa.x, pa.y, pa.z, pa.w, pb.x, pb.y, pb.z, pb.w};
#pragma unroll
      for (int h = 0; h < G; ++h) {
        acc[h][0] = fmaf(pj[h], v0, acc[h][0]);
        acc[h][1] = fmaf(pj[h], v1, acc[h][1]);
      }
    }
    __syncwarp();
  }

#pragma unroll
  for (int h = 0; h < G; ++h) {
    const float lw = warp_sum(l[h]);
    if (lane == 0) s_m[warp][h] = m[h], s_l[warp][h] = lw;
    s_o[warp][h][2 * lane] = acc[h][0];
    s_o[warp][h][2 * lane + 1] = acc[h][1];
  }
  __syncthreads();

  for (int i = threadIdx.x; i < G * kHeadDim; i += blockDim.x) {
    const int h = i / kHeadDim, dim = i % kHeadDim;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, s_m[w][h]);
    float L = 0.f, O = 0.f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        if (s_l[w][h] == 0.f) continue;
        const float f = expf(s_m[w][h] - M);
        L += s_l[w][h] * f;
        O += s_o[w][h][dim] * f;
      }
    }
    const size_t idx = (size_t(t) * p.n_heads + size_t(g) * G + h) * p.n_splits + z;
    p.part_o[idx * kHeadDim + dim] = O;
    if (dim == 0) {
      p.part_ml[idx * 2] = M;
      p.part_ml[idx * 2 + 1] = L;
    }
  }
}


// Short key ranges (<= kExactMaxKeys): one CTA per (token, kv head), warp h = q head h of the group, and
// the reference's exact order of operations (cpu_ops.h attention_with_sink): q.k with 8 interleaved fp32
// partial sums combined pairwise (no FMA), S = bf(bf(q.k) * 0.125), C = bf(S - m), sequential fp32
// denominator, P = bf(e / den), out = bf(sum_j P_j v_j) accumulated in key order without FMA.
template <int G>
__global__ void __launch_bounds__(G * 32) attention_decode_exact(AttentionDecodeParams p) {
  extern __shared__ float s_dyn[];
  float(*s_q)[kHeadDim] = reinterpret_cast<float(*)[kHeadDim]>(s_dyn);  // [G][64]
  float* s_s = s_dyn + G * kHeadDim;                                     // [G][n_keys]
  __shared__ float s_den[G];
  const int t = blockIdx.x, g = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pos = p.meta.positions[t];
  const int32_t* table = p.meta.block_tables + size_t(p.meta.token_seq[t]) * p.meta.max_blocks_per_seq;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int n = pos + 1 - lo;
  const bf16_t* q = static_cast<const bf16_t*>(p.q) + size_t(t) * p.n_heads * kHeadDim + size_t(g) * G * kHeadDim;
  for (int i = threadIdx.x; i < G * kHeadDim; i += blockDim.x) s_q[i / kHeadDim][i % kHeadDim] = to_f32(q[i]);
  __syncthreads();
  const size_t head_stride = size_t(p.kv.block_size) * kHeadDim;
  const bf16_t* kv = static_cast<const bf16_t*>(p.kv.base);
  auto row_ptr = [&](int key, int which) {
    const int block = table[key / p.kv.block_size];
    return kv + ((size_t(block) * 2 + which) * p.kv.n_kv_heads + g) * head_stride +
           size_t(key % p.kv.block_size) * kHeadDim;
  };
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const uint4* kr = reinterpret_cast<const uint4*>(row_ptr(lo + j, 0));
    uint4 k8[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) k8[i] = kr[i];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const uint32_t w[4] = {k8[i].x, k8[i].y, k8[i].z, k8[i].w};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float kvv = (e & 1) ? hi_f32(w[e >> 1]) : lo_f32(w[e >> 1]);
          a[e] = __fadd_rn(a[e], __fmul_rn(s_q[h][i * 8 + e], kvv));
        }
      }
      const float d = __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[4]), __fadd_rn(a[1], a[5])),
                                __fadd_rn(__fadd_rn(a[2], a[6]), __fadd_rn(a[3], a[7])));
      s_s[h * p.keys_per_split + j] = bf(bf(d) * 0.125f);
    }
  }
  __syncthreads();
  const int h = warp;
  float* sh = s_s + h * p.keys_per_split;
  const float sink = to_f32(static_cast<const bf16_t*>(p.sinks)[g * G + h]);
  float m = sink;
  for (int j = lane; j < n; j += 32) m = fmaxf(m, sh[j]);
  m = warp_max(m);
  for (int j = lane; j < n; j += 32) sh[j] = expf(bf(sh[j] - m));
  __syncwarp();
  if (lane == 0) {
    float den = 0.f;
    for (int j = 0; j < n; ++j) den = __fadd_rn(den, sh[j]);
    s_den[h] = __fadd_rn(den, expf(bf(sink - m)));
  }
  __syncwarp();
  const float den = s_den[h];
  float acc0 = 0.f, acc1 = 0.f;
  for (int j = 0; j < n; ++j) {
    const float pj = bf(sh[j] / den);
    const uint32_t v2 = reinterpret_cast<const uint32_t*>(row_ptr(lo + j, 1))[lane];
    acc0 = __fadd_rn(acc0, __fmul_rn(pj, lo_f32(v2)));
    acc1 = __fadd_rn(acc1, __fmul_rn(pj, hi_f32(v2)));
  }
  bf16_t* out = static_cast<bf16_t*>(p.out) + size_t(t) * p.n_heads * kHeadDim + size_t(g * G + h) * kHeadDim;
  out[2 * lane] = to_bf16(acc0);
  out[2 * lane + 1] = to_bf16(acc1);
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
  if (p.exact) {
    MXS_CHECK(p.n_splits == 1 && p.keys_per_split >= 1 && p.keys_per_split <= kExactMaxKeys,
              strfmt("attention_decode: the exact path needs n_splits = 1 and keys_per_split <= %d", kExactMaxKeys));
    // keys_per_split = the most keys any token of the launch sees (the runner's bound), scores in smem.
    AttentionDecodeParams e = p;
    e.keys_per_split = (p.keys_per_split + 31) / 32 * 32;
    const int smem = (8 * kHeadDim + 8 * e.keys_per_split) * int(sizeof(float));
    static const bool smem_ok =
        (cudaFuncSetAttribute(attention_decode_exact<8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              (8 * kHeadDim + 8 * kExactMaxKeys) * int(sizeof(float))),
         true);
    (void)smem_ok;
    attention_decode_exact<8><<<dim3(p.n_tokens, p.n_kv_heads), 8 * 32, smem, stream>>>(e);
    CUDA_CHECK_LAUNCH();
    return;
  }
  MXS_CHECK(p.keys_per_split % (kWarps * kTile) == 0,
            strfmt("attention_decode: keys_per_split = %d must be a multiple of %d", p.keys_per_split, kWarps * kTile));
  const dim3 grid(p.n_tokens, p.n_kv_heads, p.n_splits);
  attention_decode_split<8><<<grid, kWarps * 32, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
  attention_decode_combine<<<dim3(p.n_tokens, (p.n_heads + 3) / 4), 256, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
