// Fused q/k/v projection + YaRN RoPE + paged KV-cache write (one launch per layer).
//   qkv = bf(xn . Wqkv^T + b)  (rows: q heads, then k heads, then v heads; head_dim 64);
//   q, k rotated (NeoX half-split, cos/sin = bf(cos(pos * inv_freq) * mscale)), q -> q_out, k/v -> cache.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

// Paged KV pool of one layer: [num_blocks][2 (K, V)][n_kv_heads][block_size][head_dim] bf16.
struct KvLayerView {
  void* base = nullptr;  // this layer's [num_blocks, 2, n_kv, block_size, head_dim]
  int block_size = 16;
  int n_kv_heads = 8;
};

// Per-token step metadata shared by qkv_rope and attention_decode (device pointers).
struct TokenMeta {
  const int32_t* positions = nullptr;     // [n_tokens]
  const int32_t* token_seq = nullptr;     // [n_tokens] index of the token's sequence in the step
  const int32_t* block_tables = nullptr;  // [n_seqs][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
};

struct QkvRopeParams {
  const void* xn = nullptr;       // [n_tokens, hidden] bf16 (normed input)
  const void* w_qkv = nullptr;    // [(n_heads + 2 n_kv) * 64, hidden] bf16
  const void* b_qkv = nullptr;    // [(n_heads + 2 n_kv) * 64] bf16
  const float* inv_freq = nullptr;  // [32] fp32 (YaRN)
  float mscale = 1.0f;
  void* q_out = nullptr;          // [n_tokens, n_heads * 64] bf16, rotated
  KvLayerView kv;
  TokenMeta meta;
  int n_tokens = 0, hidden = 0, n_heads = 0, n_kv_heads = 0;
};

void qkv_rope(const QkvRopeParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
