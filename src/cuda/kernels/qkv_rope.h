// Fused q/k/v projection + YaRN RoPE + paged KV-cache write (one launch per layer).
//   qkv = bf(xn . Wqkv^T + b)  (rows: q heads, then k heads, then v heads; head_dim 64);
//   q, k rotated (NeoX half-split, cos/sin = bf(cos(pos * inv_freq) * mscale)), q -> q_out, k/v -> cache.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/bf12_weights.h"

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
  Bf12Weights w_qkv_bf12;         // optional: the same weights bf12-packed, read instead at one token (hidden 2880)
  const void* b_qkv = nullptr;    // [(n_heads + 2 n_kv) * 64] bf16
  const float* inv_freq = nullptr;  // [32] fp32 (YaRN)
  float mscale = 1.0f;
  void* q_out = nullptr;          // [n_tokens, n_heads * 64] bf16, rotated
  KvLayerView kv;
  TokenMeta meta;
  int n_tokens = 0, hidden = 0, n_heads = 0, n_kv_heads = 0;
  // Optional (moe_yw != nullptr; 1-4 tokens, hidden 2880): the previous layer's MoE combine and this layer's
  // input RMSNorm run in the GEMV's prologue instead of from xn: every CTA computes its rows
  //   x = bf(moe_x_mid + sum_e yw) (ascending expert id, a bf16 rounding per add; moe_combine's arithmetic),
  //   xn = bf(norm_w * (x * rsqrt(mean(x^2) + eps)))
  // and CTA 0 stores x to x_out (must not alias moe_x_mid: other CTAs still read it). Saves the combine launch
  // and its last-CTA norm tail per layer at batch 1-4.
  const void* moe_x_mid = nullptr;      // [n_tokens, hidden] bf16: residual after attention
  const void* moe_yw = nullptr;         // [n_tokens * top_k, hidden] bf16: routed expert outputs (by pair id)
  const int32_t* moe_topk_idx = nullptr;  // [n_tokens, top_k]
  int moe_top_k = 0;
  const void* norm_w = nullptr;         // [hidden] bf16: this layer's input norm
  void* x_out = nullptr;                // [n_tokens, hidden] bf16
  float eps = 1e-5f;
  // Optional (embed != nullptr; the first layer at 1-2 tokens, hidden 2880; instead of moe_*): the same prologue
  // over the token embeddings, x = embed[embed_tokens[t]] (no experts), i.e. the embedding gather and the first
  // input norm without a launch of their own (embed_rmsnorm): CTA 0 stores x to x_out, xn stays in registers.
  const void* embed = nullptr;          // [vocab, hidden] bf16
  const int32_t* embed_tokens = nullptr;  // [n_tokens] token ids (step inputs: read before griddep_wait)
};

void qkv_rope(const QkvRopeParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
