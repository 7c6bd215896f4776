// Flash-attention-style paged attention for prefill chunks (and any query token): tensor cores (wgmma for
// the default tiles, attention_prefill_wgmma.h; otherwise mma.sync m16n8k16 bf16, fp32 accumulate), online
// fp32 softmax started at the per-head sink logit, causal mask, optional sliding window, GQA 8 q heads per kv
// head packed into the MMA M dimension so every K/V tile is read once per (query tile, kv head). Same inputs as
// attention_decode (attention_decode.h), no workspace.
// Math (gpt-oss-spec.md §3.4): S = q.k * 0.125 (fp32), softmax over keys plus the sink column (denominator
// only), out = bf(P.V) with P rounded to bf16 as the MMA operand. See docs/KERNELS-attention-prefill.md.
#pragma once
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/kernels/qkv_rope.h"

namespace mxs::cuda {

// One CTA's queries: tokens [first_token, first_token + n_tokens) of the step, all of ONE sequence (the
// sequence is token_seq[first_token]), positions ascending (consecutive in practice), 1 <= n_tokens <= tile_q.
struct PrefillTile {
  int32_t first_token = 0;
  int32_t n_tokens = 0;
};

// Queries per tile: 16 (4 warps, 128 (query, head) rows, 2 CTAs per SM) or 32 (8 warps, 256 rows, 1 CTA per
// SM). Measured (H200, docs/KERNELS-attention-prefill.md): 32 is 5% faster on full layers once the launch has
// >= 2048 prefill tokens; 16 is faster on sliding layers and when there are few tiles (short chunks).
constexpr int kPrefillTileQ16 = 16;
constexpr int kPrefillTileQ32 = 32;
// Default key tile / softmax sub-tile (key_tile = sub_tile = 0): full layers 128 / 64, sliding layers 64 / 64.
constexpr int kPrefillDefaultKeyTileFull = 128;
constexpr int kPrefillDefaultKeyTileSliding = 64;
constexpr int kPrefillDefaultSubTile = 64;

struct AttentionPrefillParams {
  const void* q = nullptr;      // [n_tokens, n_heads * 64] bf16 (post-RoPE)
  KvLayerView kv;               // paged cache, already holding this step's keys/values (qkv_rope ran first)
  TokenMeta meta;               // positions / token_seq / block_tables, as for attention_decode
  const void* sinks = nullptr;  // [n_heads] bf16
  void* out = nullptr;          // [n_tokens, n_heads * 64] bf16; only tokens covered by a tile are written
  const PrefillTile* tiles = nullptr;  // device [n_tiles], built by make_prefill_tiles (host) and uploaded
  int n_tiles = 0;
  int tile_q = kPrefillTileQ16;  // the tile_q the tiles were built with (16 or 32)
  int n_tokens = 0, n_heads = 0, n_kv_heads = 0;
  int window = 0;               // keys seen on a sliding layer (128): key > pos - window; 0 = full causal
  int key_tile = 0;             // keys per pipeline stage: 64 or 128; 0 = default (full 128, sliding 64)
  int sub_tile = 0;             // keys per softmax step: 32 or 64 (<= key_tile); 0 = default (64)
  // Kernel: kAuto = wgmma (attention_prefill_wgmma.h) with the default key / sub tiles, else mma.sync; kMma /
  // kWgmma force one (key_tile / sub_tile do not apply to the wgmma kernel: 64-key tiles).
  enum Impl { kAuto = 0, kMma = 1, kWgmma = 2 };
  int impl = kAuto;
};

// Grid (n_kv_heads, n_tiles), tiles launched last-first (the longest causal rows start first); launched with
// programmatic dependent launch (pdl.cuh: it waits for qkv_rope before reading q / the cache). No workspace.
// Requirements: n_heads / n_kv_heads == 8, head_dim 64, tile_q 16 or 32, block_size a power of two.
void attention_prefill(const AttentionPrefillParams& p, cudaStream_t stream);

// Suggested tile_q for one layer kind of a step with `n_prefill_tokens` tokens in its tiles. wgmma kernel, H100
// (cuda_attention_prefill_test BenchPrompt, f42c3a1): full layers at 2k / 8k prompts 0.116 / 1.566 ms at 16,
// 0.115 / 1.554 at 32, a 2k chunk at 32k context 3.044 / 2.948; sliding layers and short chunks are faster at 16
// (8k sliding 0.139 vs 0.166 ms; 64 queries at 8k 0.148 vs 0.211).
inline int prefill_tile_q(int n_prefill_tokens, int window) {
  return window == 0 && n_prefill_tokens >= 2048 ? kPrefillTileQ32 : kPrefillTileQ16;
}

// Host: cuts each sequence's token range [token_offset, token_offset + num_tokens) of the step into tiles of
// at most tile_q tokens (ascending). Decode tokens (num_tokens = 1) become one-token tiles.
inline std::vector<PrefillTile> make_prefill_tiles(const std::vector<int>& seq_token_offset,
                                                   const std::vector<int>& seq_num_tokens, int tile_q) {
  std::vector<PrefillTile> tiles;
  for (size_t s = 0; s < seq_token_offset.size(); ++s)
    for (int i = 0; i < seq_num_tokens[s]; i += tile_q) {
      PrefillTile t;
      t.first_token = seq_token_offset[s] + i;
      t.n_tokens = seq_num_tokens[s] - i < tile_q ? seq_num_tokens[s] - i : tile_q;
      tiles.push_back(t);
    }
  return tiles;
}

// Tiles needed for a step of n_tokens over n_seqs sequences (upper bound, for sizing the device tile buffer).
inline int max_prefill_tiles(int n_tokens, int n_seqs, int tile_q) { return n_tokens / tile_q + n_seqs; }

}  // namespace mxs::cuda
