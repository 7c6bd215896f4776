// CpuRunner: the reference ModelRunner. Runs a flat batch (prefill chunks and decode tokens of several
// sequences mixed) through the gpt-oss forward pass of cpu_ops.h with HF-parity bf16 rounding, writes K/V
// into its paged pool(s) through each sequence's block table(s) (one pool for every layer, or two KV groups:
// full-attention and sliding-window layers, model_runner.h) and samples with sampler.h.
// Multi-threaded over output rows (ThreadPool::global()); results do not depend on the thread count or on
// how tokens are grouped into steps and batches (bit-identical).
#pragma once
#include <functional>
#include <memory>
#include <vector>

#include "common/bf16.h"
#include "cpu/kv_cache.h"
#include "cpu/yarn_rope.h"
#include "engine/model_runner.h"
#include "model/weights.h"

namespace mxs::cpu {

// How the (up to 4) weighted expert outputs of a token are summed (gpt-oss-spec.md §0, §3.6).
enum class ExpertCombine {
  // transformers v5 experts_implementation="eager" (and 4.56/4.57 on CPU): experts visited in ascending
  // id, out = bf(y * w), index_add_ in bf16 -> a bf16 rounding after every add. The default.
  kSequentialBf16,
  // 4.55-4.57 dense GPU path: bf(y * w) products summed in fp32 (ascending id), one rounding.
  kDenseFp32,
};

struct CpuRunnerOptions {
  int block_size = 16;
  int num_blocks = 0;           // > 0: pool size in blocks (the full-attention layers' pool with two groups)
  size_t kv_budget_bytes = 0;   // used when num_blocks == 0: as many blocks as fit (after the sliding pool)
  // > 0: two KV groups (model_runner.h): the sliding-window layers get their own pool of this many blocks,
  // addressed through SequenceStep::sliding_block_table; 0: one pool and one table for every layer.
  int num_sliding_blocks = 0;
  ExpertCombine combine = ExpertCombine::kSequentialBf16;
};

class CpuRunner : public ModelRunner {
 public:
  // `weights` must stay valid (its mmaps, or the buffers behind its views) for the runner's lifetime.
  // Throws mxs::Error naming the tensor whose dtype or size does not match the config, or a bad option.
  CpuRunner(ModelWeights weights, const CpuRunnerOptions& options);

  const ModelConfig& config() const override { return w_.config; }
  KvCacheLayout kv_layout() const override {
    return {kv_.block_size(), kv_.num_blocks(), sliding_kv_ ? sliding_kv_->num_blocks() : 0};
  }
  std::string name() const override { return "cpu"; }
  // out->samples, in batch order: one per sequence with `sample` (or `return_logits`) set; ok = false with
  // the reason when that sequence failed. Checked per sequence: token ids inside the vocabulary, positions =
  // [context_len - num_tokens, context_len), a block table long enough with ids inside the pool, sampling
  // params when sampling. A sequence failing these checks is skipped (writes no K/V; without `sample` the
  // seam has no slot for its error, which is logged); a sampling failure comes after its forward pass.
  // One caller at a time (the global thread pool is not re-entrant).
  void step(const StepBatch& batch, StepOutput* out) override;

  // Test/triage hooks beyond the seam.
  // step() that also returns the logits of EVERY new token: all_logits [batch.tokens.size(), vocab] fp32.
  // Every sequence must be valid (throws otherwise).
  void step_all_logits(const StepBatch& batch, StepOutput* out, std::vector<float>* all_logits);
  // Called after each decoder layer with the residual stream x [n_tokens, hidden] bf16 of the step.
  using LayerHook = std::function<void(int layer, const bf16* x, int n_tokens)>;
  void set_layer_hook(LayerHook hook) { layer_hook_ = std::move(hook); }

  // The pool of the full-attention layers (of every layer with one group); its layer index is
  // kv_layer_index(l). The sliding layers' pool with two groups, else nullptr.
  const PagedKvCache& kv_cache() const { return kv_; }
  const PagedKvCache* sliding_kv_cache() const { return sliding_kv_.get(); }
  int kv_layer_index(int layer) const { return group_layer_[size_t(layer)]; }
  const YarnRope& rope() const { return rope_; }

 private:
  struct Plan;  // the validated, compacted view of one StepBatch
  // Validates every sequence (errors[s] = "" when fine) and packs the valid ones' tokens as rows.
  Plan plan_batch(const StepBatch& batch, std::vector<std::string>* errors) const;
  void run(const StepBatch& batch, StepOutput* out, std::vector<float>* all_logits);
  void forward_layers(const Plan& plan, std::vector<bf16>& x);
  void attention(const Plan& plan, int layer, const std::vector<bf16>& q, std::vector<bf16>& out);
  void moe(int layer, const std::vector<bf16>& xn, int n, std::vector<bf16>& out);

  ModelWeights w_;
  CpuRunnerOptions opt_;
  PagedKvCache kv_;                            // full-attention layers (all layers with one group)
  std::unique_ptr<PagedKvCache> sliding_kv_;   // sliding-window layers, two groups only
  std::vector<int> group_layer_;               // [num_layers] layer -> index inside its pool
  YarnRope rope_;
  LayerHook layer_hook_;
};

// Number of KV blocks that `budget_bytes` holds for `config` (at least 1 is required by the runner).
int kv_blocks_for_budget(const ModelConfig& config, int block_size, size_t budget_bytes);

}  // namespace mxs::cpu
