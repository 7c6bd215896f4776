// Block manager: free list + LRU of evictable cached blocks + hash -> block map (see block_manager.h).
#include "engine/block_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/error.h"
#include "engine/sampling_params.h"  // splitmix64

namespace mxs {

namespace {

[[noreturn]] void invariant_failed(const std::string& what) {
  throw std::logic_error("block manager invariant: " + what);
}

}  // namespace

BlockManager::BlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : num_blocks_(num_blocks), block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  MXS_CHECK(num_blocks > 0 && block_size > 0,
            strfmt("KV pool: num_blocks = %d, block_size = %d: both must be > 0", num_blocks, block_size));
  blocks_.resize(size_t(num_blocks));
  free_.reserve(size_t(num_blocks));
  for (int32_t i = num_blocks - 1; i >= 0; --i) free_.push_back(i);  // block 0 on top
}

uint64_t BlockManager::chain_hash(uint64_t parent, std::span<const int32_t> block_tokens) {
  uint64_t h = splitmix64(parent ^ 0x6a09e667f3bcc909ull);
  for (int32_t t : block_tokens) h = splitmix64(h ^ uint64_t(uint32_t(t)));
  return h;
}

std::vector<int32_t> BlockManager::find_cached_prefix(std::span<const int32_t> tokens, int max_tokens) const {
  std::vector<int32_t> hits;
  if (!prefix_caching_) return hits;
  uint64_t parent = 0;
  for (int start = 0; start + block_size_ <= max_tokens && start + block_size_ <= int(tokens.size());
       start += block_size_) {
    const auto block_tokens = tokens.subspan(size_t(start), size_t(block_size_));
    const uint64_t h = chain_hash(parent, block_tokens);
    const auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const Block& b = blocks_[size_t(it->second)];
    if (b.parent_hash != parent || !std::equal(b.tokens.begin(), b.tokens.end(), block_tokens.begin())) break;
    hits.push_back(it->second);
    parent = h;
  }
  return hits;
}

void BlockManager::unregister(Block& b) {
  cached_.erase(b.hash);
  b.hashed = false;
  b.hash = 0;
  b.parent_hash = 0;
  b.tokens.clear();
}

int32_t BlockManager::take_block() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    if (lru_.empty()) invariant_failed("take_block with no free or evictable block");
    id = lru_.front();
    lru_.pop_front();
    unregister(blocks_[size_t(id)]);
  }
  Block& b = blocks_[size_t(id)];
  if (b.ref_count != 0) invariant_failed(strfmt("block %d taken with ref_count %d", id, b.ref_count));
  b.ref_count = 1;
  return id;
}

void BlockManager::acquire(int32_t id) {
  Block& b = blocks_[size_t(id)];
  if (b.ref_count == 0) {
    if (!b.hashed) invariant_failed(strfmt("prefix hit on unhashed free block %d", id));
    lru_.erase(b.lru_pos);
  }
  ++b.ref_count;
}

bool BlockManager::allocate(BlockTable* table, std::span<const int32_t> cached, std::span<const int32_t> tokens,
                            int num_tokens) {
  if (!cached.empty() && !table->ids.empty()) invariant_failed("cached prefix offered to a non-empty table");
  const int have = int(table->ids.size() + cached.size());
  const int fresh = std::max(0, blocks_for_tokens(num_tokens) - have);
  // Cached blocks that sit on the LRU list are counted as free but stop being so once acquired.
  int revived = 0;
  for (int32_t id : cached) revived += blocks_[size_t(id)].ref_count == 0;
  if (fresh > num_free_blocks() - revived) return false;

  const bool first_admission = table->ids.empty();
  for (int32_t id : cached) {
    acquire(id);
    table->ids.push_back(id);
    table->hashes.push_back(blocks_[size_t(id)].hash);
  }
  for (int i = 0; i < fresh; ++i) table->ids.push_back(take_block());
  if (first_admission && prefix_caching_) {
    stats_.query_tokens += tokens.size();
    stats_.hit_tokens += uint64_t(cached.size()) * uint64_t(block_size_);
  }
  return true;
}

void BlockManager::cache_full_blocks(BlockTable* table, std::span<const int32_t> tokens, int num_computed) {
  if (!prefix_caching_) return;
  const int num_full = std::min(num_computed / block_size_, int(table->ids.size()));
  for (int i = table->num_hashed(); i < num_full; ++i) {
    const uint64_t parent = i == 0 ? 0 : table->hashes[size_t(i - 1)];
    const auto block_tokens = tokens.subspan(size_t(i) * size_t(block_size_), size_t(block_size_));
    const uint64_t h = chain_hash(parent, block_tokens);
    table->hashes.push_back(h);
    Block& b = blocks_[size_t(table->ids[size_t(i)])];
    if (b.hashed || cached_.count(h)) continue;  // already registered, or an identical block owns the hash
    b.hashed = true;
    b.hash = h;
    b.parent_hash = parent;
    b.tokens.assign(block_tokens.begin(), block_tokens.end());
    cached_.emplace(h, table->ids[size_t(i)]);
  }
}

void BlockManager::free(BlockTable* table) {
  for (auto it = table->ids.rbegin(); it != table->ids.rend(); ++it) {
    Block& b = blocks_[size_t(*it)];
    if (b.ref_count <= 0) invariant_failed(strfmt("double free of block %d", *it));
    if (--b.ref_count > 0) continue;
    if (b.hashed) {
      b.lru_pos = lru_.insert(lru_.end(), *it);
    } else {
      free_.push_back(*it);
    }
  }
  table->ids.clear();
  table->hashes.clear();
}

void BlockManager::check_invariants(std::span<const BlockTable* const> live) const {
  std::vector<int> refs(size_t(num_blocks_), 0);
  for (const BlockTable* t : live) {
    if (t->hashes.size() > t->ids.size()) invariant_failed("more hashes than blocks in a table");
    for (int32_t id : t->ids) {
      if (id < 0 || id >= num_blocks_) invariant_failed(strfmt("block id %d out of [0, %d)", id, num_blocks_));
      ++refs[size_t(id)];
    }
  }
  std::vector<int> where(size_t(num_blocks_), 0);  // 1 = free list, 2 = LRU
  for (int32_t id : free_) {
    if (where[size_t(id)]) invariant_failed(strfmt("block %d listed twice", id));
    where[size_t(id)] = 1;
  }
  for (int32_t id : lru_) {
    if (where[size_t(id)]) invariant_failed(strfmt("block %d listed twice", id));
    where[size_t(id)] = 2;
  }
  size_t num_hashed = 0;
  for (int32_t id = 0; id < num_blocks_; ++id) {
    const Block& b = blocks_[size_t(id)];
    if (b.ref_count != refs[size_t(id)])
      invariant_failed(strfmt("block %d: ref_count %d but %d tables hold it", id, b.ref_count, refs[size_t(id)]));
    const int expected_where = b.ref_count > 0 ? 0 : (b.hashed ? 2 : 1);
    if (where[size_t(id)] != expected_where)
      invariant_failed(strfmt("block %d (ref %d, hashed %d) is in list %d, expected %d", id, b.ref_count,
                              int(b.hashed), where[size_t(id)], expected_where));
    if (b.hashed) {
      ++num_hashed;
      const auto it = cached_.find(b.hash);
      if (it == cached_.end() || it->second != id) invariant_failed(strfmt("hashed block %d not in the map", id));
      if (int(b.tokens.size()) != block_size_) invariant_failed(strfmt("hashed block %d has no tokens", id));
    }
  }
  if (num_hashed != cached_.size()) invariant_failed("hash map has entries for unhashed blocks");
}

}  // namespace mxs
