// The exact decode attention (attention_decode with `exact`, declared in attention_decode.h; the runner takes it
// for steps whose tokens all see <= kExactAttentionMaxKeys keys when CudaRunnerOptions::exact_attention is on): the
// reference's order of operations (cpu_ops.h attention_with_sink), so that such steps reproduce the CPU reference's
// roundings. Per (token, head): q.k with 8 interleaved fp32 partial sums combined pairwise (no FMA),
// S = bf(bf(q.k) * 0.125), C = bf(S - m) with m the max of the scores and the sink, E = exp(C), a sequential fp32
// denominator in key order plus exp(bf(sink - m)), P = bf(E / den), out = bf(sum_j P_j v_j) accumulated in key
// order without FMA.
//
// attention_decode_exact_kernel<HPC>: CTA = (token t, kv head g, slice of HPC q heads), >= 4 warps. The K and V rows
// of the token's n keys are copied into shared memory first (cp.async, all in flight at once; those of keys older
// than this step's tokens before griddepcontrol.wait), then thread j scores key j for the slice's heads, and warp h
// runs its head's max / exp / denominator / P and the key-order P.V from shared memory: the serial chains the order
// requires (the denominator: one lane; P.V: a lane per two dims) read shared memory only.
// attention_decode_exact_simple_kernel (the first version, kept as the tests' GPU reference): the same operations,
// one CTA of 8 warps per (token, kv head), but K rows and V columns read from global memory inside the chains, a
// dependent block-table + row load per key in P.V. H200, `mxserve bench kernel attention-decode` (session 27),
// batch 1, full layer at 256 keys: simple 102 us, staged 9.4 us (8 heads per CTA) / 7.1 (2), the tensor-core
// kernel 4.5; 20b step at 200 keys (`bench decode --batch 1 --context 200 --exact-attention`): 3.19 -> 1.39 ms.
#include <cmath>
#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_decode.h"
#include "cuda/kernels/bulk_copy.cuh"  // smem_u32
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/mma_bf16.cuh"   // cp_async16
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;
constexpr int kGroup = 8;                  // q heads per kv head = warps per CTA
constexpr int kKRow = kHeadDim + 8;        // staged K row stride (bf16): 144 B, conflict-free 16-byte row reads
constexpr int kSimpleThreads = kGroup * 32;  // the simple kernel: a warp per head
// The staged kernel's threads for HPC heads per CTA: a warp per head, at least 4 warps for the copies and the score
// pass. (With one head per CTA, 8 warps measured the same as 4: 20b batch 1 at 200 keys 1.389 vs 1.388 ms.)
constexpr int staged_threads(int hpc) { return hpc * 32 > 128 ? hpc * 32 : 128; }

// Shared memory of the staged kernel for kp (>= n, a multiple of 32) keys and HPC heads: K [kp][kKRow] bf16,
// V [kp][64] bf16, q [HPC][64] fp32, scores / probabilities [HPC][kp] fp32.
constexpr size_t exact_smem_bytes(int kp, int hpc) {
  return size_t(kp) * kKRow * 2 + size_t(kp) * kHeadDim * 2 + size_t(hpc) * kHeadDim * 4 + size_t(hpc) * kp * 4;
}

// CTA = (token, kv head g, head slice z): q heads g * 8 + z * HPC .. + HPC - 1 (HPC = 8 / gridDim.z). Few CTAs per
// step (batch 1: one per kv head) put the score pass of all 8 heads on one SM; slices of 1-4 heads spread it (and
// the K / V copies) over more SMs, each slice copying the kv head's rows again (from L2).
template <int HPC>
__global__ void __launch_bounds__(staged_threads(HPC)) attention_decode_exact_kernel(AttentionDecodeParams p) {
  constexpr int kThreads = staged_threads(HPC);
  extern __shared__ __align__(16) unsigned char smem[];
  const int kp = p.keys_per_split;
  bf16_t* s_k = reinterpret_cast<bf16_t*>(smem);
  bf16_t* s_v = s_k + size_t(kp) * kKRow;
  float* s_q = reinterpret_cast<float*>(s_v + size_t(kp) * kHeadDim);  // [HPC][64]
  float* s_s = s_q + HPC * kHeadDim;                                    // [HPC][kp]
  __shared__ float s_den[HPC];

  const int t = blockIdx.x, g = blockIdx.y, tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int head0 = g * kGroup + blockIdx.z * HPC;  // the slice's first q head
  const int pos = p.meta.positions[t];
  const int seq = p.meta.token_seq[t];
  const int32_t* table = p.meta.block_tables + size_t(seq) * p.meta.max_blocks_per_seq;
  const int lo = p.window > 0 ? max(0, pos - p.window + 1) : 0;
  const int n = pos + 1 - lo;
  // This step's qkv_rope writes the token's own key and, for a token after the first of its sequence in the step
  // (tokens of a sequence are consecutive), the earlier tokens' keys too: before the wait only the keys below the
  // token's own are copied, and only for the first token of its sequence (earlier steps wrote them).
  const bool first_of_seq = t == 0 || p.meta.token_seq[t - 1] != seq;
  const int n_old = first_of_seq ? n - 1 : 0;
  const size_t head_stride = size_t(p.kv.block_size) * kHeadDim;  // one (block, K|V, head) slab
  const bf16_t* kv = static_cast<const bf16_t*>(p.kv.base);
  // Copies keys [j0, j1): 16 chunks of 16 bytes per key (8 of its K row, then 8 of its V row).
  auto copy_keys = [&](int j0, int j1) {
    for (int c = j0 * 16 + tid; c < j1 * 16; c += kThreads) {
      const int j = c >> 4, which = (c >> 3) & 1, part = c & 7, key = lo + j;
      const int block = table[key / p.kv.block_size];
      const bf16_t* src = kv + ((size_t(block) * 2 + which) * p.kv.n_kv_heads + g) * head_stride +
                          size_t(key % p.kv.block_size) * kHeadDim + part * 8;
      bf16_t* dst = which ? s_v + j * kHeadDim + part * 8 : s_k + j * kKRow + part * 8;
      cp_async16(smem_u32(dst), src, 16);
    }
    cp_async_commit();
  };
  copy_keys(0, n_old);
  griddep_wait();  // q and this step's keys / values come from qkv_rope
  griddep_launch_dependents();
  copy_keys(n_old, n);
  const bf16_t* q = static_cast<const bf16_t*>(p.q) + (size_t(t) * p.n_heads + head0) * kHeadDim;
  for (int i = tid; i < HPC * kHeadDim; i += kThreads) s_q[i] = to_f32(q[i]);
  cp_async_wait<0>();
  __syncthreads();

  // Scores: thread j = key j, the slice's heads (q broadcast from shared memory).
  for (int j = tid; j < n; j += kThreads) {
    const uint4* kr = reinterpret_cast<const uint4*>(s_k + j * kKRow);
    uint4 k8[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) k8[i] = kr[i];
#pragma unroll
    for (int h = 0; h < HPC; ++h) {
      const float4* qh = reinterpret_cast<const float4*>(s_q + h * kHeadDim);
      float a[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float4 qa = qh[2 * i], qb = qh[2 * i + 1];
        const float qv[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
        const uint32_t w[4] = {k8[i].x, k8[i].y, k8[i].z, k8[i].w};
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float kvv = (e & 1) ? hi_f32(w[e >> 1]) : lo_f32(w[e >> 1]);
          a[e] = __fadd_rn(a[e], __fmul_rn(qv[e], kvv));
        }
      }
      const float d = __fadd_rn(__fadd_rn(__fadd_rn(a[0], a[4]), __fadd_rn(a[1], a[5])),
                                __fadd_rn(__fadd_rn(a[2], a[6]), __fadd_rn(a[3], a[7])));
      s_s[h * kp + j] = bf(bf(d) * 0.125f);
    }
  }
  __syncthreads();
  if (warp >= HPC) return;

  // Warp h: its head's softmax and P.V.
  const int h = warp;
  float* sh = s_s + h * kp;
  const float sink = to_f32(static_cast<const bf16_t*>(p.sinks)[head0 + h]);
  float m = sink;
  for (int j = lane; j < n; j += 32) m = fmaxf(m, sh[j]);
  m = warp_max(m);
  for (int j = lane; j < n; j += 32) sh[j] = expf(bf(sh[j] - m));
  __syncwarp();
  if (lane == 0) {
    float den = 0.f;
#pragma unroll 8
    for (int j = 0; j < n; ++j) den = __fadd_rn(den, sh[j]);
    s_den[h] = __fadd_rn(den, expf(bf(sink - m)));
  }
  __syncwarp();
  const float den = s_den[h];
  for (int j = lane; j < n; j += 32) sh[j] = bf(sh[j] / den);  // P_j
  __syncwarp();
  const uint32_t* vcol = reinterpret_cast<const uint32_t*>(s_v) + lane;  // dims 2 lane, 2 lane + 1 of key 0
  float acc0 = 0.f, acc1 = 0.f;
#pragma unroll 8
  for (int j = 0; j < n; ++j) {
    const float pj = sh[j];
    const uint32_t v2 = vcol[j * (kHeadDim / 2)];
    acc0 = __fadd_rn(acc0, __fmul_rn(pj, lo_f32(v2)));
    acc1 = __fadd_rn(acc1, __fmul_rn(pj, hi_f32(v2)));
  }
  bf16_t* out = static_cast<bf16_t*>(p.out) + (size_t(t) * p.n_heads + head0 + h) * kHeadDim;
  out[2 * lane] = to_bf16(acc0);
  out[2 * lane + 1] = to_bf16(acc1);
}

// The first version (tests' reference): the same operations, K and V read from global memory where they are used.
// Its arithmetic is written out again on purpose, not shared with the staged kernel: a shared helper would let one
// mistake pass both (the CPU comparison would still see it, at its looser tolerance).
template <int G>
__global__ void __launch_bounds__(G * 32) attention_decode_exact_simple_kernel(AttentionDecodeParams p) {
  extern __shared__ float s_dyn[];
  float(*s_q)[kHeadDim] = reinterpret_cast<float(*)[kHeadDim]>(s_dyn);  // [G][64]
  float* s_s = s_dyn + G * kHeadDim;                                     // [G][n_keys]
  __shared__ float s_den[G];
  griddep_wait();
  griddep_launch_dependents();
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

// keys_per_split = the most keys any token of the launch sees (the runner's bound), rounded up to 32 here.
AttentionDecodeParams checked_exact_params(const AttentionDecodeParams& p) {
  MXS_CHECK(p.n_tokens >= 1 && p.n_kv_heads > 0 && p.n_heads == kGroup * p.n_kv_heads,
            strfmt("attention_decode (exact): needs GQA group 8 (n_heads %d, n_kv_heads %d) and >= 1 token",
                   p.n_heads, p.n_kv_heads));
  MXS_CHECK(p.n_splits == 1 && p.keys_per_split >= 1 && p.keys_per_split <= kExactAttentionMaxKeys,
            strfmt("attention_decode: the exact path needs n_splits = 1 and keys_per_split <= %d",
                   kExactAttentionMaxKeys));
  AttentionDecodeParams e = p;
  e.keys_per_split = (p.keys_per_split + 31) / 32 * 32;
  return e;
}

// Head slices per (token, kv head): the most (up to 8, one head per CTA) that keep the grid within two CTAs per SM.
int exact_head_slices(int n_tokens, int n_kv_heads) {
  static const int num_sms = [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  int hs = 1;
  while (hs < kGroup && 2LL * n_tokens * n_kv_heads * hs <= num_sms) hs *= 2;
  return hs;
}

template <int HPC>
void launch_exact(const AttentionDecodeParams& e, cudaStream_t stream) {
  static const bool smem_ok = [] {
    CUDA_CHECK(cudaFuncSetAttribute(attention_decode_exact_kernel<HPC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(exact_smem_bytes(kExactAttentionMaxKeys, HPC))));
    return true;
  }();
  (void)smem_ok;
  launch_pdl(attention_decode_exact_kernel<HPC>, dim3(e.n_tokens, e.n_kv_heads, kGroup / HPC), dim3(staged_threads(HPC)),
             exact_smem_bytes(e.keys_per_split, HPC), stream, e);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void attention_decode_exact(const AttentionDecodeParams& p, cudaStream_t stream) {
  const AttentionDecodeParams e = checked_exact_params(p);
  static const int forced = [] {  // MXS_EXACT_HEAD_SLICES=1/2/4/8: A/B and tests
    const char* v = std::getenv("MXS_EXACT_HEAD_SLICES");
    return v ? std::atoi(v) : 0;
  }();
  const int slices = e.exact_head_slices > 0 ? e.exact_head_slices
                     : forced > 0               ? forced
                                                : exact_head_slices(e.n_tokens, e.n_kv_heads);
  MXS_CHECK(slices == 1 || slices == 2 || slices == 4 || slices == 8,
            strfmt("attention_decode (exact): %d head slices (1, 2, 4 or 8)", slices));
  switch (slices) {
    case 8: return launch_exact<1>(e, stream);
    case 4: return launch_exact<2>(e, stream);
    case 2: return launch_exact<4>(e, stream);
    default: return launch_exact<8>(e, stream);
  }
}

void attention_decode_exact_simple(const AttentionDecodeParams& p, cudaStream_t stream) {
  const AttentionDecodeParams e = checked_exact_params(p);
  static const bool smem_ok = [] {
    CUDA_CHECK(cudaFuncSetAttribute(attention_decode_exact_simple_kernel<kGroup>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (kGroup * kHeadDim + kGroup * kExactAttentionMaxKeys) * int(sizeof(float))));
    return true;
  }();
  (void)smem_ok;
  const int smem = (kGroup * kHeadDim + kGroup * e.keys_per_split) * int(sizeof(float));
  launch_pdl(attention_decode_exact_simple_kernel<kGroup>, dim3(e.n_tokens, e.n_kv_heads), dim3(kSimpleThreads), smem,
             stream, e);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
