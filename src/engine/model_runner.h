// The seam between the engine and a backend (DESIGN.md §3): one scheduler step = one flat batch.
// A sequence contributes any number of new tokens (a prefill chunk or one decode token); there is no
// prefill/decode mode. The runner writes the new tokens' K/V into the paged KV cache through the
// sequence's block table, and samples one token for every sequence with `sample` set.
//
// Paged KV semantics (shared by CpuRunner and CudaRunner and by the block manager):
//   block_size tokens per block; logical block i of a sequence holds positions [i*bs, (i+1)*bs) (K and V,
//   [num_kv_heads, head_dim] bf16 per position, post-RoPE); block_table[i] is its physical id in
//   [0, num_blocks).
//   KV groups: with KvCacheLayout::num_sliding_blocks == 0 one pool and one table serve every layer. With
//   num_sliding_blocks > 0 the runner keeps two pools: the full-attention layers use block_table (ids in
//   [0, num_blocks)), the sliding-window layers use sliding_block_table (ids in [0, num_sliding_blocks)),
//   same logical indexing. A sliding layer's token at position p reads keys (p - window, p], so a step
//   whose first new token is at position f reads sliding positions [sliding_window_start(f, window),
//   context_len) only; the sliding table's entries below that block may be kNoBlock and must not be read.
//
// Two-phase stepping (async scheduling, docs/ARCHITECTURE.md "Async scheduling"): submit() starts a step,
// collect() returns its samples; the engine submits step N+1 before it collects step N, and a decode token of
// N+1 may be "the token sampled for this sequence in N" (SequenceStep::input_from_last_sample), which the
// runner takes from its own copy of N's samples (the CUDA runner: from the device, no host round trip).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "engine/sampling_params.h"
#include "model/config.h"

namespace mxs {

// An entry of a sliding block table whose positions the sliding layers no longer read (below the window).
inline constexpr int32_t kNoBlock = -1;

// The first position the sliding layers read in a step whose first new token is at `first_new`.
inline int sliding_window_start(int first_new, int window) {
  return first_new >= window ? first_new - window + 1 : 0;
}

// A sliding pool size that never runs dry for `max_seqs` running sequences and `max_tokens_per_step` new
// tokens per step: between steps a sequence holds <= ceil(window / bs) + 1 sliding blocks, and a step of n
// new tokens <= ceil(window / bs) + 2 + floor((n - 1) / bs) (see docs/ARCHITECTURE.md).
inline int sliding_pool_blocks(int window, int block_size, int max_seqs, int max_tokens_per_step) {
  return max_seqs * ((window + block_size - 1) / block_size + 2) + (max_tokens_per_step + block_size - 1) / block_size;
}

// The smallest sliding pool the engine accepts: one sequence alone can always run one new token (its table
// then spans at most (window + block_size - 2) / block_size + 1 blocks).
inline int min_sliding_pool_blocks(int window, int block_size) { return (window + 2 * block_size - 2) / block_size; }

struct KvCacheLayout {
  int block_size = 16;  // tokens per block
  int num_blocks = 0;   // physical blocks in the (full-attention) pool
  // > 0: the sliding-window layers have their own pool of this many blocks, addressed through
  // SequenceStep::sliding_block_table; 0: one pool and one table for every layer.
  int num_sliding_blocks = 0;
};

struct SequenceStep {
  uint64_t seq_id = 0;
  int32_t token_offset = 0;  // index of this sequence's first new token in StepBatch::tokens
  int32_t num_tokens = 0;    // new tokens this step (>= 1)
  int32_t context_len = 0;   // tokens in the KV cache after this step (= last position + 1)
  std::span<const int32_t> block_table;  // >= ceil(context_len / block_size) entries
  // Only when KvCacheLayout::num_sliding_blocks > 0 (else empty): the sliding layers' table, same length
  // rule; entries below block sliding_window_start(context_len - num_tokens, window) / block_size may be
  // kNoBlock.
  std::span<const int32_t> sliding_block_table;
  bool sample = false;       // sample from the logits of the last new token
  bool return_logits = false;  // copy the full logits of the last new token into the output (tests)
  const SamplingParams* sampling = nullptr;   // required when sample
  std::span<const int32_t> prompt_tokens;     // for the repetition penalty
  std::span<const int32_t> output_tokens;     // generated so far: penalties, and the RNG step counter
  // Async scheduling (submit()/collect() only; step() never sees it set): num_tokens == 1 and that token is the
  // one this runner sampled for seq_id in the step submitted just before this one, which the caller does not
  // know yet. The entry of StepBatch::tokens is a stand-in (0) that the runner ignores, and output_tokens lacks
  // that last token: the runner treats the history as output_tokens + [it] (RNG step output_tokens.size() + 1).
  // Penalties count that token too (CudaRunner: SampleSeqParams::pending_index). The engine never sets it with
  // return_logits.
  // When the previous step has no ok sample for seq_id, this sequence's output has ok = false.
  bool input_from_last_sample = false;
  // Structured outputs: the tokens this sample may take, as bitmask words over the vocabulary (bit t % 32 of word
  // t / 32; ceil(vocab / 32) words); empty = every token. The sampler sets the others' logits to -inf
  // (cpu/sampler.h step 2b). The engine never sets it with input_from_last_sample.
  std::span<const uint32_t> allowed_tokens;
  // Async scheduling with structured outputs (sample and input_from_last_sample set): the mask depends on the token
  // sampled in the step before, which the caller does not know yet. It comes later, through supply_masks(); the
  // runner may run the forward pass meanwhile, but not the sampling. allowed_tokens stays empty.
  bool allowed_tokens_deferred = false;
};

struct StepBatch {
  std::vector<int32_t> tokens;     // [n_tokens] new tokens of all sequences, each sequence contiguous
  std::vector<int32_t> positions;  // [n_tokens] absolute positions (0-based)
  std::vector<SequenceStep> seqs;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleOutput {
  uint64_t seq_id = 0;
  int32_t token = -1;
  float logprob = 0.0f;             // when sampling->logprobs (log-softmax of the raw logits)
  std::vector<TokenLogprob> top;    // sampling->top_logprobs best, descending
  std::vector<float> logits;        // when return_logits: [vocab] fp32 copy of the (bf16) logits
  bool ok = true;                   // false: this sequence failed (error says why); others are unaffected
  std::string error;
};

struct StepOutput {
  std::vector<SampleOutput> samples;  // one per sequence with sample set, in batch order
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual KvCacheLayout kv_layout() const = 0;  // fixed for the runner's lifetime
  virtual std::string name() const = 0;         // "cpu", "cuda"
  // Runs one step. Throws mxs::Error only for a batch the runner cannot run at all (a bug in the caller);
  // a per-sequence problem is reported in its SampleOutput.
  virtual void step(const StepBatch& batch, StepOutput* out) = 0;

  // Two-phase stepping. submit() starts a step and may return before it ran; collect() waits for the oldest
  // submitted step and fills `out` as step() would have. At most two steps are outstanding (submit N, submit
  // N + 1, collect N, ...); outputs come back in submission order. submit() reads the batch, and what its spans
  // point to, only during the call (the engine reuses them). Both throw like step(); a step whose submit()
  // threw is not outstanding. step() must not be called while steps are outstanding. Submitted steps must run
  // in submission order, each after the previous one's KV reads and writes (one stream): the engine accounts a
  // step as done before it is collected, so blocks it frees or releases then (a sliding block below the new
  // window, a preempted sequence's blocks) may be written by the next step.
  // The default suits any blocking runner: submit() resolves input_from_last_sample tokens from the previous
  // step's outputs (substituting the token and appending it to output_tokens), runs step() at once and queues
  // the output; collect() hands it back; a step with deferred masks is kept (a copy) and runs in supply_masks().
  // CudaRunner overrides all three (launch on its stream, tokens on the device; the forward pass of a step with
  // deferred masks is launched at submit(), its sampling at supply_masks()).
  virtual void submit(const StepBatch& batch);
  virtual void collect(StepOutput* out);
  // The masks of the last submitted step's allowed_tokens_deferred sequences, one per such sequence in batch order
  // (an empty span: every token). Called once for such a step, after its submit() and before any other submit()
  // or its collect() (the engine: after collecting the step before and handing its samples to the constraints).
  // Reads the masks only during the call. The default runs the step that submit() kept (a copy of the batch).
  virtual void supply_masks(const std::vector<std::span<const uint32_t>>& masks);

 private:
  // A submitted batch that waits for its masks (default submit()), with copies of what its spans pointed to.
  struct DeferredStep {
    StepBatch batch;
    std::vector<std::vector<int32_t>> tables, sliding_tables, prompts, outputs;
    std::vector<SamplingParams> sampling;
    std::vector<std::vector<uint32_t>> masks;
  };
  void run_and_queue(const StepBatch& batch);  // default submit(): the step, now
  std::deque<StepOutput> queued_;                       // default submit(): outputs not yet collected
  std::unordered_map<uint64_t, int32_t> last_tokens_;  // default submit(): ok samples of the last step
  std::unique_ptr<DeferredStep> deferred_;              // default submit(): a step waiting for supply_masks()
};

inline void ModelRunner::submit(const StepBatch& batch) {
  if (deferred_) throw std::logic_error("ModelRunner::submit: the step before waits for its masks");
  if (queued_.size() >= 2) throw std::logic_error("ModelRunner::submit: two steps are already outstanding");
  bool defer = false;
  for (const SequenceStep& q : batch.seqs) defer |= q.allowed_tokens_deferred;
  if (!defer) {
    run_and_queue(batch);
    return;
  }
  // Kept until supply_masks(): the batch, and what its spans point to (the caller reuses that memory).
  auto d = std::make_unique<DeferredStep>();
  d->batch = batch;
  const size_t n = batch.seqs.size();
  d->tables.resize(n), d->sliding_tables.resize(n), d->prompts.resize(n), d->outputs.resize(n);
  d->sampling.resize(n), d->masks.resize(n);
  for (size_t i = 0; i < n; ++i) {
    SequenceStep& q = d->batch.seqs[i];
    d->tables[i].assign(q.block_table.begin(), q.block_table.end());
    d->sliding_tables[i].assign(q.sliding_block_table.begin(), q.sliding_block_table.end());
    d->prompts[i].assign(q.prompt_tokens.begin(), q.prompt_tokens.end());
    d->outputs[i].assign(q.output_tokens.begin(), q.output_tokens.end());
    d->masks[i].assign(q.allowed_tokens.begin(), q.allowed_tokens.end());
    q.block_table = d->tables[i], q.sliding_block_table = d->sliding_tables[i];
    q.prompt_tokens = d->prompts[i], q.output_tokens = d->outputs[i], q.allowed_tokens = d->masks[i];
    if (q.sampling) d->sampling[i] = *q.sampling, q.sampling = &d->sampling[i];
  }
  deferred_ = std::move(d);
}

inline void ModelRunner::supply_masks(const std::vector<std::span<const uint32_t>>& masks) {
  if (!deferred_) throw std::logic_error("ModelRunner::supply_masks: no step waits for masks");
  size_t deferred = 0;
  for (const SequenceStep& q : deferred_->batch.seqs) deferred += q.allowed_tokens_deferred;
  if (masks.size() != deferred)
    throw std::logic_error("ModelRunner::supply_masks: " + std::to_string(masks.size()) + " masks for " +
                           std::to_string(deferred) + " deferred sequences");
  std::unique_ptr<DeferredStep> d = std::move(deferred_);
  size_t k = 0;
  for (size_t i = 0; i < d->batch.seqs.size(); ++i) {
    SequenceStep& q = d->batch.seqs[i];
    if (!q.allowed_tokens_deferred) continue;
    d->masks[i].assign(masks[k].begin(), masks[k].end());
    q.allowed_tokens = d->masks[i];
    q.allowed_tokens_deferred = false;
    ++k;
  }
  run_and_queue(d->batch);
}

inline void ModelRunner::run_and_queue(const StepBatch& batch) {
  StepOutput out;
  std::unordered_set<uint64_t> missing;  // input_from_last_sample without an ok sample in the last step
  bool any = false;
  for (const SequenceStep& q : batch.seqs) any |= q.input_from_last_sample;
  if (!any) {
    step(batch, &out);
  } else {
    // The batch the synchronous engine would have built: the token in place, and in the history.
    StepBatch b = batch;
    std::vector<std::vector<int32_t>> histories;
    histories.reserve(b.seqs.size());
    for (SequenceStep& q : b.seqs) {
      if (!q.input_from_last_sample) continue;
      if (q.num_tokens != 1 || q.token_offset < 0 || size_t(q.token_offset) >= b.tokens.size())
        throw std::logic_error("ModelRunner::submit: input_from_last_sample needs exactly one new token");
      const auto it = last_tokens_.find(q.seq_id);
      if (it == last_tokens_.end()) missing.insert(q.seq_id);
      const int32_t token = it != last_tokens_.end() ? it->second : 0;
      b.tokens[size_t(q.token_offset)] = token;
      histories.emplace_back(q.output_tokens.begin(), q.output_tokens.end());
      histories.back().push_back(token);
      q.output_tokens = histories.back();
      q.input_from_last_sample = false;
    }
    step(b, &out);
    for (SampleOutput& o : out.samples)
      if (missing.count(o.seq_id) && o.ok) {
        o.ok = false;
        o.token = -1;
        o.error = "input_from_last_sample: the previous step has no sample for this sequence";
      }
  }
  last_tokens_.clear();
  for (const SampleOutput& o : out.samples)
    if (o.ok) last_tokens_[o.seq_id] = o.token;
  queued_.push_back(std::move(out));
}

inline void ModelRunner::collect(StepOutput* out) {
  if (queued_.empty())
    throw std::logic_error(deferred_ ? "ModelRunner::collect: the step waits for its masks (supply_masks)"
                                     : "ModelRunner::collect: no step is outstanding");
  *out = std::move(queued_.front());
  queued_.pop_front();
}

}  // namespace mxs
