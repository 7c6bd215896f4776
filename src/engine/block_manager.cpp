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
  std::vector<int32_t> hits = lookup(tokens, std::min(max_tokens, int(tokens.size())) / block_size_, true);
  hits.erase(std::find(hits.begin(), hits.end(), kNoBlock), hits.end());  // the leading run of hits
  return hits;
}

std::vector<int32_t> BlockManager::lookup_blocks(std::span<const int32_t> tokens, int num_blocks) const {
  return lookup(tokens, num_blocks, false);
}

std::vector<int32_t> BlockManager::lookup(std::span<const int32_t> tokens, int num_blocks, bool stop_at_miss) const {
  std::vector<int32_t> ids;
  if (!prefix_caching_) return ids;
  num_blocks = std::min(num_blocks, int(tokens.size()) / block_size_);
  ids.assign(size_t(std::max(0, num_blocks)), kNoBlock);
  uint64_t parent = 0;
  for (int i = 0; i < num_blocks; ++i) {
    const auto block_tokens = tokens.subspan(size_t(i) * size_t(block_size_), size_t(block_size_));
    const uint64_t h = chain_hash(parent, block_tokens);
    const auto it = cached_.find(h);
    if (it != cached_.end()) {
      const Block& b = blocks_[size_t(it->second)];
      if (b.parent_hash == parent && std::equal(b.tokens.begin(), b.tokens.end(), block_tokens.begin()))
        ids[size_t(i)] = it->second;
    }
    if (stop_at_miss && ids[size_t(i)] == kNoBlock) break;
    parent = h;
  }
  return ids;
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

int BlockManager::fresh_needed(const BlockTable& table, std::span<const int32_t> cached, int num_tokens) const {
  const int have = int(table.ids.size() + cached.size());
  return std::max(0, blocks_for_tokens(num_tokens) - have);
}

int BlockManager::revived_by(std::span<const int32_t> cached) const {
  int revived = 0;
  for (int32_t id : cached) revived += id != kNoBlock && blocks_[size_t(id)].ref_count == 0;
  return revived;
}

bool BlockManager::can_allocate(const BlockTable& table, std::span<const int32_t> cached, int num_tokens) const {
  // Cached blocks that sit on the LRU list are counted as free but stop being so once acquired.
  return fresh_needed(table, cached, num_tokens) <= num_free_blocks() - revived_by(cached);
}

bool BlockManager::allocate(BlockTable* table, std::span<const int32_t> cached, std::span<const int32_t> tokens,
                            int num_tokens) {
  if (!cached.empty() && !table->ids.empty()) invariant_failed("cached prefix offered to a non-empty table");
  // Check the offered prefix before changing anything: kNoBlock entries only leading, and every cached
  // block registered under the chain hash of its block of `tokens`.
  std::vector<uint64_t> hashes(cached.size());
  uint64_t parent = 0;
  bool seen_cached = false;
  for (size_t i = 0; i < cached.size(); ++i) {
    hashes[i] = parent = chain_hash(parent, tokens.subspan(i * size_t(block_size_), size_t(block_size_)));
    if (cached[i] == kNoBlock) {
      if (seen_cached) invariant_failed("kNoBlock after a cached block in a prefix hit");
      continue;
    }
    seen_cached = true;
    const Block& b = blocks_[size_t(cached[i])];
    if (!b.hashed || b.hash != hashes[i])
      invariant_failed(strfmt("cached block %d does not hold this prefix", cached[i]));
  }
  if (!can_allocate(*table, cached, num_tokens)) return false;
  const int fresh = fresh_needed(*table, cached, num_tokens);

  const bool first_admission = table->ids.empty();
  for (size_t i = 0; i < cached.size(); ++i) {
    if (cached[i] == kNoBlock) {
      ++table->num_released;
    } else {
      acquire(cached[i]);
    }
    table->ids.push_back(cached[i]);
    table->hashes.push_back(hashes[i]);
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
    if (table->ids[size_t(i)] == kNoBlock) continue;  // released sliding block: nothing to register
    Block& b = blocks_[size_t(table->ids[size_t(i)])];
    if (b.hashed || cached_.count(h)) continue;  // already registered, or an identical block owns the hash
    b.hashed = true;
    b.hash = h;
    b.parent_hash = parent;
    b.tokens.assign(block_tokens.begin(), block_tokens.end());
    cached_.emplace(h, table->ids[size_t(i)]);
  }
}

void BlockManager::drop(int32_t id) {
  Block& b = blocks_[size_t(id)];
  if (b.ref_count <= 0) invariant_failed(strfmt("double free of block %d", id));
  if (--b.ref_count > 0) return;
  if (b.hashed) {
    b.lru_pos = lru_.insert(lru_.end(), id);
  } else {
    free_.push_back(id);
  }
}

void BlockManager::free(BlockTable* table) {
  for (auto it = table->ids.rbegin(); it != table->ids.rend(); ++it)
    if (*it != kNoBlock) drop(*it);
  table->ids.clear();
  table->hashes.clear();
  table->num_released = 0;
}

void BlockManager::release_below(BlockTable* table, int first_kept) {
  first_kept = std::min(first_kept, int(table->ids.size()));
  for (int i = table->num_released; i < first_kept; ++i) {
    drop(table->ids[size_t(i)]);
    table->ids[size_t(i)] = kNoBlock;
  }
  table->num_released = std::max(table->num_released, first_kept);
}

void BlockManager::check_invariants(std::span<const BlockTable* const> live) const {
  std::vector<int> refs(size_t(num_blocks_), 0);
  for (const BlockTable* t : live) {
    if (t->hashes.size() > t->ids.size()) invariant_failed("more hashes than blocks in a table");
    if (t->num_released < 0 || t->num_released > int(t->ids.size()))
      invariant_failed(strfmt("num_released %d of %zu blocks", t->num_released, t->ids.size()));
    for (size_t i = 0; i < t->ids.size(); ++i) {
      const int32_t id = t->ids[i];
      if ((id == kNoBlock) != (int(i) < t->num_released))
        invariant_failed(strfmt("table entry %zu = %d with %d released", i, id, t->num_released));
      if (id == kNoBlock) continue;
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
