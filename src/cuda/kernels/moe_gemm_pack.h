// Load-time pre-swizzle of the MXFP4 experts for the prefill grouped GEMM (moe_gemm_mxfp4.h): a byte
// permutation inside each group of 64 weight rows, so the packed tensors have exactly the checkpoint's size.
// The decode GEMVs (moe_gemv_mxfp4) read the same layout: CudaRunner packs the experts in place at load, one copy.
//
// Packed layout of one expert matrix [E, R, K] (R output rows, K input features; R % 64 == 0, K % 64 == 0):
//   blocks: [E][R/64][K/64][128 threads][16 B]   (same bytes as [E, R, K/32, 16])
//   scales: [E][R/64][K/64][32 words][4 B]       (same bytes as [E, R, K/32])
// A (64 rows x 64 k) tile is the register A operand of one wgmma warpgroup for 4 k16 steps: thread
// T = 32 w + lane (g = lane / 4, c = lane % 4) owns A-fragment rows g and g + 8 of warp w. The GEMM's
// fragment row g of warp w is weight row 16 w + 2 g and fragment row g + 8 is row 16 w + 2 g + 1, so one
// thread's accumulators hold both rows of a pair: gate (2u) and up (2u + 1) of unit u = 8 w + g for gate_up,
// two adjacent outputs (one bf16x2 store) for down.
// Word s (k16 step s) of thread T's 16 bytes holds its 4 A registers of that step, 2 e2m1 codes each:
//   reg 0: (row 2g,   k 16s + 2c, +1)    reg 1: (row 2g+1, k 16s + 2c, +1)
//   reg 2: (row 2g,   k 16s + 2c + 8, +9) reg 3: (row 2g+1, k 16s + 2c + 8, +9)
// Each register's two codes are one checkpoint byte (low nibble = even k). Bit positions of each code in the
// word (low-k code at p, high-k code at p + 16) are chosen so that the decode needs no lookup table
// (moe_e2m1x2_decode below): the 3 magnitude bits land on bf16 bits 6-8 (the exponent's low 2 bits and the
// top mantissa bit, i.e. the e2m1 value times 2^-126) and the sign on bit 15. Registers 0-2 sit in the word
// at those bits rotated by 0, 3 and 6 (a rotate and an AND each); register 3 takes the 8 bits left over,
// {0, 1, 3, 4} (+ 16), as (e1, sign, m, e0): one multiply by 2^3 + 2^8 + 2^14 moves m, e0 to bits 6-7 (shift
// 3), e1 to 8 (shift 8) and the sign to 15 (shift 14) at once, the three shifted copies of the 8 bits never
// overlapping (no carries), so an AND before and one after finish it: 8 integer ops per word (the IMAD on the
// FMA pipe, the rest on the ALU pipe, the busier one).
// Scale word (w, g) of a k-tile: bytes (row 2g, block 2kt), (row 2g+1, block 2kt), (row 2g, block 2kt+1),
// (row 2g+1, block 2kt+1) of the warp's rows 16 w + ...; the 4 lanes of a quad read the same word.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

__host__ __device__ constexpr uint32_t moe_rotl32(uint32_t x, int n) { return n == 0 ? x : (x << n) | (x >> (32 - n)); }

// Places the two e2m1 codes of checkpoint byte `b` (low nibble = even k) as register j of a packed word.
__host__ __device__ constexpr uint32_t moe_pack_place(uint8_t b, int j) {
  const uint32_t lo = b & 15u, hi = b >> 4;
  if (j == 3) {  // nibble bits (m, e0, e1, sign) at bits 3, 4, 0, 1 (+ 16 for the high code)
    const auto at = [](uint32_t n) { return ((n & 1u) << 3) | (((n >> 1) & 1u) << 4) | ((n >> 2) & 1u) | ((n >> 3) << 1); };
    return at(lo) | (at(hi) << 16);
  }
  const uint32_t decoded = ((lo & 7u) << 6) | ((lo >> 3) << 15) | ((hi & 7u) << 22) | ((hi >> 3) << 31);
  return moe_rotl32(decoded, 3 * j);
}

// Register j of a packed word as bf16x2 bits holding e2m1 value * 2^-126 (exact; code 1 = 0.5 becomes the
// bf16 subnormal 2^-127). Multiplying by 2^(scale - 1) gives the dequantized weights.
__host__ __device__ inline void moe_e2m1x2_decode(uint32_t w, uint32_t (&r)[4]) {
  r[0] = w & 0x81C081C0u;
  r[1] = ((w >> 3) | (w << 29)) & 0x81C081C0u;  // rotate right 3 (one funnel shift)
  r[2] = ((w >> 6) | (w << 26)) & 0x81C081C0u;
  r[3] = ((w & 0x001B001Bu) * 0x4108u) & 0x81C081C0u;  // copies shifted by 3, 8, 14 (see above)
}

// Packs n_experts matrices [rows, in_features] (checkpoint layout: blocks [E, rows, in/32, 16], scales
// [E, rows, in/32]) into the layout above. dst may equal src (in place: each CTA reads its whole 64-row
// group into shared memory before writing it). rows % 64 == 0 and in_features % 64 == 0, in_features <= 2880
// (the group is staged in shared memory: 64 * in * 17/32 bytes), else mxs::Error.
void moe_gemm_pack_experts(const uint8_t* blocks, const uint8_t* scales, uint8_t* blocks_out, uint8_t* scales_out,
                           int n_experts, int rows, int in_features, cudaStream_t stream);

// *d_max = max(*d_max, largest byte of scales[0, n)) (scales 16-byte aligned; the caller zeroes *d_max): at
// load, whether a layer's e8m0 scales stay <= 128 (block scales <= 2), so that its kernels may skip the
// dequantization's second factor (MoeGemmWeights::big_scales).
void moe_scales_max_async(const uint8_t* scales, size_t n, unsigned* d_max, cudaStream_t stream);

}  // namespace mxs::cuda
