// The engine's state for one request (engine-thread only): its tokens, how many of them have KV in the
// cache (num_computed_tokens catches up with tokens.size(); there is no prefill/decode phase), its blocks,
// and where its output goes.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/block_manager.h"
#include "engine/event_queue.h"
#include "engine/output_text.h"
#include "engine/request.h"

namespace mxs {

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  uint64_t id = 0;
  Request request;               // its prompt is moved into `tokens`
  std::vector<int32_t> tokens;   // [num_prompt_tokens + generated]
  int num_prompt_tokens = 0;
  int num_computed_tokens = 0;   // tokens[0, num_computed_tokens) have K/V in the cache
  int max_tokens = 0;            // effective limit on generated tokens (request, --max-length, pool)
  uint64_t arrival_order = 0;    // FCFS tie-break: submission order
  SeqStatus status = SeqStatus::kWaiting;
  BlockTable blocks;              // full-attention KV group (every layer when the runner has one group)
  BlockTable sliding_blocks;      // sliding-window KV group (kv_cache_manager.h); empty with one group
  int num_cached_tokens = -1;    // prompt tokens from the prefix cache at first admission (-1: not yet)
  int num_preemptions = 0;
  // Async scheduling (engine_core.h): the id of the last submitted step that computes this sequence, and
  // whether tokens.back() is a stand-in for the token that step's predecessor is still sampling.
  uint64_t last_step = 0;
  bool pending_sample = false;
  // Structured outputs (Request::constraint): its state, and the allowed-token mask of the step being assembled.
  std::unique_ptr<TokenConstraint> constraint;
  std::vector<uint32_t> allowed_mask;

  std::shared_ptr<EventQueue> events;  // where TokenEvents go
  OutputText text;                     // detokenizer + stop strings
  RequestTimings timings;

  int num_tokens() const { return int(tokens.size()); }
  int num_output_tokens() const { return num_tokens() - num_prompt_tokens; }
  int num_uncomputed_tokens() const { return num_tokens() - num_computed_tokens; }
  std::span<const int32_t> prompt() const { return {tokens.data(), size_t(num_prompt_tokens)}; }
  std::span<const int32_t> output() const {
    return {tokens.data() + num_prompt_tokens, size_t(num_output_tokens())};
  }
};

}  // namespace mxs
