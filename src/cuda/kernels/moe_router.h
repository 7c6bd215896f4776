// MoE routing (gpt-oss-spec.md §3.5): router GEMV + bias (bf16 logits), top-k (descending, ties -> lower
// expert id), softmax over the k in fp32 with bf16 output; then moe_route_index groups the (token, slot)
// pairs by expert so that each needed expert's weights are read once per step for the whole batch.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

struct MoeRouterParams {
  const void* xn = nullptr;     // [n_tokens, hidden] bf16
  const void* w = nullptr;      // [n_experts, hidden] bf16
  const void* b = nullptr;      // [n_experts] bf16
  float* logits = nullptr;      // [n_tokens, n_experts] workspace (bf16 values held in fp32)
  unsigned* done_counter = nullptr;  // [1] workspace, zero before the first launch (the kernel resets it)
  int32_t* topk_idx = nullptr;  // [n_tokens, top_k] expert ids, best first
  float* topk_w = nullptr;      // [n_tokens, top_k] routing weights (bf16 values held in fp32)
  int n_tokens = 0, hidden = 0, n_experts = 0, top_k = 4;
  // Optional (moe_router; moe_router_norm at 2 tokens): [1] on the device, the step's real tokens n_real; token
  // t >= n_real (a CUDA graph bucket's padding row) takes the experts and weights of real token (t - n_real) % n_real,
  // so padding adds pairs but never an expert to read, and its pairs spread over the real tokens' experts (few pass
  // an 8-pair tile).
  const int32_t* n_real = nullptr;
  // moe_router_norm only: xn_out = rmsnorm(x, norm_w) is computed first and routed (xn above is unused).
  const void* x = nullptr;       // [n_tokens, hidden] bf16 residual stream
  const void* norm_w = nullptr;  // [hidden] bf16
  void* xn_out = nullptr;        // [n_tokens, hidden] bf16
  float eps = 1e-5f;
};

// Expert grouping of the n_tokens * top_k pairs (pair id = token * top_k + slot).
struct MoeRouteIndex {
  int32_t* expert_offsets = nullptr;  // [n_experts + 1] start of each expert's pairs in pair_list
  int32_t* pair_list = nullptr;       // [n_tokens * top_k] pair ids grouped by expert (order inside a group
                                      // is arbitrary; every pair's result is computed independently)
  int32_t* active_experts = nullptr;  // [n_experts] ids of experts with >= 1 pair, ascending; rest -1
  int32_t* num_active = nullptr;      // [1]
};

void moe_router(const MoeRouterParams& p, const MoeRouteIndex& index, cudaStream_t stream);

// The post-attention RMSNorm and the router in one launch (a cluster of <= 8 CTAs) for 1-kRouterNormMaxTokens
// tokens and <= kRouterNormMaxExperts experts; same outputs as rmsnorm + moe_router, bit for bit (logits, xn,
// top-k, weights, grouping, padding rows by n_real); done_counter is not used. Two tokens at most: at 3-4 (every
// CTA normalizing and dotting 4 rows) it cost more than the rmsnorm launch it replaced (H200, session 26, graph ms
// per step: 20b batch 3 / 4 2.464 / 2.751 vs 2.446 / 2.726; at 2 tokens 2.113 vs 2.187, docs/PERF.md).
constexpr int kRouterNormMaxExperts = 128;
constexpr int kRouterNormMaxTokens = 2;
void moe_router_norm(const MoeRouterParams& p, const MoeRouteIndex& index, cudaStream_t stream);

}  // namespace mxs::cuda
