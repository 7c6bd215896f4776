// See skinny_gemm.h. CTA = 4 warps = 64 weight rows x all (<= 64) token rows x one K split; grid (n_out / 64,
// splits). Per 64-wide k-tile a stage holds the weight tile (64 rows x 128 bytes) and the token tile (8 NT rows x
// 128 bytes), both copied with 16-byte cp.async in a kStages-deep ring and stored with the 16-byte chunk index
// XOR (row % 8), so the ldmatrix reads below (8 rows of one chunk column) hit 8 different bank groups. Warp w
// owns weight rows 16 w .. 16 w + 15: per k16 step one ldmatrix.x4 gives its A fragments (rows = weight rows),
// one ldmatrix.x4 per pair of 8-token n-tiles gives their B fragments (rows = tokens), then NT mma.sync
// m16n8k16 (bf16 in, fp32 accumulators). Token rows past n_rows are zero-filled (cp.async src-size 0).
#include "cuda/kernels/skinny_gemm.h"

#include <cstdint>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/bulk_copy.cuh"  // smem_u32
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/gemv_core.cuh"  // allow_smem
#include "cuda/kernels/mma_bf16.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kThreads = 128, kStages = 4, kTileRows = 64, kTileK = 64;

// Shared memory of a CTA with NT 8-token n-tiles: kStages x (the weight tile + the token tile).
constexpr int smem_bytes(int nt) { return kStages * (kTileRows * 128 + 8 * nt * 128); }

// Byte offset of (row, 16-byte chunk) in a [rows][128 bytes] swizzled tile.
__device__ __forceinline__ uint32_t swz(int row, int chunk) { return uint32_t(row * 128 + ((chunk ^ (row & 7)) << 4)); }

template <int NT>
__global__ void __launch_bounds__(kThreads) skinny_gemm_kernel(const bf16_t* x, const bf16_t* w, float* y, int M, int N,
                                                                int K, int kt_per_split) {
  constexpr int kStageA = kTileRows * 128, kStageB = 8 * NT * 128, kStage = kStageA + kStageB;
  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t s0 = smem_u32(smem);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, c = lane & 3;
  const int row0 = blockIdx.x * kTileRows, kt0 = blockIdx.y * kt_per_split;
  const auto load_a = [&](int kt, int stage) {  // the weights: constant data
#pragma unroll
    for (int j = 0; j < kTileRows * 8 / kThreads; ++j) {
      const int q = tid + j * kThreads, r = q >> 3, ch = q & 7;
      cp_async16(s0 + stage * kStage + swz(r, ch), w + size_t(row0 + r) * K + size_t(kt0 + kt) * kTileK + ch * 8,
                       16);
    }
  };
  const auto load_b = [&](int kt, int stage) {  // the token rows: written by the previous kernel
    for (int q = tid; q < 8 * NT * 8; q += kThreads) {
      const int r = q >> 3, ch = q & 7;
      const bool ok = r < M;
      cp_async16(s0 + stage * kStage + kStageA + swz(r, ch),
                       x + size_t(ok ? r : 0) * K + size_t(kt0 + kt) * kTileK + ch * 8, ok ? 16 : 0);
    }
  };
  // The first stages' weights before the wait (they overlap the previous kernel's tail), then the tokens.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < kt_per_split) load_a(s, s);
  griddep_wait();
  griddep_launch_dependents();
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < kt_per_split) load_b(s, s);
    cp_async_commit();  // group s = A(0..kStages-2 on s = 0) + B(s)
  }
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  // A: lane l addresses row (l % 8) + 8 ((l / 8) % 2) of the warp's 16, chunk 2 k16 + l / 16 -> a0..a3.
  const int a_row = 16 * warp + (lane & 7) + 8 * ((lane >> 3) & 1), a_ch = lane >> 4;
  // B: lane l addresses token (l % 8) + 8 (l / 16) of an n-tile pair, chunk 2 k16 + (l / 8) % 2 -> b0, b1 of
  // n-tile j, then of j + 1.
  const int b_row = (lane & 7) + 8 * (lane >> 4), b_ch = (lane >> 3) & 1;
  for (int kt = 0; kt < kt_per_split; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage kt landed for every thread; stage kt - 1 is free for the load below
    const int nk = kt + kStages - 1;
    if (nk < kt_per_split) load_a(nk, nk % kStages), load_b(nk, nk % kStages);
    cp_async_commit();
    const uint32_t sa = s0 + (kt % kStages) * kStage, sb = sa + kStageA;
#pragma unroll
    for (int k16 = 0; k16 < 4; ++k16) {
      uint32_t a[4];
      ldmatrix_x4(a, sa + swz(a_row, 2 * k16 + a_ch));
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        uint32_t b[4];
        ldmatrix_x4(b, sb + swz(8 * j + (NT == 1 ? (lane & 7) : b_row), 2 * k16 + b_ch));
        mma_bf16(acc[j], a, b[0], b[1]);
        if (NT > 1) mma_bf16(acc[j + 1], a, b[2], b[3]);
      }
    }
  }
  // acc[j]: (weight row 16 w + g, tokens 8 j + 2 c, + 1), (row + 8, same tokens)
  float* ys = y + size_t(blockIdx.y) * M * N;
#pragma unroll
  for (int j = 0; j < NT; ++j)
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const int m = 8 * j + 2 * c + (h & 1), r = row0 + 16 * warp + g + 8 * (h >> 1);
      if (m < M) ys[size_t(m) * N + r] = acc[j][h];
    }
}

template <int NT>
void launch(const void* x, const void* w, float* y, int M, int N, int K, int splits, cudaStream_t stream) {
  constexpr int smem = smem_bytes(NT);
  static const bool ok = (allow_smem(skinny_gemm_kernel<NT>, smem), true);
  (void)ok;
  launch_pdl(skinny_gemm_kernel<NT>, dim3(N / kTileRows, splits), dim3(kThreads), smem, stream,
             static_cast<const bf16_t*>(x), static_cast<const bf16_t*>(w), y, M, N, K, (K / kTileK) / splits);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool skinny_gemm_supports(int n_rows, int k, int n_out) {
  return n_rows >= 1 && n_rows <= kSkinnyGemmMaxRows && k >= kTileK && k % kTileK == 0 && n_out >= kTileRows &&
         n_out % kTileRows == 0;
}

int skinny_gemm_splits(int n_rows, int k, int n_out) {
  // The most K splits (a divisor of the k-tile count, each split >= kStages k-tiles) whose grid still fits on
  // the device at once (by shared memory: kStages x (8 KB of weights + 1 KB per 8 tokens) per CTA, at most 228 KB
  // per SM): every CTA streams its weights from the start.
  static const int sms = current_device_sms();
  const int nt = n_rows <= 8 ? 1 : n_rows <= 16 ? 2 : n_rows <= 32 ? 4 : 8;
  const int per_sm = (228 * 1024) / (smem_bytes(nt) + 1024);  // (1 KB reserved per CTA)
  const int kt = k / kTileK, tiles = n_out / kTileRows;
  int best = 1;
  for (int s = 1; s <= kt; ++s)
    if (kt % s == 0 && kt / s >= kStages && tiles * s <= per_sm * sms) best = s;
  return best;
}

int skinny_gemm_bf16_f32(const void* x, const void* w, float* y, int n_rows, int k, int n_out, cudaStream_t stream) {
  MXS_CHECK(skinny_gemm_supports(n_rows, k, n_out),
            strfmt("skinny_gemm_bf16_f32: n_rows = %d, k = %d, n_out = %d is not supported (1..%d rows, k and n_out "
                   "multiples of 64)", n_rows, k, n_out, kSkinnyGemmMaxRows));
  const int splits = skinny_gemm_splits(n_rows, k, n_out);
  if (n_rows <= 8) launch<1>(x, w, y, n_rows, n_out, k, splits, stream);
  else if (n_rows <= 16) launch<2>(x, w, y, n_rows, n_out, k, splits, stream);
  else if (n_rows <= 32) launch<4>(x, w, y, n_rows, n_out, k, splits, stream);
  else launch<8>(x, w, y, n_rows, n_out, k, splits, stream);
  return splits;
}

}  // namespace mxs::cuda
