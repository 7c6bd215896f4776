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
  // Optional (moe_router): [1] on the device, the step's real tokens n_real; token
  // t >= n_real (a CUDA graph bucket's padding row) takes the experts and weights of real token (t - n_real) % n_real,
  // so padding adds pairs but never an expert to read, and its pairs spread over the real tokens' experts (few pass
  // an 8-pair tile).
  const int32_t* n_real = nullptr;
  // moe_router_norm, and moe_router when x is set: xn_out = rmsnorm(x, norm_w) is computed first and routed (xn above
  // is unused).
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

// The router GEMV over CTAs (token, 8 experts); the last CTA routes every token (arrival counter). With p.x set,
// every CTA first normalizes its token's row (the post-attention RMSNorm folded in; CTA (t, 0) writes xn_out), bit
// for bit rmsnorm + moe_router.
void moe_router(const MoeRouterParams& p, const MoeRouteIndex& index, cudaStream_t stream);

// The post-attention RMSNorm and the router in one launch (a cluster of <= 8 CTAs) for one token and
// <= kRouterNormMaxExperts experts; same outputs as rmsnorm + moe_router, bit for bit (logits, xn, top-k,
// weights, grouping); done_counter is not used. One token only: at 2-4 tokens moe_router with the norm folded in
// (x set) is faster (H200, session 26, graph ms per 20b step at batch 2: 2.030 vs 2.055 with this kernel's two-row
// version, which normalized and dotted both rows in each of its 4 CTAs; at 3-4 rows that version lost to the
// rmsnorm launch).
constexpr int kRouterNormMaxExperts = 128;
void moe_router_norm(const MoeRouterParams& p, const MoeRouteIndex& index, cudaStream_t stream);

}  // namespace mxs::cuda
