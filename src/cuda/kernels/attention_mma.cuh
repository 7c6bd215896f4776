// Device helpers for the tensor-core attention kernels (mma.sync m16n8k16 bf16 -> fp32 on sm_90): cp.async
// gathers, ldmatrix, the MMA itself, exp2 and bf16x2 packing, and the swizzled [rows][64] bf16 smem tile.
// Shared by attention_prefill and attention_decode_mma (namespace `attn`; smem_u32, mma_bf16 and pack_bf16x2 come
// from bulk_copy.cuh, mma_bf16.cuh (with cp.async and ldmatrix) and device_math.cuh).
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/kernels/bulk_copy.cuh"  // smem_u32
#include "cuda/kernels/device_math.cuh"  // pack_bf16x2, fast_exp2
#include "cuda/kernels/mma_bf16.cuh"

namespace mxs::cuda::attn {

// Element offset of 16-byte chunk c (8 bf16) of row r in a [rows][64] bf16 tile: chunk index XOR (r & 7), so
// the 8 row addresses of one ldmatrix 8x8 matrix hit 8 different bank groups.
__device__ __forceinline__ int swz(int r, int c) { return r * 64 + ((c ^ (r & 7)) << 3); }

}  // namespace mxs::cuda::attn
