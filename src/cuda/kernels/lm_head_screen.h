// Greedy LM head by screening: the argmax of a row's logits without computing all of them.
//
// A greedy step needs only argmax_v(W[v] . x) (ties -> lower id), not the 201,088 logits. An int8 copy of the LM
// head (per-row scale, 1 byte per weight: 0.58 GB for gpt-oss vs 0.87 GB of bf12) gives every logit to within a
// bound that this kernel computes per row and step:
//   approx[v] = scale[v] * sx * sum_i q[v][i] * x16[i]      (x quantized to 16 bits; exact int8 mma sums)
//   |exact[v] - approx[v]| <= err[v] * |x|_1 + l1[v] * ex + rounding terms = B[v]
// with err[v] the row's largest |w - q * scale| and l1[v] = sum |q| * scale (both from the packing), ex the
// activation quantization's largest error, and margins for the exact value's fp32 summation and bf16 rounding.
// Then T = max_v (approx - B) is a lower bound of the largest exact logit, and every row with approx + B >= T is a
// candidate: the true argmax and every row tied with it are among them. The candidates (random 20b weights: a few
// dozen) are recomputed exactly, with the bf12 (or bf16) GEMV's own dot and rounding, so the id is bit for bit
// the one gemv_bf16_lm_head's folded argmax gives. Only the candidates' logits are written to y.
//
// Two launches (PDL chain): lm_head_screen_kernel streams the int8 rows (warp = one 16-row block through
// mma.m16n8k32.s8, 8 warps) and writes upper[m][v] = approx + B and the max of approx - B per token (orderable keys,
// atomicMax); lm_head_finish_kernel
// (one CTA per SM) compares every upper with its token's T, recomputes the candidates and folds them into
// row_argmax, and its last CTA clears the T keys for the next launch.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/bf12_weights.h"

namespace mxs::cuda {

// LM-head rows one launch screens: the runner's greedy steps of 1-8 rows (the tensor-core screen costs the same at
// any of them; the GEMM it replaces from 4 rows reads the 1.16 GB bf16 matrix).
constexpr int kLmScreenMaxRows = 8;

// The int8 screening copy of a [V][K] bf16 matrix (K a multiple of 32), rows padded to a multiple of 16 (zero rows).
// q is tiled for mma.m16n8k32: tile (16-row block, 32-column block) = 512 bytes, lane g * 4 + t's 16 bytes are its A
// registers a0..a3 (rows g, g + 8; columns 4 t.., 16 + 4 t..): lm_screen_offset gives any element's byte.
struct LmScreenWeights {
  const int8_t* q = nullptr;     // [rows / 16][K / 32][32][16] round(w / scale), in [-127, 127]
  // [rows] {scale, err, l1, 0}: err >= max_i |w_i - q_i * scale|, l1 >= sum_i |q_i| * scale
  const float4* rows = nullptr;
};

// Rows of the packed copy of an n_out-row matrix (n_out rounded up to 16): q holds rows * k bytes, rows rows * 16.
size_t lm_screen_rows(int n_out);
// Byte offset of element (row, col) in q.
size_t lm_screen_offset(int row, int col, int k);

// Packs `w` [n_out][k] bf16 into q / rows (device buffers for lm_screen_rows(n_out) rows). A row with a non-finite
// weight gets err = +inf: it is always a candidate (recomputed exactly).
void pack_lm_screen(const void* w, int n_out, int k, int8_t* q, float4* rows, cudaStream_t stream);

struct LmScreenParams {
  const void* a = nullptr;            // [*, k] bf16 activations (the final-norm output)
  const int32_t* src_rows = nullptr;  // [n_rows] rows of `a` (nullptr: 0..n_rows-1)
  LmScreenWeights screen;
  const void* w = nullptr;            // [n_out, k] bf16: the exact rows when w_bf12 is not packed
  Bf12Weights w_bf12;                 // the exact rows (bf12 copy of w) when packed
  void* y = nullptr;                  // [n_rows, n_out] bf16: the candidates' logits (other entries untouched)
  unsigned long long* row_argmax = nullptr;  // [n_rows] argmax keys (device_math.cuh argmax_key), zeroed before
  float* upper = nullptr;             // [n_rows, n_out] workspace
  unsigned* lower_max = nullptr;      // [n_rows] orderable keys; zero before the first launch (the kernel clears them)
  unsigned* done_counter = nullptr;   // [1] zero before the first launch (the kernel resets it)
  unsigned* n_candidates = nullptr;   // optional [n_rows]: += the row's candidate count (tests, statistics)
  int n_rows = 0, k = 0, n_out = 0;   // n_rows 1..kLmScreenMaxRows; k 2880 or 64
};

void lm_head_screen(const LmScreenParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
