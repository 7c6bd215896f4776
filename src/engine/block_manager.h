// Paged-KV block manager: a pool of fixed-size blocks with refcounts, a free list, and prefix caching of
// full blocks (hash chain over token ids) with LRU eviction of unreferenced cached blocks. Pure CPU policy.
//
// Block states (every block is in exactly one; check_invariants() verifies it):
//   in use     ref_count > 0 (held by one or more sequences; > 1 only for shared cached prefix blocks)
//   free       ref_count == 0, no hash: on free_ (reused first)
//   evictable  ref_count == 0, hashed: on lru_ (its KV is still valid; a prefix hit revives it; evicted
//              least recently freed first when the free list is empty)
// A full block's hash is h_i = H(h_{i-1}, its block_size token ids): equal hashes mean equal tokens at
// equal positions, hence equal KV (the cache also stores the tokens and parent hash and compares them, so
// a 64-bit collision cannot alias two different prefixes that differ in the block itself).
//
// Sliding-window layers: the engine runs one BlockManager per KV group (kv_cache_manager.h). In the
// sliding group a table's leading blocks, below the window, are released (release_below) and their entries
// become kNoBlock; such a table holds ids only for its last ceil(window / block_size) + 1 blocks. Released
// full blocks keep their hash, so they stay evictable and can serve a later prefix hit.
#pragma once
#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/model_runner.h"  // kNoBlock

namespace mxs {

// One sequence's blocks. ids[i] holds positions [i*block_size, (i+1)*block_size); ids[0, num_released)
// are kNoBlock (sliding group: released below the window, or never taken on a prefix hit), the rest valid.
struct BlockTable {
  std::vector<int32_t> ids;
  int num_released = 0;
  // Chain hash of each full block whose tokens are all computed ([num_hashed] <= ids.size()); kept even
  // when another block already owns the same hash (then this block is simply not registered).
  std::vector<uint64_t> hashes;
  int num_hashed() const { return int(hashes.size()); }
  int num_live() const { return int(ids.size()) - num_released; }  // blocks actually held
};

struct PrefixCacheStats {
  uint64_t query_tokens = 0;  // tokens looked up at admission (a preempted sequence's re-admission too)
  uint64_t hit_tokens = 0;    // of which found in the cache
  double hit_rate() const { return query_tokens ? double(hit_tokens) / double(query_tokens) : 0.0; }
};

class BlockManager {
 public:
  BlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int block_size() const { return block_size_; }
  int num_blocks() const { return num_blocks_; }
  int num_free_blocks() const { return int(free_.size() + lru_.size()); }  // free + evictable
  int num_used_blocks() const { return num_blocks_ - num_free_blocks(); }
  double usage() const { return num_blocks_ ? double(num_used_blocks()) / num_blocks_ : 0.0; }
  int blocks_for_tokens(int64_t num_tokens) const { return int((num_tokens + block_size_ - 1) / block_size_); }
  const PrefixCacheStats& prefix_stats() const { return stats_; }

  // The longest run of cached blocks that hold tokens[0, n*block_size), n*block_size <= max_tokens.
  // Takes no references (allocate() does); the result is valid until the next call that mutates.
  std::vector<int32_t> find_cached_prefix(std::span<const int32_t> tokens, int max_tokens) const;
  // Per full block i < num_blocks of `tokens`: the cached block holding it (same chain hash, same tokens,
  // same parent hash), else kNoBlock; unlike find_cached_prefix, a miss does not end the lookup. Empty
  // without prefix caching.
  std::vector<int32_t> lookup_blocks(std::span<const int32_t> tokens, int num_blocks) const;

  // Makes `table` cover num_tokens positions: first appends `cached` (from find_cached_prefix or
  // lookup_blocks, only on an empty table; leading kNoBlock entries are positions the group will not read,
  // any other entry a cached block; hashes are re-derived from `tokens`), then fresh blocks. All or
  // nothing: returns false and changes nothing when the pool cannot supply the fresh blocks.
  bool allocate(BlockTable* table, std::span<const int32_t> cached, std::span<const int32_t> tokens,
                int num_tokens);
  // Whether allocate() with these arguments would succeed (changes nothing).
  bool can_allocate(const BlockTable& table, std::span<const int32_t> cached, int num_tokens) const;

  // Sliding group: drops the references of the table's blocks [0, first_kept) and sets them to kNoBlock,
  // earliest first (so they are evicted before the later, still-shareable ones).
  void release_below(BlockTable* table, int first_kept);

  // Registers the blocks that became full: tokens[0, num_computed) have their KV written.
  void cache_full_blocks(BlockTable* table, std::span<const int32_t> tokens, int num_computed);

  // Drops the table's references, tail first, so that the tail of a freed sequence is evicted before
  // its (more shareable) head. Clears the table.
  void free(BlockTable* table);

  // Throws std::logic_error on any broken invariant. `live`: every table currently holding blocks; the
  // refcount of each block must equal the number of its occurrences in them; kNoBlock entries are exactly
  // ids[0, num_released).
  void check_invariants(std::span<const BlockTable* const> live) const;

 private:
  struct Block {
    int ref_count = 0;
    uint64_t hash = 0;   // valid when hashed
    bool hashed = false;  // registered in cached_ (owner of that hash)
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;  // [block_size] when hashed: exact match on lookup
    std::list<int32_t>::iterator lru_pos;  // valid when evictable
  };

  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> block_tokens);
  int32_t take_block();          // a free block, else evicts the least recently used cached one
  void acquire(int32_t id);      // ref++ (revives an evictable block)
  void unregister(Block& b);
  std::vector<int32_t> lookup(std::span<const int32_t> tokens, int num_blocks, bool stop_at_miss) const;
  void drop(int32_t id);         // ref--; at 0 the block goes to the LRU (hashed) or the free list
  int fresh_needed(const BlockTable& table, std::span<const int32_t> cached, int num_tokens) const;
  int revived_by(std::span<const int32_t> cached) const;  // cached blocks now evictable (counted as free)

  int num_blocks_;
  int block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;    // stack: most recently freed on top
  std::list<int32_t> lru_;       // front = least recently freed
  std::unordered_map<uint64_t, int32_t> cached_;  // hash -> block id
  PrefixCacheStats stats_;
};

}  // namespace mxs
