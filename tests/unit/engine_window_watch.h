// A ModelRunner wrapper for engine tests with two KV groups: forwards every step to the real runner and records,
// per sequence, the live (non-kNoBlock) entries of its sliding table against the bound ceil((window + n) /
// block_size) + 1 for n new tokens. Used by the CPU engine test and the CUDA one (tests/gpu).
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/offline.h"
#include "engine_forwarding_runner.h"

namespace mxs::test {

class WindowWatch : public ForwardingRunner {
 public:
  using ForwardingRunner::ForwardingRunner;
  void step(const StepBatch& batch, StepOutput* out) override {
    const KvCacheLayout layout = kv_layout();
    for (const SequenceStep& q : batch.seqs) {
      if (layout.num_sliding_blocks == 0) continue;
      const int live = int(std::count_if(q.sliding_block_table.begin(), q.sliding_block_table.end(),
                                         [](int32_t id) { return id != kNoBlock; }));
      max_live = std::max(max_live, live);
      const int bound = (config().sliding_window + q.num_tokens + layout.block_size - 1) / layout.block_size + 1;
      if (live > bound) ++over_bound;
    }
    ForwardingRunner::step(batch, out);
  }
  int max_live = 0;
  int over_bound = 0;
};

// `requests` through an engine over `watch` with the two-group tests' settings: chunks of <= 48 tokens, the
// engine's invariants checked every step.
inline OfflineRun run_watched(WindowWatch& watch, const std::vector<Request>& requests) {
  EngineConfig ec;
  ec.max_num_batched_tokens = 48;
  ec.check_invariants = true;
  Engine engine(watch, nullptr, ec);
  return run_offline(engine, requests);
}

}  // namespace mxs::test
