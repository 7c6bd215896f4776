// The MoE combine's arithmetic, shared by moe_combine (its own kernel) and the q/k/v GEMV's fused prologue
// (qkv_rope with moe_yw set): x = bf(x + sum_e yw) with a bf16 rounding after each add, in ascending expert
// id (the reference's index_add_ chain, spec §3.6).
#pragma once
#include <cstdint>

namespace mxs::cuda {

constexpr int kCombineMaxTopK = 8;

// order[s] = the slot of the token's s-th smallest expert id (s < top_k): a sorting network over register
// keys (expert << 3 | slot), no local memory. ids: the token's [top_k] expert ids, in registers.
__device__ __forceinline__ void combine_slot_order_ids(const int (&ids)[kCombineMaxTopK], int top_k,
                                                       int (&order)[kCombineMaxTopK]) {
  int key[kCombineMaxTopK];
#pragma unroll
  for (int s = 0; s < kCombineMaxTopK; ++s) key[s] = s < top_k ? (ids[s] << 3 | s) : 0x7fffffff;
#pragma unroll
  for (int i = 0; i < kCombineMaxTopK; ++i)
#pragma unroll
    for (int j = 0; j + 1 < kCombineMaxTopK - i; ++j) {
      const int a = min(key[j], key[j + 1]), b = max(key[j], key[j + 1]);
      key[j] = a, key[j + 1] = b;
    }
#pragma unroll
  for (int s = 0; s < kCombineMaxTopK; ++s) order[s] = key[s] & 7;
}

// The same from the token's [top_k] expert ids in memory.
__device__ __forceinline__ void combine_slot_order(const int32_t* idx, int top_k, int (&order)[kCombineMaxTopK]) {
  int ids[kCombineMaxTopK];
#pragma unroll
  for (int s = 0; s < kCombineMaxTopK; ++s) ids[s] = s < top_k ? idx[s] : 0;
  combine_slot_order_ids(ids, top_k, order);
}

}  // namespace mxs::cuda
