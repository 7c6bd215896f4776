// BlockManager: allocation all-or-nothing, refcounts, prefix-cache hits/misses, LRU eviction order, and
// invariants after every operation (releasing a table's leading blocks, as the sliding-window group does,
// included).
#include <gtest/gtest.h>

#include <numeric>
#include <random>

#include "engine/block_manager.h"

namespace mxs {
namespace {

std::vector<int32_t> iota_tokens(int n, int32_t first = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

void check(const BlockManager& bm, std::vector<const BlockTable*> live) { bm.check_invariants(live); }

TEST(BlockManager, AllocateIsAllOrNothingAndFreeReturnsEverything) {
  BlockManager bm(/*num_blocks=*/8, /*block_size=*/4, /*prefix=*/false);
  BlockTable a, b;
  const auto ta = iota_tokens(20), tb = iota_tokens(20, 500);
  ASSERT_TRUE(bm.allocate(&a, {}, ta, 17));  // 5 blocks
  EXPECT_EQ(a.ids.size(), 5u);
  EXPECT_EQ(bm.num_free_blocks(), 3);
  EXPECT_FALSE(bm.allocate(&b, {}, tb, 13));  // needs 4 > 3: nothing taken
  EXPECT_TRUE(b.ids.empty());
  EXPECT_EQ(bm.num_free_blocks(), 3);
  ASSERT_TRUE(bm.allocate(&b, {}, tb, 12));
  EXPECT_EQ(bm.num_free_blocks(), 0);
  ASSERT_TRUE(bm.allocate(&a, {}, ta, 20));  // still 5 blocks: growing inside the last block is free
  check(bm, {&a, &b});
  bm.free(&a);
  bm.free(&b);
  EXPECT_EQ(bm.num_free_blocks(), 8);
  EXPECT_EQ(bm.usage(), 0.0);
  check(bm, {});
}

TEST(BlockManager, PrefixHitSharesFullBlocksOnly) {
  BlockManager bm(16, 4, true);
  const auto tokens = iota_tokens(10);  // 2 full blocks + 2 tokens
  BlockTable a;
  ASSERT_TRUE(bm.allocate(&a, {}, tokens, 10));
  bm.cache_full_blocks(&a, tokens, 10);
  EXPECT_EQ(a.num_hashed(), 2);

  // Same prompt: both full blocks hit while `a` still holds them (refcount 2).
  const auto hits = bm.find_cached_prefix(tokens, 9);
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0], a.ids[0]);
  EXPECT_EQ(hits[1], a.ids[1]);
  BlockTable b;
  ASSERT_TRUE(bm.allocate(&b, hits, tokens, 10));
  EXPECT_EQ(b.ids[0], a.ids[0]);
  EXPECT_NE(b.ids[2], a.ids[2]);  // the partial block is never shared
  check(bm, {&a, &b});
  EXPECT_EQ(bm.prefix_stats().hit_tokens, 8u + 0u);

  // A different token in block 1 stops the chain after block 0; in block 0 nothing hits.
  auto other = tokens;
  other[5] = 7;
  EXPECT_EQ(bm.find_cached_prefix(other, 9).size(), 1u);
  other[0] = 7;
  EXPECT_TRUE(bm.find_cached_prefix(other, 9).empty());
  // max_tokens caps the hit to whole blocks below it.
  EXPECT_EQ(bm.find_cached_prefix(tokens, 7).size(), 1u);

  bm.free(&a);
  bm.free(&b);
  check(bm, {});
  EXPECT_EQ(bm.num_free_blocks(), 16);
  // Freed but cached: still found.
  EXPECT_EQ(bm.find_cached_prefix(tokens, 9).size(), 2u);
}

TEST(BlockManager, EvictsLeastRecentlyFreedTailFirst) {
  BlockManager bm(4, 2, true);
  const auto t = iota_tokens(8);
  BlockTable a;
  ASSERT_TRUE(bm.allocate(&a, {}, t, 8));  // the whole pool
  bm.cache_full_blocks(&a, t, 8);
  bm.free(&a);  // all 4 blocks evictable, tail first in LRU order
  check(bm, {});
  EXPECT_EQ(bm.find_cached_prefix(t, 8).size(), 4u);

  // One fresh block: evicts block 3 (the tail), so the cached prefix shrinks to 3 blocks.
  BlockTable b;
  const auto u = iota_tokens(2, 900);
  ASSERT_TRUE(bm.allocate(&b, {}, u, 2));
  check(bm, {&b});
  EXPECT_EQ(bm.find_cached_prefix(t, 8).size(), 3u);

  // Reviving the 3 cached blocks leaves no room for more than them.
  const auto hits = bm.find_cached_prefix(t, 8);
  BlockTable c;
  EXPECT_FALSE(bm.allocate(&c, hits, t, 8));  // needs 3 cached + 1 fresh, only the 3 are there
  ASSERT_TRUE(bm.allocate(&c, hits, t, 6));
  EXPECT_EQ(bm.num_free_blocks(), 0);
  check(bm, {&b, &c});
  bm.free(&b);
  bm.free(&c);
  check(bm, {});
}

TEST(BlockManager, DuplicateBlocksComputedTwiceStayConsistent) {
  // Two sequences with the same prompt computed side by side: only one block owns each hash.
  BlockManager bm(8, 2, true);
  const auto t = iota_tokens(5);
  BlockTable a, b;
  ASSERT_TRUE(bm.allocate(&a, {}, t, 5));
  ASSERT_TRUE(bm.allocate(&b, {}, t, 5));
  bm.cache_full_blocks(&a, t, 5);
  bm.cache_full_blocks(&b, t, 5);
  EXPECT_EQ(b.num_hashed(), 2);
  check(bm, {&a, &b});
  bm.free(&a);
  bm.free(&b);
  check(bm, {});
  EXPECT_EQ(bm.num_free_blocks(), 8);
}

TEST(BlockManager, ReleasedBlocksStayCachedAndServeWindowHits) {
  BlockManager bm(8, 4, true);
  const std::vector<int32_t> t = iota_tokens(16, 0);
  BlockTable a;
  ASSERT_TRUE(bm.allocate(&a, {}, t, 16));
  bm.cache_full_blocks(&a, t, 16);
  const std::vector<int32_t> ids = a.ids;
  bm.release_below(&a, 2);  // blocks 0, 1 leave the table but keep their hash (evictable)
  EXPECT_EQ(a.ids, (std::vector<int32_t>{kNoBlock, kNoBlock, ids[2], ids[3]}));
  EXPECT_EQ(a.num_released, 2);
  EXPECT_EQ(a.num_live(), 2);
  EXPECT_EQ(bm.num_used_blocks(), 2);
  check(bm, {&a});
  EXPECT_EQ(bm.lookup_blocks(t, 4), ids);
  EXPECT_EQ(bm.find_cached_prefix(t, 16), ids);

  // A window-style hit: nothing for block 0, cached blocks 1 (revived from the LRU) and 2 (shared with a).
  BlockTable b;
  const std::vector<int32_t> hit = {kNoBlock, ids[1], ids[2]};
  ASSERT_TRUE(bm.allocate(&b, hit, t, 14));
  EXPECT_EQ(b.ids, (std::vector<int32_t>{kNoBlock, ids[1], ids[2], b.ids[3]}));
  EXPECT_EQ(b.num_released, 1);
  EXPECT_EQ(bm.num_used_blocks(), 4);
  check(bm, {&a, &b});
  BlockTable bad;
  const std::vector<int32_t> hole = {ids[0], kNoBlock};
  EXPECT_THROW(bm.allocate(&bad, hole, t, 8), std::logic_error);

  bm.free(&a);
  bm.free(&b);
  check(bm, {});
  EXPECT_EQ(bm.num_free_blocks(), 8);
  EXPECT_EQ(bm.find_cached_prefix(t, 16), ids);  // everything still cached
  // An unrelated table takes the whole pool: every cached block is evicted.
  BlockTable c;
  const std::vector<int32_t> u = iota_tokens(32, 100);
  ASSERT_TRUE(bm.allocate(&c, {}, u, 32));
  EXPECT_EQ(bm.lookup_blocks(t, 4), std::vector<int32_t>(4, kNoBlock));
  bm.free(&c);
}

TEST(BlockManager, RandomizedOperationsKeepInvariants) {
  std::mt19937 rng(7);
  BlockManager bm(32, 4, true);
  std::vector<std::pair<BlockTable, std::vector<int32_t>>> live;
  for (int it = 0; it < 2000; ++it) {
    const int op = int(rng() % 4);
    if (op == 0 || live.empty()) {
      // New sequence: tokens from a few shared prefixes so that hits happen.
      std::vector<int32_t> t = iota_tokens(4 * int(rng() % 3), int32_t(rng() % 2) * 1000);
      const int extra = 1 + int(rng() % 9);
      for (int i = 0; i < extra; ++i) t.push_back(int32_t(rng() % 5));
      BlockTable table;
      const auto hits = bm.find_cached_prefix(t, int(t.size()) - 1);
      const int n = int(hits.size()) * 4 + 1 + int(rng() % (t.size() - hits.size() * 4));
      if (bm.allocate(&table, hits, t, n)) {
        bm.cache_full_blocks(&table, t, n);
        live.emplace_back(std::move(table), std::move(t));
      }
    } else if (op == 1) {
      auto& [table, t] = live[rng() % live.size()];
      t.push_back(int32_t(rng() % 5));
      if (bm.allocate(&table, {}, t, int(t.size()))) bm.cache_full_blocks(&table, t, int(t.size()));
    } else if (op == 2) {  // sliding-group style: drop a leading run of the table's blocks
      auto& table = live[rng() % live.size()].first;
      bm.release_below(&table, int(rng() % (table.ids.size() + 1)));
    } else {
      const size_t i = rng() % live.size();
      bm.free(&live[i].first);
      live.erase(live.begin() + long(i));
    }
    std::vector<const BlockTable*> tables;
    for (auto& l : live) tables.push_back(&l.first);
    ASSERT_NO_THROW(bm.check_invariants(tables)) << "after operation " << it;
  }
  for (auto& l : live) bm.free(&l.first);
  check(bm, {});
  EXPECT_EQ(bm.num_free_blocks(), 32);
  EXPECT_GT(bm.prefix_stats().hit_tokens, 0u);
}

}  // namespace
}  // namespace mxs
