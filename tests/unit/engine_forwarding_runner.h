// A ModelRunner decorator base for engine tests: forwards config, layout, name and step to the wrapped runner,
// so a test runner overrides only what it observes (WindowWatch, the async tests' CountingRunner).
#pragma once
#include <string>

#include "engine/model_runner.h"

namespace mxs::test {

class ForwardingRunner : public ModelRunner {
 public:
  explicit ForwardingRunner(ModelRunner& inner) : inner_(inner) {}
  const ModelConfig& config() const override { return inner_.config(); }
  KvCacheLayout kv_layout() const override { return inner_.kv_layout(); }
  std::string name() const override { return inner_.name(); }
  void step(const StepBatch& batch, StepOutput* out) override { inner_.step(batch, out); }

 private:
  ModelRunner& inner_;
};

}  // namespace mxs::test
