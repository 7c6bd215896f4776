// Paged attention for the new tokens of a step (decode tokens and prefill chunks alike): each query token
// attends to the keys of its own sequence at positions <= its own (and > pos - window on sliding layers),
// with the per-head sink logit as an extra softmax column (gpt-oss-spec.md §3.4). With `exact`, short ranges run
// attention_decode_exact (the CPU reference's rounding, bit for bit up to exp); otherwise split-K:
// attention_decode_split writes per-split (max, sum, unnormalized output) partials and
// attention_decode_combine merges them with the sink. attention_decode_mma is the tensor-core split-K path
// for the same params (below).
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
  int exact_head_slices = 0;    // exact path: CTAs per (token, kv head), 1 / 2 / 4 / 8 (8 / that many heads each);
                                // 0 = by the grid size (attention_decode_exact.cu)
  bool cluster_merge = true;    // attention_decode_mma, 4-16 splits: merge in the (t, g) cluster's shared memory
                                // instead of through L2 by the last CTA (the same operations: bit for bit)
};

// With `exact` (n_splits == 1, keys_per_split = the most keys a token of the launch sees <= this bound), CTAs per
// (token, kv head) run the reference's exact order of operations (bf16 probabilities, key-order sums): the runner
// uses it for steps whose contexts are all this short when CudaRunnerOptions::exact_attention is on (its tests of
// identical greedy continuations; off by default). Otherwise the split path (online fp32 softmax over key splits,
// then attention_decode_combine with the sink).
constexpr int kExactAttentionMaxKeys = 256;

void attention_decode(const AttentionDecodeParams& p, cudaStream_t stream);
// The exact path alone (attention_decode_exact.cu; attention_decode calls it for `exact`): K / V staged in shared
// memory, 1-8 CTAs per (token, kv head) (exact_head_slices). attention_decode_exact_simple: the same operations in
// the first version's kernel (K and V read from global memory inside the chains, 10-20x slower at 128-256 keys),
// the tests' GPU reference: both give the same bits.
void attention_decode_exact(const AttentionDecodeParams& p, cudaStream_t stream);
void attention_decode_exact_simple(const AttentionDecodeParams& p, cudaStream_t stream);

// Tensor-core path (attention_decode_mma.cu): same params, same workspaces and sizes (part_o, part_ml,
// counters), fp32 online softmax with P rounded to bf16 for the P.V MMA (as attention_prefill). CTA per
// (token, kv head, split of keys_per_split keys), the 8 q heads of a kv head in the MMA's M dimension, so each
// K/V byte is read once per (token, kv head). Requirements: GQA group 8, head_dim 64, block_size a power of
// two, keys_per_split a multiple of 16, n_splits * keys_per_split >= the keys any token sees, `exact` false,
// and `counters` when n_splits > 1 (the last split CTA of a (token, kv head) merges; there is no second
// launch). part_ml holds (max, sum) in the log2 domain here: the partials are private to this path. With 4-16
// splits (and `cluster_merge`) the splits of a (token, kv head) run as one thread-block cluster and merge in its
// shared memory: the workspaces are then left untouched.
void attention_decode_mma(const AttentionDecodeParams& p, cudaStream_t stream);
// Block-table entries a CTA stages in smem (a split of 4096 keys at block size 16); longer splits read the
// table from global memory as they go.
constexpr int kAttentionMmaMaxTableEntries = 258;
// The same with an explicit per-warp cp.async ring depth (2, 3 or 4 chunks of 16 keys in flight per warp;
// attention_decode_mma uses kAttentionMmaDefaultStages): for the benchmark's sweep.
void attention_decode_mma_stages(const AttentionDecodeParams& p, int stages, cudaStream_t stream);
constexpr int kAttentionMmaDefaultStages = 3;

// Keys per split for attention_decode_mma: the largest power of two in [128, 4096] (and not beyond max_keys)
// whose grid of (token, kv head, split) CTAs still has >= num_sms CTAs. Fewer, longer CTAs win as long as the
// grid covers the GPU: each warp keeps its chunks in flight, and every extra split costs a partial write, a CTA
// start (positions -> table -> K/V dependent loads) and a longer merge. Measured (H200, `mxserve bench kernel
// attention-decode`, two runs): batch 1 at 8k keys 27.3 us with 64 keys per split, 9.4-10.8 with 512; batch 8
// at 8k keys 35.9-36.7 us with 2048 (256 CTAs) vs 39.4-51.5 with 4096 (128 CTAs); batch 8 at 1k keys 8.1-8.5
// with 256 vs 8.5-9.9 with 512. The floor of 128 (was 64) gives batch-1 steps 8 splits per full layer at 1k keys
// instead of 16 and one (no merge) per 128-key sliding window instead of 2: 2.019 -> 1.988 ms per 20b step,
// 2.822 -> 2.784 for 120b (H100, five interleaved runs each). max_keys: the most keys a token of the launch sees
// (window included).
inline int attention_decode_mma_keys_per_split(int n_tokens, int n_kv_heads, int max_keys, int num_sms) {
  const long long pairs = (long long)n_tokens * n_kv_heads;
  int kps = 128;
  while (kps < 4096 && kps < max_keys && pairs * ((max_keys + 2 * kps - 1) / (2 * kps)) >= num_sms) kps *= 2;
  return kps;
}

// The most splits a launch of n_tokens gets for any context <= max_len when its split count is
// next_pow2(ceil(keys / attention_decode_mma_keys_per_split(...))) (CudaRunner's graph buckets; the exact count
// of eager steps is never larger): sizes the partial workspace (attention_partial_floats). Sliding layers
// (keys = window <= max_len) are covered.
inline int attention_decode_mma_max_splits(int n_tokens, int n_kv_heads, int max_len, int num_sms) {
  int worst = 1;
  for (int keys = 1; keys <= max_len; ++keys) {  // <= 131072 cheap steps, once at start-up
    const int kps = attention_decode_mma_keys_per_split(n_tokens, n_kv_heads, keys, num_sms);
    int s = 1;
    while ((long long)s * kps < keys) s *= 2;
    worst = s > worst ? s : worst;
  }
  return worst;
}

// Workspace floats needed for n_tokens x n_heads x n_splits.
inline size_t attention_partial_floats(int n_tokens, int n_heads, int n_splits) {
  return size_t(n_tokens) * size_t(n_heads) * size_t(n_splits) * 66;
}

}  // namespace mxs::cuda
