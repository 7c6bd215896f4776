// MXFP4 expert GEMVs for the pairs grouped by moe_route_index (gpt-oss-spec.md §2.3, §3.6). Each CTA takes
// one active expert and a tile of its output rows and runs every pair routed to that expert, so an expert's
// weights are read once per step whatever the batch.
//   moe_gemv_mxfp4_gate_up: gu = bf(bf(x . Wgu) + b) on the interleaved (gate, up) rows, then the clamped
//                           SwiGLU: act[pair, i] = bf(bf(u + 1) * bf(g * bf(sigmoid(bf(g * alpha)))))
//   moe_gemv_mxfp4_down:    yw[pair, r] = bf(bf(bf(act . Wd) + b) * routing weight)
//   moe_combine:            x = bf(x + sum_e yw) with a bf16 rounding after each add in ascending expert id
//                           (the reference's index_add_ chain), then xn = rmsnorm(x) with the next norm.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

// One layer's experts, as stored in the checkpoint (no repacking).
struct MoeExpertWeights {
  const uint8_t* gate_up_blocks = nullptr;  // [E, 2I, H/32, 16] e2m1 pairs, low nibble = even element
  const uint8_t* gate_up_scales = nullptr;  // [E, 2I, H/32] e8m0
  const void* gate_up_bias = nullptr;       // [E, 2I] bf16 (interleaved like the rows)
  const uint8_t* down_blocks = nullptr;     // [E, H, I/32, 16]
  const uint8_t* down_scales = nullptr;     // [E, H, I/32]
  const void* down_bias = nullptr;          // [E, H] bf16
};

struct MoeGemvParams {
  MoeExpertWeights w;
  MoeRouteIndex index;            // from moe_router
  const int32_t* topk_idx = nullptr;  // [n_tokens, top_k]
  const float* topk_w = nullptr;  // [n_tokens, top_k]
  const void* xn = nullptr;       // [n_tokens, H] bf16 (gate_up input)
  void* act = nullptr;            // [n_tokens * top_k, I] bf16 workspace (per pair)
  void* yw = nullptr;             // [n_tokens * top_k, H] bf16 workspace (per pair)
  void* x = nullptr;              // [n_tokens, H] bf16 residual, updated by moe_combine
  const void* next_norm = nullptr;  // [H] bf16: the next RMSNorm's weight (nullptr: no norm)
  void* xn_out = nullptr;         // [n_tokens, H] bf16 normed output of moe_combine
  float* norm_partials = nullptr;   // [n_tokens, 16] workspace of moe_combine's norm (hidden > 256)
  unsigned* norm_counters = nullptr;  // [n_tokens] zeroed workspace (moe_combine leaves it zeroed)
  int n_tokens = 0, hidden = 0, intermediate = 0, n_experts = 0, top_k = 4;
  float swiglu_alpha = 1.702f, swiglu_limit = 7.0f, eps = 1e-5f;
};

void moe_gemv_mxfp4_gate_up(const MoeGemvParams& p, cudaStream_t stream);
void moe_gemv_mxfp4_down(const MoeGemvParams& p, cudaStream_t stream);
void moe_combine(const MoeGemvParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
