// A ModelRunner wrapper for engine tests with two KV groups: forwards every step to the real runner and records,
// per sequence, the live (non-kNoBlock) entries of its sliding table against the bound ceil((window + n) /
// block_size) + 1 for n new tokens. Used by the CPU engine test and the CUDA one (tests/gpu).
#pragma once
#include <algorithm>
#include <string>

#include "engine/model_runner.h"

namespace mxs::test {

class WindowWatch : public ModelRunner {
 public:
  explicit WindowWatch(ModelRunner& inner) : inner_(inner) {}
  const ModelConfig& config() const override { return inner_.config(); }
  KvCacheLayout kv_layout() const override { return inner_.kv_layout(); }
  std::string name() const override { return inner_.name(); }
  void step(const StepBatch& batch, StepOutput* out) override {
    const KvCacheLayout layout = inner_.kv_layout();
    for (const SequenceStep& q : batch.seqs) {
      if (layout.num_sliding_blocks == 0) continue;
      const int live = int(std::count_if(q.sliding_block_table.begin(), q.sliding_block_table.end(),
                                         [](int32_t id) { return id != kNoBlock; }));
      max_live = std::max(max_live, live);
      const int bound = (config().sliding_window + q.num_tokens + layout.block_size - 1) / layout.block_size + 1;
      if (live > bound) ++over_bound;
    }
    inner_.step(batch, out);
  }
  int max_live = 0;
  int over_bound = 0;

 private:
  ModelRunner& inner_;
};

}  // namespace mxs::test
