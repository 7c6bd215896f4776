// MoE routing for steps of many tokens (prefill chunks, large decode batches). moe_router (moe_router.h) runs
// the router GEMV over (token, 8-expert) CTAs and selects every token's top-k in its last CTA: right for a few
// tokens, but at 2,048 tokens that took 566 us per layer on an H200 (8,192 CTAs each re-reading 46 KB of router
// weights, then a serial tail), a quarter of a 2k-token prefill. Here the logits come from a cuBLAS GEMM
// (acc [n_tokens, n_experts] fp32 = xn . Wr^T, dense_gemm.h's gemm_bf16_f32) and two small kernels finish:
//   1. top-k: a warp per token: logits = bf(acc + b) (moe_router's rounding point), top-k (descending, ties ->
//      lower expert id) and the softmax over the k, exactly as moe_router; per-expert pair counts (shared
//      atomics, then one global atomic per (CTA, expert)).
//   2. place: every CTA scans the counts into expert offsets (CTA 0 also writes expert_offsets, the active
//      list and its length); each thread places one pair at offset[e] + the CTA's base for e (one global
//      atomic per (CTA, expert)) + its rank inside the CTA. The last CTA zeroes the counts for the next launch.
// Outputs are moe_router's (topk_idx, topk_w, MoeRouteIndex); the order of pairs inside an expert's group
// differs from run to run, which no consumer depends on (every pair's result is computed independently).
// Results equal moe_router's except where the GEMM's accumulation order moves a logit across a bf16 rounding
// boundary (as the dense q/k/v path does).
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/moe_router.h"

namespace mxs::cuda {

// Workspace ints for moe_router_from_logits: [2 * n_experts] counts then placement cursors, plus the
// placement kernel's arrival counter; zero before the first launch (the kernels leave them zero).
inline size_t moe_router_rows_work_ints(int n_experts) { return size_t(2) * n_experts + 1; }

// p: b, topk_idx, topk_w, n_tokens, n_experts (<= 128), top_k (<= 8) are used (xn, w, logits, done_counter
// are not). acc: [n_tokens, n_experts] fp32 router GEMM output without the bias. work: see above.
void moe_router_from_logits(const MoeRouterParams& p, const float* acc, const MoeRouteIndex& index, int32_t* work,
                            cudaStream_t stream);

}  // namespace mxs::cuda
