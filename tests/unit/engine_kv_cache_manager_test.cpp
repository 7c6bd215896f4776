// KvCacheManager: the two KV groups behind one allocator. Sliding blocks below the window are released
// after each step (and stay cached), allocation is all or nothing over both groups, a chunk is capped so
// that one sequence fits the sliding pool, a prefix hit is shortened to what the sliding group can serve
// (its window blocks), and one group behaves exactly like a single BlockManager.
#include <gtest/gtest.h>

#include <climits>
#include <numeric>
#include <vector>

#include "common/error.h"
#include "engine/kv_cache_manager.h"

namespace mxs {
namespace {

std::vector<int32_t> tokens_from(int32_t first, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// A sequence that computed its first `computed` tokens (as the scheduler leaves it after a step).
void run_step(KvCacheManager& kv, Sequence& s, int computed) {
  ASSERT_TRUE(kv.allocate(&s, nullptr, computed));
  s.num_computed_tokens = computed;
  kv.on_computed(&s);
}

void check(const KvCacheManager& kv, std::vector<const Sequence*> live) { kv.check_invariants(live); }

TEST(KvCacheManager, SlidingBlocksBelowTheWindowAreReleasedAfterEachStep) {
  // 4-token blocks, window 8: after c computed tokens the next token (position c) reads (c - 8, c], so
  // blocks below (c - 7) / 4 are released.
  KvCacheManager kv({4, 64, 12}, 8, /*prefix=*/true);
  ASSERT_TRUE(kv.has_sliding_group());
  Sequence s;
  s.id = 1;
  s.tokens = tokens_from(100, 60);
  for (int c : {5, 17, 18, 30, 41, 60}) {
    SCOPED_TRACE("computed " + std::to_string(c));
    run_step(kv, s, c);
    const int first = c >= 8 ? (c - 7) / 4 : 0;
    EXPECT_EQ(s.sliding_blocks.num_released, first);
    EXPECT_EQ(int(s.sliding_blocks.ids.size()), (c + 3) / 4);
    for (int i = 0; i < int(s.sliding_blocks.ids.size()); ++i)
      EXPECT_EQ(s.sliding_blocks.ids[size_t(i)] == kNoBlock, i < first) << "entry " << i;
    EXPECT_LE(s.sliding_blocks.num_live(), (8 + 3) / 4 + 1);
    EXPECT_EQ(s.blocks.num_live(), (c + 3) / 4);  // the full group keeps everything
    EXPECT_EQ(kv.sliding()->num_used_blocks(), s.sliding_blocks.num_live());
    check(kv, {&s});
  }
  kv.free(&s);
  EXPECT_EQ(kv.full().num_used_blocks(), 0);
  EXPECT_EQ(kv.sliding()->num_used_blocks(), 0);
  check(kv, {});
}

TEST(KvCacheManager, AllocationIsAllOrNothingOverBothGroups) {
  // The sliding pool (4 blocks, the minimum for window 8) runs out before the full pool (64).
  KvCacheManager kv({4, 64, 4}, 8, false);
  Sequence a, b;
  a.id = 1, b.id = 2;
  a.tokens = tokens_from(1, 40);
  b.tokens = tokens_from(500, 40);
  run_step(kv, a, 12);  // sliding blocks 1, 2 live (block 0 released)
  EXPECT_EQ(a.sliding_blocks.num_live(), 2);
  ASSERT_TRUE(kv.allocate(&b, nullptr, 8));  // 2 more: the sliding pool is full
  const int full_used = kv.full().num_used_blocks();
  EXPECT_FALSE(kv.allocate(&a, nullptr, 16));  // a's block 3 has no sliding block
  EXPECT_EQ(kv.full().num_used_blocks(), full_used) << "the full group must not keep a partial allocation";
  EXPECT_EQ(a.blocks.ids.size(), 3u);
  kv.free(&b);
  EXPECT_TRUE(kv.allocate(&a, nullptr, 16));
  kv.free(&a);
  EXPECT_EQ(kv.full().num_used_blocks() + kv.sliding()->num_used_blocks(), 0);
}

TEST(KvCacheManager, ChunksAreCappedToFitTheSlidingPool) {
  KvCacheManager one({16, 64, 0}, 128, true);
  EXPECT_EQ(one.max_new_tokens(0), INT_MAX);
  // Window 128, 16-token blocks: the minimum pool is 9 blocks; a sequence at c may span blocks
  // [first_sliding_block(c), (c + n - 1) / 16].
  EXPECT_THROW(KvCacheManager({16, 64, 8}, 128, true), Error);
  KvCacheManager kv({16, 128, 9}, 128, true);
  EXPECT_EQ(kv.max_new_tokens(0), 144);             // blocks 0..8
  EXPECT_EQ(kv.max_new_tokens(127), 144 - 127);     // still block 0 onwards
  EXPECT_EQ(kv.max_new_tokens(128), 144 - 128);     // (128 - 127) / 16 = 0 -> blocks 0..8
  EXPECT_EQ(kv.max_new_tokens(143), 160 - 143);     // first block (143 - 127) / 16 = 1 -> blocks 1..9
  EXPECT_EQ(kv.max_new_tokens(1000), (9 + (1000 - 127) / 16) * 16 - 1000);
  for (int c = 0; c < 2000; ++c) {
    const int n = kv.max_new_tokens(c);
    ASSERT_GE(n, 1) << c;
    const int span = (c + n - 1) / 16 - kv.first_sliding_block(c) + 1;
    ASSERT_EQ(span, 9) << c;  // exactly the pool: one more token would need a tenth block
  }
  // A sequence alone in the pool always gets its capped chunk.
  Sequence s;
  s.id = 1;
  s.tokens = tokens_from(3, 1200);
  int c = 0;
  while (c < 1200) {
    const int n = std::min(1200 - c, kv.max_new_tokens(c));
    run_step(kv, s, c + n);
    c += n;
    check(kv, {&s});
  }
  kv.free(&s);
}

TEST(KvCacheManager, PrefixHitIsShortenedToWhatTheSlidingGroupServes) {
  // 4-token blocks, window 8, full pool 64, sliding pool 12.
  KvCacheManager kv({4, 64, 12}, 8, true);
  const std::vector<int32_t> a_tokens = tokens_from(1000, 40);  // 10 blocks

  // A computes 40 tokens and finishes: full blocks 0..9 and sliding blocks 0..9 are all cached (sliding
  // 0..7 released after the step, 8, 9 at the end). The pools are fresh, so A's logical block i is
  // physical block i in both. Sliding LRU: [0..7, 9, 8]; free list: 10, 11.
  Sequence a;
  a.id = 1;
  a.tokens = a_tokens;
  run_step(kv, a, 40);
  kv.free(&a);

  // The whole of A is served by both groups (the last computed token, 39, is never cached).
  PrefixHit hit = kv.find_cached_prefix(a_tokens, 39);
  EXPECT_EQ(hit.num_tokens, 36);
  ASSERT_EQ(hit.sliding.size(), 9u);
  // Position 36 reads (28, 36]: sliding blocks 7 and 8; blocks 0..6 are not taken.
  for (int i = 0; i < 9; ++i) EXPECT_EQ(hit.sliding[size_t(i)] == kNoBlock, i < 7) << i;

  // E shares A's first 16 tokens: its hit revives A's sliding blocks 2, 3, which go back to the LRU (as
  // the most recent) when E is done; E's own blocks 4, 5 are physical 10, 11. Sliding LRU:
  // [0, 1, 4, 5, 6, 7, 9, 8, 2, 3, 11, 10].
  Sequence e;
  e.id = 2;
  e.tokens = tokens_from(1000, 16);
  for (int32_t t : tokens_from(7000, 8)) e.tokens.push_back(t);
  hit = kv.find_cached_prefix(e.tokens, 23);
  ASSERT_EQ(hit.num_tokens, 16);
  ASSERT_TRUE(kv.allocate(&e, &hit, 24));
  EXPECT_EQ(e.sliding_blocks.num_released, 2);
  e.num_computed_tokens = 24;
  kv.on_computed(&e);
  check(kv, {&e});
  kv.free(&e);

  // B (unrelated) takes 8 sliding blocks: the 8 least recently used, A's 0, 1, 4..9.
  Sequence b;
  b.id = 3;
  b.tokens = tokens_from(9000, 32);
  ASSERT_TRUE(kv.allocate(&b, nullptr, 32));

  // C repeats A and goes on. The full group still holds all of A (10 blocks), but the sliding group only
  // A's blocks 2, 3: the longest usable hit is 16 tokens (position 16 reads (8, 16] = blocks 2, 3).
  Sequence c;
  c.id = 4;
  c.tokens = a_tokens;
  for (int32_t t : tokens_from(5000, 4)) c.tokens.push_back(t);
  EXPECT_EQ(kv.full().find_cached_prefix(c.tokens, 43).size(), 10u);
  hit = kv.find_cached_prefix(c.tokens, 43);
  EXPECT_EQ(hit.num_tokens, 16);
  ASSERT_EQ(hit.full.size(), 4u);
  EXPECT_EQ(hit.sliding, (std::vector<int32_t>{kNoBlock, kNoBlock, 2, 3}));
  ASSERT_TRUE(kv.allocate(&c, &hit, 24));
  c.num_computed_tokens = 16;  // as admitted: the hit counts as computed
  check(kv, {&b, &c});
  EXPECT_EQ(kv.prefix_stats().hit_tokens, 16u + 16u + 0u);  // E's hit + C's hit (A and B missed)
  kv.free(&b);
  kv.free(&c);
  check(kv, {});

  // Without sliding blocks for any window the hit is dropped entirely (everything is recomputed): F is
  // cached in both groups, then G (unrelated) takes the whole sliding pool, evicting all of F's sliding
  // blocks, while the full group (64 blocks) still holds F.
  Sequence f, g;
  f.id = 5, g.id = 6;
  f.tokens = tokens_from(20000, 40);
  g.tokens = tokens_from(30000, 48);
  run_step(kv, f, 40);
  kv.free(&f);
  EXPECT_EQ(kv.find_cached_prefix(f.tokens, 39).num_tokens, 36);
  ASSERT_TRUE(kv.allocate(&g, nullptr, 48));
  EXPECT_EQ(kv.sliding()->num_free_blocks(), 0);
  EXPECT_EQ(kv.full().find_cached_prefix(f.tokens, 39).size(), 9u);
  hit = kv.find_cached_prefix(f.tokens, 39);
  EXPECT_EQ(hit.num_tokens, 0);
  EXPECT_TRUE(hit.full.empty());
  EXPECT_TRUE(hit.sliding.empty());
  kv.free(&g);
  check(kv, {});
}

TEST(KvCacheManager, OneGroupIsASingleBlockManager) {
  KvCacheManager kv({4, 16, 0}, 8, true);
  EXPECT_FALSE(kv.has_sliding_group());
  EXPECT_EQ(kv.sliding(), nullptr);
  Sequence a;
  a.id = 1;
  a.tokens = tokens_from(1, 30);
  run_step(kv, a, 30);
  EXPECT_TRUE(a.sliding_blocks.ids.empty());
  EXPECT_EQ(a.blocks.num_live(), 8);
  kv.free(&a);
  const PrefixHit hit = kv.find_cached_prefix(a.tokens, 29);
  EXPECT_EQ(hit.num_tokens, 28);
  EXPECT_TRUE(hit.sliding.empty());
  EXPECT_EQ(hit.full, kv.full().find_cached_prefix(a.tokens, 29));
}

}  // namespace
}  // namespace mxs
