// MXFP4 grouped GEMMs for MoE prefill (gpt-oss-spec.md §2.3, §3.6) on sm_90a wgmma: one launch covers all
// experts (ragged pair counts, empty experts allowed) with a persistent tile scheduler. Weights (packed at
// load by moe_gemm_pack_experts) are the register-sourced A operand, dequantized e2m1 x e8m0 -> bf16 in
// registers; the expert's tokens are the shared-memory B operand; fp32 accumulators. Same rounding points
// as moe_gemv_mxfp4 and the CPU reference:
//   moe_gemm_mxfp4_gate_up: for sorted position s of expert e (pair = pair_list[s], token = pair / top_k):
//       g/u = bf(bf(xn[token] . W[e, row]) + b[e, row]) on the interleaved rows (gate 2i, up 2i + 1), then
//       act[s, i] = bf(bf(u + 1) * bf(g * bf(sigmoid(bf(g * alpha))))), g <= limit, -limit <= u <= limit.
//       act is in SORTED order: row s, not the pair id.
//   moe_gemm_mxfp4_down: yw[pair_list[s], r] = bf(bf(bf(act[s] . Wd[e, r]) + bd[e, r]) * topk_w[pair_list[s]])
//       (the restore to pair order is this scatter; moe_combine then sums a token's pairs).
// Shapes: K = input features and M = output rows multiples of 64 (the pack also needs K <= 2880), n_experts
// <= 128; no workspace beyond yw, no host synchronization (graph-capturable: the TMA map of B is a kernel
// parameter encoded at launch). Kernel symbols for ncu: moe_gemm_mxfp4_kernel (gate_up on the copy-engine
// producer, i.e. every tile but the 192 tiles at a mean of <= 288 pairs per expert, runs moe_gather_rows_kernel
// first).
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

// One layer's experts in the packed layout of moe_gemm_pack.h (same sizes as the checkpoint tensors);
// biases as stored.
struct MoeGemmWeights {
  const uint8_t* gate_up_blocks = nullptr;  // packed [E, 2I/64, H/64, 128, 16]  (= [E, 2I, H/32, 16] bytes)
  const uint8_t* gate_up_scales = nullptr;  // packed [E, 2I/64, H/64, 32, 4]    (= [E, 2I, H/32] bytes)
  const void* gate_up_bias = nullptr;       // [E, 2I] bf16, rows interleaved gate (2i) / up (2i + 1)
  const uint8_t* down_blocks = nullptr;     // packed [E, H/64, I/64, 128, 16]
  const uint8_t* down_scales = nullptr;     // packed [E, H/64, I/64, 32, 4]
  const void* down_bias = nullptr;          // [E, H] bf16
  // Some scale byte of the layer is > 128 (a block scale > 2): the kernels' dequantization with the second
  // factor (moe_pack_dequant.cuh). True unless a scan proved otherwise (moe_scales_max_async, at load).
  bool big_scales = true;
};

struct MoeGemmParams {
  MoeGemmWeights w;
  MoeRouteIndex index;            // expert_offsets [E + 1], pair_list [n_pairs] (others unused)
  const float* topk_w = nullptr;  // [n_pairs] by pair id (bf16 values held in fp32); down only
  const void* xn = nullptr;       // [ceil(n_pairs / top_k), H] bf16: gate_up input (row = pair / top_k)
  void* act = nullptr;            // [n_pairs, I] bf16, sorted order: gate_up output, down input
  void* yw = nullptr;             // [n_pairs, H] bf16 by pair id: down output; gate_up's scratch (its input
                                  // rows in sorted order for the TMA boxes of the small tiles): set for both
  int n_pairs = 0, hidden = 0, intermediate = 0, n_experts = 0, top_k = 4;
  float swiglu_alpha = 1.702f, swiglu_limit = 7.0f;
  int n_tile = 0;                 // tokens per tile: 0 = chosen from n_pairs / n_experts; else 32, 48, 64,
                                  // 128 or 192 (tests force each)
  int producer = 0;               // loads of the 128 / 192 tiles: 0 = chosen, 1 = copy engine (TMA), 2 = cp.async
                                  // (gate_up's 192 and the 128 tiles; tests force each; see moe_gemm_mxfp4.cu)
  // [2] workspace, zero before the first launch (each launch leaves it zero; launches using it must not
  // overlap): set = dynamic tile scheduler (a CTA's next tile from a global counter), nullptr = static
  // round-robin (CTA b takes tiles b, b + grid, ...). Results are bit-identical either way.
  unsigned* sched = nullptr;
};

void moe_gemm_mxfp4_gate_up(const MoeGemmParams& p, cudaStream_t stream);
void moe_gemm_mxfp4_down(const MoeGemmParams& p, cudaStream_t stream);

// The token tile the launch uses for n_pairs over n_experts (when MoeGemmParams::n_tile == 0).
int moe_gemm_pick_n_tile(int n_pairs, int n_experts);

}  // namespace mxs::cuda
