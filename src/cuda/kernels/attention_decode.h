// Paged attention for the new tokens of a step (decode tokens and prefill chunks alike): each query token
// attends to the keys of its own sequence at positions <= its own (and > pos - window on sliding layers),
// with the per-head sink logit as an extra softmax column (gpt-oss-spec.md §3.4). Short ranges run
// attention_decode_exact (the CPU reference's rounding, bit for bit up to exp); long ones split-K:
// attention_decode_split writes per-split (max, sum, unnormalized output) partials and
// attention_decode_combine merges them with the sink.
#pragma once
#include <cuda_runtime.h>

#include "cuda/kernels/qkv_rope.h"

namespace mxs::cuda {

struct AttentionDecodeParams {
  const void* q = nullptr;      // [n_tokens, n_heads * 64] bf16 (post-RoPE)
  KvLayerView kv;
  TokenMeta meta;
  const void* sinks = nullptr;  // [n_heads] bf16
  float* part_o = nullptr;      // [n_tokens, n_heads, n_splits, 64] fp32 workspace
  float* part_ml = nullptr;     // [n_tokens, n_heads, n_splits, 2] fp32 workspace (max, sum)
  void* out = nullptr;          // [n_tokens, n_heads * 64] bf16
  unsigned* counters = nullptr; // [n_tokens * n_kv_heads] zeroed workspace (kernels leave it zeroed): the last
                                // split CTA merges; nullptr: a second launch (attention_decode_combine) merges
  int n_tokens = 0, n_heads = 0, n_kv_heads = 0;
  int window = 0;               // keys seen on a sliding layer (128); 0 = full causal attention
  int n_splits = 1;             // key ranges per (token, kv head); n_splits * keys_per_split >= keys seen
  int keys_per_split = 256;     // multiple of 64 (split path); exact path: the most keys a token sees
  bool exact = false;           // the exact path (needs n_splits == 1, keys_per_split <= kExactAttentionMaxKeys)
};

// With `exact` (n_splits == 1, keys_per_split = the most keys a token of the launch sees <= this bound), one
// CTA per (token, kv head) runs the reference's exact order of operations (bf16 probabilities, key-order
// sums): the runner uses it for steps whose contexts are all this short. Otherwise the split path (online
// fp32 softmax over key splits, then attention_decode_combine with the sink).
constexpr int kExactAttentionMaxKeys = 256;

void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);

// Workspace floats needed for n_tokens x n_heads x n_splits.
inline size_t attention_partial_floats(int n_tokens, int n_heads, int n_splits) {
  return size_t(n_tokens) * size_t(n_heads) * size_t(n_splits) * 66;
}

}  // namespace mxs::cuda
