// Paged KV cache of the CPU backend: a pool of physical blocks, each holding block_size positions of K and
// V (post-RoPE, bf16) for every layer and kv head. Sequences address it through block tables with the
// semantics of engine/model_runner.h; the pool itself knows nothing of sequences.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/bf16.h"

namespace mxs::cpu {

class PagedKvCache {
 public:
  // Storage: K and V each [num_layers][num_blocks][block_size][num_kv_heads][head_dim] bf16, so that one
  // layer's keys of one block are contiguous (the attention loop walks a layer at a time).
  PagedKvCache(int num_layers, int num_kv_heads, int head_dim, int block_size, int num_blocks);

  // Bytes of one block over all layers, K and V: 2 * layers * block_size * kv_heads * head_dim * 2.
  static size_t bytes_per_block(int num_layers, int num_kv_heads, int head_dim, int block_size);

  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  size_t bytes() const { return 2 * k_.size() * sizeof(bf16); }

  // [num_kv_heads, head_dim] of one position (block = physical id, slot = position % block_size).
  bf16* key(int layer, int block, int slot) { return k_.data() + offset(layer, block, slot); }
  bf16* value(int layer, int block, int slot) { return v_.data() + offset(layer, block, slot); }
  const bf16* key(int layer, int block, int slot) const { return k_.data() + offset(layer, block, slot); }
  const bf16* value(int layer, int block, int slot) const { return v_.data() + offset(layer, block, slot); }

 private:
  size_t offset(int layer, int block, int slot) const {
    return ((size_t(layer) * size_t(num_blocks_) + size_t(block)) * size_t(block_size_) + size_t(slot)) *
           size_t(position_stride_);
  }
  int block_size_, num_blocks_, position_stride_;  // stride = kv_heads * head_dim
  std::vector<bf16> k_, v_;
};

}  // namespace mxs::cpu
