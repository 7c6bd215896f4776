// KvCacheManager: both KV groups behind one all-or-nothing allocator, sliding-window release and the
// two-group prefix hit (kv_cache_manager.h).
#include "engine/kv_cache_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/error.h"

namespace mxs {

namespace {

[[noreturn]] void invariant_failed(const std::string& what) {
  throw std::logic_error("kv cache invariant: " + what);
}

}  // namespace

KvCacheManager::KvCacheManager(const KvCacheLayout& layout, int sliding_window, bool enable_prefix_caching)
    : window_(sliding_window), full_(layout.num_blocks, layout.block_size, enable_prefix_caching) {
  MXS_CHECK(layout.num_sliding_blocks >= 0,
            strfmt("KV layout: num_sliding_blocks = %d, must be >= 0", layout.num_sliding_blocks));
  if (layout.num_sliding_blocks == 0) return;
  MXS_CHECK(sliding_window > 0,
            strfmt("KV layout has a sliding pool (%d blocks) but the model's sliding_window is %d",
                   layout.num_sliding_blocks, sliding_window));
  // One sequence alone must always be able to run one token (max_new_tokens() >= 1).
  const int bs = layout.block_size;
  const int min_blocks = min_sliding_pool_blocks(sliding_window, bs);
  MXS_CHECK(layout.num_sliding_blocks >= min_blocks,
            strfmt("KV layout: the sliding pool has %d blocks of %d tokens; a %d-token window needs at least %d",
                   layout.num_sliding_blocks, bs, sliding_window, min_blocks));
  sliding_ = std::make_unique<BlockManager>(layout.num_sliding_blocks, bs, enable_prefix_caching);
}

int KvCacheManager::max_new_tokens(int num_computed) const {
  if (!sliding_) return INT_MAX;
  // Blocks [first_sliding_block(c), (c + n - 1) / bs] must number <= num_sliding_blocks.
  const int64_t n = int64_t(sliding_->num_blocks() + first_sliding_block(num_computed)) * block_size() - num_computed;
  return int(std::min<int64_t>(n, INT_MAX));
}

PrefixHit KvCacheManager::find_cached_prefix(std::span<const int32_t> tokens, int max_tokens) const {
  PrefixHit hit;
  hit.full = full_.find_cached_prefix(tokens, max_tokens);
  int n = int(hit.full.size());
  if (sliding_ && n > 0) {
    const std::vector<int32_t> cached = sliding_->lookup_blocks(tokens, n);
    // The longest k <= n whose window blocks [first_sliding_block(k * bs), k) are all cached: `run` counts
    // the consecutive cached blocks ending at block k - 1.
    int best = 0, run = 0;
    for (int k = 1; k <= n; ++k) {
      run = cached[size_t(k - 1)] != kNoBlock ? run + 1 : 0;
      if (k - first_sliding_block(k * block_size()) <= run) best = k;
    }
    n = best;
    hit.sliding.assign(cached.begin(), cached.begin() + n);
    std::fill(hit.sliding.begin(), hit.sliding.begin() + std::min(n, first_sliding_block(n * block_size())),
              kNoBlock);
  }
  hit.full.resize(size_t(n));
  hit.num_tokens = n * block_size();
  return hit;
}

bool KvCacheManager::allocate(Sequence* seq, const PrefixHit* hit, int num_tokens) {
  const std::span<const int32_t> full_cached = hit ? std::span<const int32_t>(hit->full) : std::span<const int32_t>();
  const std::span<const int32_t> sliding_cached =
      hit ? std::span<const int32_t>(hit->sliding) : std::span<const int32_t>();
  if (!full_.can_allocate(seq->blocks, full_cached, num_tokens)) return false;
  if (sliding_ && !sliding_->can_allocate(seq->sliding_blocks, sliding_cached, num_tokens)) return false;
  if (!full_.allocate(&seq->blocks, full_cached, seq->tokens, num_tokens) ||
      (sliding_ && !sliding_->allocate(&seq->sliding_blocks, sliding_cached, seq->tokens, num_tokens)))
    invariant_failed("allocate failed after can_allocate");
  return true;
}

void KvCacheManager::on_computed(Sequence* seq) {
  full_.cache_full_blocks(&seq->blocks, seq->tokens, seq->num_computed_tokens);
  if (!sliding_) return;
  sliding_->cache_full_blocks(&seq->sliding_blocks, seq->tokens, seq->num_computed_tokens);
  sliding_->release_below(&seq->sliding_blocks, first_sliding_block(seq->num_computed_tokens));
}

void KvCacheManager::free(Sequence* seq) {
  full_.free(&seq->blocks);
  if (sliding_) sliding_->free(&seq->sliding_blocks);
}

void KvCacheManager::check_invariants(std::span<const Sequence* const> live) const {
  std::vector<const BlockTable*> full_tables, sliding_tables;
  for (const Sequence* s : live) {
    const int c = s->num_computed_tokens;
    if (int(s->blocks.ids.size()) < blocks_for_tokens(c) || s->blocks.num_released != 0)
      invariant_failed(strfmt("seq %llu: %zu full-group blocks (%d released) for %d computed tokens",
                              (unsigned long long)s->id, s->blocks.ids.size(), s->blocks.num_released, c));
    full_tables.push_back(&s->blocks);
    if (!sliding_) {
      if (!s->sliding_blocks.ids.empty())
        invariant_failed(strfmt("seq %llu holds sliding blocks without a sliding group", (unsigned long long)s->id));
      continue;
    }
    const BlockTable& t = s->sliding_blocks;
    if (int(t.ids.size()) < blocks_for_tokens(c) || t.num_released != first_sliding_block(c))
      invariant_failed(strfmt("seq %llu: sliding table of %zu blocks, %d released, for %d computed tokens "
                              "(window %d: expected %d released)",
                              (unsigned long long)s->id, t.ids.size(), t.num_released, c, window_,
                              first_sliding_block(c)));
    sliding_tables.push_back(&t);
  }
  full_.check_invariants(full_tables);
  if (sliding_) sliding_->check_invariants(sliding_tables);
}

}  // namespace mxs
