// Paged KV pool allocation (once, at runner construction; nothing allocates per step).
#include "cpu/kv_cache.h"

#include "common/error.h"

namespace mxs::cpu {

PagedKvCache::PagedKvCache(int num_layers, int num_kv_heads, int head_dim, int block_size, int num_blocks)
    : block_size_(block_size),
      num_blocks_(num_blocks),
      position_stride_(num_kv_heads * head_dim) {
  MXS_CHECK(block_size > 0, strfmt("KV cache: block_size = %d, must be > 0", block_size));
  MXS_CHECK(num_blocks > 0, strfmt("KV cache: num_blocks = %d, must be > 0 (raise the KV budget)", num_blocks));
  const size_t n = size_t(num_layers) * size_t(num_blocks) * size_t(block_size) * size_t(position_stride_);
  k_.assign(n, bf16{0});
  v_.assign(n, bf16{0});
}

size_t PagedKvCache::bytes_per_block(int num_layers, int num_kv_heads, int head_dim, int block_size) {
  return 2 * size_t(num_layers) * size_t(block_size) * size_t(num_kv_heads) * size_t(head_dim) * sizeof(bf16);
}

}  // namespace mxs::cpu
