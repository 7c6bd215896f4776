// The engine's KV bookkeeping over the runner's KV groups (model_runner.h): one BlockManager for the
// full-attention layers (Sequence::blocks) and, when KvCacheLayout::num_sliding_blocks > 0, one for the
// sliding-window layers (Sequence::sliding_blocks). Both tables use the same logical indexing (entry i =
// positions [i*bs, (i+1)*bs)); the scheduler sees one allocator that is all-or-nothing over both groups.
//
// Sliding group rules (window W = the model's sliding_window, bs = block_size):
//   - a step whose first new token is at position f reads sliding positions [sliding_window_start(f, W),
//     context_len); after a step that leaves c computed tokens, the next step starts at f = c, so the
//     blocks below first_sliding_block(c) = sliding_window_start(c, W) / bs are released (their entries
//     become kNoBlock). Between steps a table holds <= ceil(W / bs) + 1 blocks; during a step of n new
//     tokens <= ceil((W + n) / bs) + 1.
//   - max_new_tokens(c) caps a sequence's chunk so that its sliding table fits the sliding pool on its own:
//     a long prompt is chunked instead of stalling when the sliding pool is small.
//   - prefix caching: a hit of L tokens is usable only as far as both groups can serve it: the full group
//     needs blocks [0, L/bs), the sliding group only [first_sliding_block(L), L/bs) (the window the first
//     computed token, at position L, reads). find_cached_prefix takes the longest full-group hit and
//     shortens it, block by block, to the longest L whose sliding window is cached too (L = 0 always
//     qualifies: then everything is recomputed). The chain hash covers all earlier tokens, so a sliding
//     block found by hash holds the KV of exactly this prefix.
#pragma once
#include <climits>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "engine/sequence.h"

namespace mxs {

// A prefix-cache hit usable by every group: tokens [0, num_tokens) need no computation.
struct PrefixHit {
  int num_tokens = 0;            // a multiple of block_size
  std::vector<int32_t> full;     // [num_tokens / bs] full-group blocks
  std::vector<int32_t> sliding;  // [num_tokens / bs] sliding-group blocks (kNoBlock below the window); empty
                                 // without a sliding group
};

class KvCacheManager {
 public:
  // sliding_window: the model's window (used only when layout.num_sliding_blocks > 0). Throws mxs::Error
  // for a bad layout, or a sliding pool too small for one sequence's decode step.
  KvCacheManager(const KvCacheLayout& layout, int sliding_window, bool enable_prefix_caching);

  bool has_sliding_group() const { return sliding_ != nullptr; }
  int block_size() const { return full_.block_size(); }
  int window() const { return window_; }
  const BlockManager& full() const { return full_; }
  const BlockManager* sliding() const { return sliding_.get(); }
  int blocks_for_tokens(int64_t n) const { return full_.blocks_for_tokens(n); }
  const PrefixCacheStats& prefix_stats() const { return full_.prefix_stats(); }

  // The first sliding block a sequence with `num_computed` computed tokens still reads.
  int first_sliding_block(int num_computed) const { return sliding_window_start(num_computed, window_) / block_size(); }
  // The most new tokens a sequence with `num_computed` computed tokens may run in one step so that its
  // sliding table alone fits the sliding pool (INT_MAX without a sliding group).
  int max_new_tokens(int num_computed) const;

  // Longest prefix of tokens[0, max_tokens) that both groups hold (see the header comment).
  PrefixHit find_cached_prefix(std::span<const int32_t> tokens, int max_tokens) const;
  // Makes both of seq's tables cover num_tokens positions (`hit` only at admission, on empty tables). All
  // or nothing over both groups: false (nothing changed) when either pool cannot supply its blocks.
  bool allocate(Sequence* seq, const PrefixHit* hit, int num_tokens);
  // After a step advanced seq->num_computed_tokens: registers its newly full blocks in both groups and
  // releases its sliding blocks below first_sliding_block(num_computed_tokens).
  void on_computed(Sequence* seq);
  // Releases both tables.
  void free(Sequence* seq);

  // Throws std::logic_error on a broken invariant. `live`: every sequence holding blocks, each after a
  // step (on_computed): both tables cover its computed tokens, the sliding table has released exactly the
  // blocks below the window, and each group's refcounts match its tables.
  void check_invariants(std::span<const Sequence* const> live) const;

 private:
  int window_ = 0;
  BlockManager full_;
  std::unique_ptr<BlockManager> sliding_;
};

}  // namespace mxs
