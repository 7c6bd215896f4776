// Load-time pre-swizzle of the MXFP4 experts (see moe_gemm_pack.h): one CTA per 64-row group of one expert
// stages the group's checkpoint bytes (64 rows x in/2 bytes + 64 x in/32 scales) in shared memory, then
// writes them back permuted. Reads and writes are 16-byte and coalesced; runs once per layer at load.
#include "cuda/kernels/moe_gemm_pack.h"

#include <algorithm>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/gemv_core.cuh"

namespace mxs::cuda {
namespace {

constexpr int kThreads = 256;

// grid: (rows / 64, n_experts). Group bytes: 64 * K/2 nibble bytes, then 64 * K/32 scale bytes.
__global__ void __launch_bounds__(kThreads) moe_gemm_pack_kernel(const uint8_t* blocks, const uint8_t* scales,
                                                                 uint8_t* blocks_out, uint8_t* scales_out,
                                                                 int rows, int K) {
  extern __shared__ uint4 s_grp4[];
  uint8_t* s_q = reinterpret_cast<uint8_t*>(s_grp4);  // [64][K/2]
  const int row_bytes = K / 2, n_blk = K / 32, KT = K / 64;
  uint8_t* s_sc = s_q + 64 * row_bytes;  // [64][K/32]
  const size_t grp = size_t(blockIdx.y) * (rows / 64) + blockIdx.x;  // (expert, 64-row group)
  const uint8_t* q_src = blocks + grp * 64 * row_bytes;
  const uint8_t* s_src = scales + grp * 64 * n_blk;
  for (int i = threadIdx.x; i < 64 * row_bytes / 16; i += kThreads)
    reinterpret_cast<uint4*>(s_q)[i] = reinterpret_cast<const uint4*>(q_src)[i];
  for (int i = threadIdx.x; i < 64 * n_blk; i += kThreads) s_sc[i] = s_src[i];
  __syncthreads();  // the whole group is staged: the writes below may overwrite the source (in place)

  // Nibbles: output chunk (kt, T) = the 16 bytes thread T of the GEMM's warpgroup loads for k-tile kt.
  uint4* q_dst = reinterpret_cast<uint4*>(blocks_out + grp * 64 * row_bytes);
  for (int i = threadIdx.x; i < KT * 128; i += kThreads) {
    const int kt = i / 128, T = i % 128, w = T / 32, g = (T % 32) / 4, c = T % 4;
    uint32_t word[4];
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      word[s] = 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int row = 16 * w + 2 * g + (j & 1);           // fragment row g (j even) or g + 8 (j odd)
        const int byte = kt * 32 + 8 * s + c + 4 * (j >> 1);  // k = 16 s + 2 c (+ 8 for j >= 2), 2 per byte
        word[s] |= moe_pack_place(s_q[row * row_bytes + byte], j);
      }
    }
    q_dst[i] = make_uint4(word[0], word[1], word[2], word[3]);
  }
  // Scales: word (kt, w, g) = (row 2g, blk 2kt), (row 2g+1, blk 2kt), (row 2g, blk 2kt+1), (row 2g+1, blk 2kt+1).
  uint32_t* s_dst = reinterpret_cast<uint32_t*>(scales_out + grp * 64 * n_blk);
  for (int i = threadIdx.x; i < KT * 32; i += kThreads) {
    const int kt = i / 32, w = (i % 32) / 8, g = i % 8, r0 = 16 * w + 2 * g;
    const uint32_t b0 = s_sc[r0 * n_blk + 2 * kt], b1 = s_sc[(r0 + 1) * n_blk + 2 * kt];
    const uint32_t b2 = s_sc[r0 * n_blk + 2 * kt + 1], b3 = s_sc[(r0 + 1) * n_blk + 2 * kt + 1];
    s_dst[i] = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24);
  }
}

// *d_max = max(*d_max, every byte of scales[0, n)): 16 bytes per thread per step, a warp max, one atomic per warp.
__global__ void __launch_bounds__(256) moe_scales_max_kernel(const uint8_t* scales, size_t n, unsigned* d_max) {
  const size_t n16 = n / 16, stride = size_t(gridDim.x) * blockDim.x;
  const size_t i0 = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned m = 0;
  for (size_t i = i0; i < n16; i += stride) {
    const uint4 v = reinterpret_cast<const uint4*>(scales)[i];
    m = __vmaxu4(m, __vmaxu4(__vmaxu4(v.x, v.y), __vmaxu4(v.z, v.w)));
  }
  for (size_t i = n16 * 16 + i0; i < n; i += stride) m = __vmaxu4(m, scales[i]);
  m = max(max(m & 0xffu, (m >> 8) & 0xffu), max((m >> 16) & 0xffu, m >> 24));
  m = __reduce_max_sync(0xffffffffu, m);
  if ((threadIdx.x & 31) == 0 && m > 0) atomicMax(d_max, m);
}

}  // namespace

void moe_scales_max_async(const uint8_t* scales, size_t n, unsigned* d_max, cudaStream_t stream) {
  MXS_CHECK(reinterpret_cast<uintptr_t>(scales) % 16 == 0, "moe_scales_max_async: scales must be 16-byte aligned");
  const size_t blocks = std::min<size_t>((n / 16 + 255) / 256 + 1, 1024);
  moe_scales_max_kernel<<<unsigned(blocks), 256, 0, stream>>>(scales, n, d_max);
  CUDA_CHECK_LAUNCH();
}

void moe_gemm_pack_experts(const uint8_t* blocks, const uint8_t* scales, uint8_t* blocks_out, uint8_t* scales_out,
                           int n_experts, int rows, int in_features, cudaStream_t stream) {
  MXS_CHECK(n_experts >= 1 && rows >= 64 && rows % 64 == 0 && in_features >= 64 && in_features % 64 == 0 &&
                in_features <= 2880,
            strfmt("moe_gemm_pack_experts: experts %d, rows %d, in %d not supported (rows %% 64 == 0, in %% 64 == 0, "
                   "in <= 2880)", n_experts, rows, in_features));
  const int smem = 64 * (in_features / 2) + 64 * (in_features / 32);
  allow_smem(moe_gemm_pack_kernel, smem);
  moe_gemm_pack_kernel<<<dim3(rows / 64, n_experts), kThreads, smem, stream>>>(blocks, scales, blocks_out, scales_out,
                                                                             rows, in_features);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
