// The epilogue shared by qkv_rope (GEMV, fp32 dots in registers) and qkv_rope_from_f32 (after a cuBLAS GEMM
// into an fp32 buffer): bias, YaRN RoPE on q/k, then q -> q_out or k/v -> the paged cache, for the RoPE pair
// of rows (d, d + 32) of one head of one token. Rounding points: gpt-oss-spec.md §3.3 (as cpu/yarn_rope.cpp).
#pragma once
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/qkv_rope.h"

namespace mxs::cuda {

// RoPE factors of pair d at position pos: c = bf(cos(pos * inv_freq[d]) * mscale), s likewise with sin.
// (inv_freq: p.inv_freq[d], loaded by the caller)
__device__ __forceinline__ void qkv_rope_factors_of(const QkvRopeParams& p, int pos, float inv_freq, float& c,
                                                    float& s) {
  const float ang = float(pos) * inv_freq;
  c = bf(cosf(ang) * p.mscale), s = bf(sinf(ang) * p.mscale);
}
__device__ __forceinline__ void qkv_rope_factors(const QkvRopeParams& p, int pos, int d, float& c, float& s) {
  qkv_rope_factors_of(p, pos, p.inv_freq[d], c, s);
}

// Whether head `head` is rotated (q or k).
__device__ __forceinline__ bool qkv_rope_rotates(const QkvRopeParams& p, int head) {
  return head < p.n_heads + p.n_kv_heads;
}

// Token t's KV-cache block for position pos (a load through its sequence's block table).
__device__ __forceinline__ int qkv_rope_kv_block(const QkvRopeParams& p, int t, int pos) {
  const int seq = p.meta.token_seq[t];
  return p.meta.block_tables[size_t(seq) * p.meta.max_blocks_per_seq + pos / p.kv.block_size];
}

// Element d of the pair's destination row for token t, whose KV-cache slot is (block, pos % block_size): head <
// n_heads -> its q row in q_out, else its k / v row in the paged KV cache. Element d + 32 is the pair's other row.
__device__ __forceinline__ bf16_t* qkv_rope_pair_dst_at(const QkvRopeParams& p, int t, int pos, int block, int head,
                                                        int d) {
  constexpr int kHeadDim = 64;
  if (head < p.n_heads) return static_cast<bf16_t*>(p.q_out) + size_t(t) * p.n_heads * kHeadDim + head * kHeadDim + d;
  const bool is_v = head >= p.n_heads + p.n_kv_heads;
  const int kvh = head - p.n_heads - (is_v ? p.n_kv_heads : 0);
  const int slot = pos % p.kv.block_size;
  return static_cast<bf16_t*>(p.kv.base) +
         ((size_t(block) * 2 + (is_v ? 1 : 0)) * p.kv.n_kv_heads + kvh) * size_t(p.kv.block_size) * kHeadDim +
         size_t(slot) * kHeadDim + d;
}

// The same, the block looked up here (q heads load nothing).
__device__ __forceinline__ bf16_t* qkv_rope_pair_dst(const QkvRopeParams& p, int t, int pos, int head, int d) {
  const int block = head < p.n_heads ? 0 : qkv_rope_kv_block(p, t, pos);
  return qkv_rope_pair_dst_at(p, t, pos, block, head, d);
}

// As qkv_rope_store_pair below, with the token's position and (for q / k heads) its RoPE factors given: a
// caller that stores many heads of one (token, d) computes them once (qkv_rope_from_f32).
__device__ __forceinline__ void qkv_rope_store_pair_cs(const QkvRopeParams& p, int t, int pos, int head, int d,
                                                       float acc0, float acc1, float c, float s) {
  constexpr int kHeadDim = 64;
  const bf16_t* bias = static_cast<const bf16_t*>(p.b_qkv);
  const int row0 = head * kHeadDim + d;
  float x1 = bf(acc0 + to_f32(bias[row0])), x2 = bf(acc1 + to_f32(bias[row0 + kHeadDim / 2]));
  if (qkv_rope_rotates(p, head)) {
    const float r1 = bf(bf(x1 * c) - bf(x2 * s));
    const float r2 = bf(bf(x2 * c) + bf(x1 * s));
    x1 = r1;
    x2 = r2;
  }
  bf16_t* dst = qkv_rope_pair_dst(p, t, pos, head, d);
  dst[0] = to_bf16(x1);
  dst[kHeadDim / 2] = to_bf16(x2);
}

// The same epilogue in two halves, for a caller that can load its inputs early: qkv_rope_pair_prep does every load
// (position, biases, RoPE factors, the destination through the block table), qkv_rope_pair_store only arithmetic
// and the two stores. Bit for bit qkv_rope_store_pair.
struct QkvPairPrep {  // (trivial: it may live in shared memory)
  bf16_t* dst;   // element d of the pair's q row or KV-cache row (element d + 32: the pair's other row)
  uint32_t bias; // the two rows' biases, bf16x2 (row d low)
  float c, s;    // RoPE factors (q and k heads; 0 for v)
};

__device__ __forceinline__ QkvPairPrep qkv_rope_pair_prep(const QkvRopeParams& p, int t, int head, int d) {
  constexpr int kHeadDim = 64;
  QkvPairPrep r;
  const int pos = p.meta.positions[t];
  const uint16_t* bias = static_cast<const uint16_t*>(p.b_qkv);
  const int row0 = head * kHeadDim + d;
  r.bias = uint32_t(bias[row0]) | uint32_t(bias[row0 + kHeadDim / 2]) << 16;
  r.c = r.s = 0.f;
  if (qkv_rope_rotates(p, head)) qkv_rope_factors(p, pos, d, r.c, r.s);
  r.dst = qkv_rope_pair_dst(p, t, pos, head, d);
  return r;
}

// rotate: qkv_rope_rotates(p, head) of the pair's head.
__device__ __forceinline__ void qkv_rope_pair_store(const QkvPairPrep& r, bool rotate, float acc0, float acc1) {
  float x1 = bf(acc0 + lo_f32(r.bias)), x2 = bf(acc1 + hi_f32(r.bias));
  if (rotate) {
    const float r1 = bf(bf(x1 * r.c) - bf(x2 * r.s));
    const float r2 = bf(bf(x2 * r.c) + bf(x1 * r.s));
    x1 = r1;
    x2 = r2;
  }
  r.dst[0] = to_bf16(x1);
  r.dst[32] = to_bf16(x2);
}

// acc0/acc1: the fp32 dots of rows head * 64 + d and head * 64 + d + 32 for token t (bias not added).
__device__ __forceinline__ void qkv_rope_store_pair(const QkvRopeParams& p, int t, int head, int d, float acc0,
                                                    float acc1) {
  const int pos = p.meta.positions[t];
  float c = 0.f, s = 0.f;
  if (qkv_rope_rotates(p, head)) qkv_rope_factors(p, pos, d, c, s);
  qkv_rope_store_pair_cs(p, t, pos, head, d, acc0, acc1, c, s);
}

}  // namespace mxs::cuda
