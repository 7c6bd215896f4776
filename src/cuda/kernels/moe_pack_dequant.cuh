// Dequantization of one thread's share of a packed MXFP4 k-tile (layout: moe_gemm_pack.h) into bf16 A-fragment
// registers, shared by the grouped GEMM (wgmma, per warpgroup) and the decode GEMV (mma.sync, per warp): both use
// the m16n8k16 A layout, so the same 16 bytes + scale word feed either.
#pragma once
#include <cstdint>

#include "cuda/kernels/moe_gemm_pack.h"

namespace mxs::cuda {

// bf16x2 products and sums in one rounding each (fma.rn.bf16x2), equal to fp32 arithmetic followed by bf(): the
// fp32 product of two bf16 values is exact; so is their fp32 sum unless the exponents are >= 16 apart, and then
// both sums lie within 2^-15 (relative) of the larger addend, a bf16 value >= 2^-9 away from the nearest bf16
// rounding midpoint: both round to it. bf16x2_mul: a * m (exact when m is a power of two in both halves, as for
// the block scales; the -0 addend keeps +0 products +0). bf16x2_add: a * 1 + b.
__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t m) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(m), "r"(0x80008000u));
  return d;
}
__device__ __forceinline__ uint32_t bf16x2_add(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(0x3f803f80u), "r"(b));
  return d;
}

// Scale factors of one scale word as bf16x2 multipliers: m[i] = 2^(byte i + bias - 127) in both halves.
template <uint32_t kBias>
__device__ __forceinline__ void moe_scale_factors(uint32_t sw, uint32_t (&m)[4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) m[i] = (((sw >> (8 * i)) & 0xffu) + kBias) * 0x00800080u;
}

// a[s][*] = r(word s) * m (block 0: k16 steps 0, 1; block 1: steps 2, 3; rows g, g + 8 = scale bytes 0/1, 2/3).
__device__ __forceinline__ void moe_scale_words(const uint32_t (&words)[4], const uint32_t (&m)[4],
                                                uint32_t (&a)[4][4]) {
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    uint32_t r[4];
    moe_e2m1x2_decode(words[s], r);
    const int b = (s >> 1) * 2;
    a[s][0] = bf16x2_mul(r[0], m[b]);
    a[s][1] = bf16x2_mul(r[1], m[b + 1]);
    a[s][2] = bf16x2_mul(r[2], m[b]);
    a[s][3] = bf16x2_mul(r[3], m[b + 1]);
  }
}

// One thread's A registers of a k-tile: q = its 16 packed bytes, sw = its scale word (bytes: row g block 0,
// row g + 8 block 0, row g block 1, row g + 8 block 1); a[s] = the 4 registers of k16 step s. Decoded codes
// carry 2^-126, so the factor is 2^(s - 1) = bf16 exponent field s + 126: exact for s <= 128. Larger scales
// (|block scale| > 2, not seen in trained weights) take a second exact factor 2^(s - 128): kBig, chosen per
// layer at load (MoeGemmWeights::big_scales). Without it the kernels skip the per-k-tile test for such bytes
// (a byte-wise compare and min, ~12 of the ~100 instructions per warp and k-tile): the MoE kernels are
// issue-bound from 2 tokens on (ncu, H200: gate_up at 64 tokens 2.6 IPC, 36% of DRAM bandwidth), and batch-8 /
// batch-64 decode steps ran 5-6% faster without the test.
template <bool kBig>
__device__ __forceinline__ void moe_pack_dequant(const uint4& q, uint32_t sw, uint32_t (&a)[4][4]) {
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
  uint32_t m[4];
  if constexpr (!kBig) {
    moe_scale_factors<126u>(sw, m);
    moe_scale_words(words, m, a);
  } else {
    const bool big = __vcmpgtu4(sw, 0x80808080u) != 0;
    moe_scale_factors<126u>(big ? __vminu4(sw, 0x80808080u) : sw, m);
    moe_scale_words(words, m, a);
    if (big) {
      moe_scale_factors<0xffffffffu>(__vmaxu4(sw, 0x80808080u), m);  // byte - 1: 2^(byte - 128)
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int b = (s >> 1) * 2;
        a[s][0] = bf16x2_mul(a[s][0], m[b]);
        a[s][1] = bf16x2_mul(a[s][1], m[b + 1]);
        a[s][2] = bf16x2_mul(a[s][2], m[b]);
        a[s][3] = bf16x2_mul(a[s][3], m[b + 1]);
      }
    }
  }
}

}  // namespace mxs::cuda
