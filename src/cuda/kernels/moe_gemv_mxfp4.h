// MXFP4 expert GEMVs for the pairs grouped by moe_router (gpt-oss-spec.md §2.3, §3.6), on the packed expert
// layout the grouped GEMM also reads (moe_gemm_pack.h; packed in place at load, one copy of the experts).
// Each CTA takes one active expert and a group of 64 of its output rows and runs every pair routed to that
// expert, so an expert's weights are read once per step whatever the batch (up to 8 pairs per pass). Over the
// whole K (the one-token gate_up and every step of 2+ tokens: each thread streams its packed bytes through a
// register ring, the CTA applies the epilogue), or over one K piece (one-token down, layers with scale bytes
// > 128): the pieces' fp32 partial dots are added in piece order by the last CTA of each (expert, row group),
// which applies the epilogue. Both sum in the same order, so they give the same bits (deterministic).
//   moe_gemv_mxfp4_gate_up: gu = bf(bf(x . Wgu) + b) on the interleaved (gate, up) rows, then the clamped
//                           SwiGLU: act[pair, i] = bf(bf(u + 1) * bf(g * bf(sigmoid(bf(g * alpha)))))
//   moe_gemv_mxfp4_down:    yw[pair, r] = bf(bf(bf(act . Wd) + b) * routing weight)
//   moe_combine:            x = bf(x + sum_e yw) with a bf16 rounding after each add in ascending expert id
//                           (the reference's index_add_ chain), then xn = rmsnorm(x) with the next norm.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/moe_gemm_mxfp4.h"
#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

struct MoeGemvParams {
  MoeGemmWeights w;               // one layer's experts, packed at load (moe_gemm_pack.h); biases as stored
  float* partials = nullptr;      // [moe_gemv_partial_floats(...)] fp32 workspace of the GEMVs
  unsigned* tile_counters = nullptr;  // [moe_gemv_counter_count(...)] zeroed workspace (the GEMVs leave it zeroed)
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
  bool cluster_combine = true;    // moe_combine's norm over 2-16 column chunks: in the token's cluster (false: the
                                  // last CTA through L2; the same operations, bit for bit)
};

// Up to kMoeGemvMaxPairs (token, expert) pairs per launch (more: the grouped GEMM, moe_gemm_mxfp4.h).
constexpr int kMoeGemvMaxPairs = 1024;
void moe_gemv_mxfp4_gate_up(const MoeGemvParams& p, cudaStream_t stream);
void moe_gemv_mxfp4_down(const MoeGemvParams& p, cudaStream_t stream);
void moe_combine(const MoeGemvParams& p, cudaStream_t stream);

// Workspace sizes of the GEMVs: partial dots for up to max_pairs pairs, and the arrival counters.
size_t moe_gemv_partial_floats(int hidden, int intermediate, int max_pairs);
size_t moe_gemv_counter_count(int hidden, int intermediate, int n_experts);

}  // namespace mxs::cuda
