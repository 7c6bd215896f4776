// One token's routing by one warp (gpt-oss-spec.md §3.5): top-k of its bf16 router logits (descending, ties ->
// lower expert id) and the softmax over the k, shared by moe_router (its last CTA) and moe_router_rows (a warp
// per token of a large step), so both route bit for bit alike.
#pragma once
#include <cmath>

#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {

constexpr int kTopkMaxExperts = 128;  // gpt-oss-120b
constexpr int kTopkPerLane = kTopkMaxExperts / 32;
constexpr int kTopkMaxK = 8;

// v[j]: lane l's logit of expert l + 32 j (any value past n_experts; it is ignored). k rounds of a warp argmax
// over the lanes' best orderable keys (argmax_key: larger logit, then lower id), then exp(v - max) / sum in fp32.
// Lane s < top_k returns the rank-s expert in *expert and its weight bf(p) in *weight (other lanes: unchanged).
__device__ __forceinline__ void warp_topk_softmax(const float (&v)[kTopkPerLane], int n_experts, int top_k,
                                                  int* expert, float* weight) {
  const int lane = threadIdx.x & 31;
  unsigned long long key[kTopkPerLane];  // 0 = taken or not an expert
#pragma unroll
  for (int j = 0; j < kTopkPerLane; ++j) {
    const int e = lane + 32 * j;
    key[j] = e < n_experts ? argmax_key(v[j], e) : 0ull;
  }
  float sel_v[kTopkMaxK];
  int sel_i[kTopkMaxK];
#pragma unroll
  for (int s = 0; s < kTopkMaxK; ++s) {
    sel_v[s] = -INFINITY, sel_i[s] = 0;
    if (s >= top_k) continue;
    unsigned long long best = key[0];
#pragma unroll
    for (int j = 1; j < kTopkPerLane; ++j) best = max(best, key[j]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
    const int e = 0x7fffffff - int(best & 0xffffffffu);
    float mine = v[0];  // this lane's logit in the winner's slot j = e / 32 (the owner lane is e % 32)
#pragma unroll
    for (int j = 1; j < kTopkPerLane; ++j)
      if (j == (e >> 5)) mine = v[j];
    sel_i[s] = e;
    sel_v[s] = __shfl_sync(0xffffffffu, mine, e & 31);
#pragma unroll
    for (int j = 0; j < kTopkPerLane; ++j)
      if (lane + 32 * j == e) key[j] = 0ull;
  }
  const float m = sel_v[0];
  float ex[kTopkMaxK], sum = 0.f;
#pragma unroll
  for (int s = 0; s < kTopkMaxK; ++s) {
    ex[s] = s < top_k ? expf(sel_v[s] - m) : 0.f;
    sum += ex[s];
  }
#pragma unroll
  for (int s = 0; s < kTopkMaxK; ++s)
    if (s < top_k && lane == s) *expert = sel_i[s], *weight = bf(ex[s] / sum);
}

}  // namespace mxs::cuda
