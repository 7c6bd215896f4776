// Device pieces shared by the two prefill attention kernels (attention_prefill.cu on mma.sync,
// attention_prefill_wgmma.cu on wgmma): the keys a query tile sees, the Q and paged K/V gathers into swizzled
// [rows][64] bf16 tiles (swz), and the epilogue (softmax denominator with the sink, bf16 staging, 16-byte
// stores). CTA row r of either kernel = (query r / 8 of the tile, q head 8 g + r % 8 of kv head g).
#pragma once
#include <cstdint>

#include "cuda/kernels/attention_mma.cuh"
#include "cuda/kernels/attention_prefill.h"

namespace mxs::cuda::attn {

constexpr int kPrefillHeadDim = 64;
constexpr int kPrefillGroup = 8;  // q heads per kv head

// Positions of a query tile and the keys it can see: [lo, key_hi); key tiles of `kt` keys kt_begin(kt) ..
// kt_end(kt) - 1 hold every visible key.
struct PrefillTileKeys {
  int first, nq;       // tile tokens [first, first + nq)
  int p_first, p_last;  // positions of its first and last token
  int lo, key_hi;      // window start (0 on full layers) and p_last + 1
  __device__ int kt_begin(int kt) const { return lo / kt; }
  __device__ int kt_end(int kt) const { return p_last / kt + 1; }
};
__device__ __forceinline__ PrefillTileKeys prefill_tile_keys(const AttentionPrefillParams& p, const PrefillTile& t) {
  PrefillTileKeys k;
  k.first = t.first_token, k.nq = t.n_tokens;
  k.p_first = p.meta.positions[k.first], k.p_last = p.meta.positions[k.first + k.nq - 1];
  k.lo = p.window > 0 ? max(0, k.p_first - p.window + 1) : 0;
  k.key_hi = k.p_last + 1;
  return k;
}

// Copies 16-byte chunk c of CTA row r of Q into s_q (swizzled); rows past the tile's nq tokens are zeros
// (their results are never stored).
__device__ __forceinline__ void copy_q_chunk(const AttentionPrefillParams& p, int g, const PrefillTileKeys& k, int r,
                                             int c, bf16_t* s_q) {
  const int qi = r >> 3;
  const bool ok = qi < k.nq;
  const bf16_t* q_base = static_cast<const bf16_t*>(p.q) + size_t(g) * kPrefillGroup * kPrefillHeadDim;
  const bf16_t* src =
      ok ? q_base + size_t(k.first + qi) * p.n_heads * kPrefillHeadDim + (r & 7) * kPrefillHeadDim + c * 8 : q_base;
  cp_async16(smem_u32(s_q + swz(r, c)), src, ok ? 16 : 0);
}

// One thread's share of the paged K/V gather: chunk `c` (fixed per thread) of kv head g's K and V rows of any
// key of the tile's sequence. Element offsets are 32-bit (a block of the layer holds 2 * n_kv * block_size * 64
// < 2^31 elements): block b, K|V w, head g, position j, chunk c -> b * block_elems + w * kv_elems + g * slab +
// j * 64 + c * 8. block_size is a power of two (host check).
struct PagedKvGather {
  const bf16_t* kv;
  const int32_t* table;  // the sequence's block table
  int bs_shift, bs_mask, kv_elems, block_elems, thr_off, lo, key_hi;
  // Copies the chunk of `key`'s K row to shared address dk and of its V row to dv. Keys outside [lo, key_hi)
  // are zero-filled without reading the table: below lo they are masked for every query and their block may
  // already be released; past the last query they may not exist yet.
  __device__ __forceinline__ void copy(int key, uint32_t dk, uint32_t dv) const {
    const bool ok = key >= lo && key < key_hi;
    const bf16_t* src = kv;
    if (ok)
      src = kv + size_t(uint32_t(table[key >> bs_shift])) * uint32_t(block_elems) +
            uint32_t(thr_off + (key & bs_mask) * kPrefillHeadDim);
    cp_async16(dk, src, ok ? 16 : 0);
    cp_async16(dv, ok ? src + kv_elems : src, ok ? 16 : 0);
  }
};
__device__ __forceinline__ PagedKvGather paged_kv_gather(const AttentionPrefillParams& p, int g,
                                                         const PrefillTileKeys& k, int c) {
  PagedKvGather v;
  v.kv = static_cast<const bf16_t*>(p.kv.base);
  v.table = p.meta.block_tables + size_t(p.meta.token_seq[k.first]) * p.meta.max_blocks_per_seq;
  v.bs_shift = __ffs(p.kv.block_size) - 1;
  v.bs_mask = p.kv.block_size - 1;
  const int slab = p.kv.block_size * kPrefillHeadDim;
  v.kv_elems = p.kv.n_kv_heads * slab;  // K -> V of the same block
  v.block_elems = 2 * v.kv_elems;
  v.thr_off = g * slab + c * 8;
  v.lo = k.lo, v.key_hi = k.key_hi;
  return v;
}

// 1 / softmax denominator of a row whose quad (4 threads, lanes 4 gid .. 4 gid + 3) holds partial sums l; m is
// the row's running max and sink2 its sink logit, both log2 units (the sink's term joins only here).
__device__ __forceinline__ float prefill_inv_den(float l, float m, float sink2) {
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  return 1.f / (l + fast_exp2(sink2 - m));
}

// Stages bf(o0), bf(o1) as dims 8 n + 2 tig, + 1 of row r of the swizzled output tile (the Q tile's space).
__device__ __forceinline__ void stage_out_pair(bf16_t* s_out, int r, int n, int tig, float o0, float o1) {
  *reinterpret_cast<uint32_t*>(s_out + swz(r, n) + 2 * tig) = pack_bf16x2(o0, o1);
}

// Stores the warp's staged rows row0 .. row0 + 4 N - 1 to out, 16 bytes per lane (lane = row 4 i + lane / 8,
// chunk lane % 8); rows of queries past the tile's nq tokens are skipped. Call after a __syncwarp.
template <int N>
__device__ __forceinline__ void store_out_rows(const AttentionPrefillParams& p, int g, const PrefillTileKeys& k,
                                               const bf16_t* s_out, int row0, int lane) {
  bf16_t* out_base = static_cast<bf16_t*>(p.out) + size_t(g) * kPrefillGroup * kPrefillHeadDim;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int r = row0 + i * 4 + (lane >> 3), c = lane & 7, qi = r >> 3;
    if (qi < k.nq)
      *reinterpret_cast<uint4*>(out_base + size_t(k.first + qi) * p.n_heads * kPrefillHeadDim +
                                (r & 7) * kPrefillHeadDim + c * 8) = *reinterpret_cast<const uint4*>(s_out + swz(r, c));
  }
}

}  // namespace mxs::cuda::attn
