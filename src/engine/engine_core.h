// The single-threaded engine: requests -> scheduler steps -> ModelRunner::step -> sampled tokens -> stop
// checks -> TokenEvents. Not thread-safe except validate(); Engine (engine.h) runs it on its own thread,
// tests drive it step by step.
// With EngineConfig::async_scheduling one step() call collects one step but first submits the next: up to two
// steps are outstanding in the runner (ModelRunner::submit/collect), a decode whose input is the sample of the
// step in flight gets a stand-in token (Sequence::pending_sample) that the runner fills, and a sequence that
// finishes while a submitted step still computes it is retired (its later samples discarded, its blocks freed
// after that step is collected).
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/event_queue.h"
#include "engine/metrics.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "engine/sequence.h"
#include "text/tokenizer.h"

namespace mxs {

struct EngineConfig {
  int max_num_batched_tokens = 2048;  // --max-num-batched-tokens: new tokens per step
  int max_batch_size = 256;           // --max-batch-size: sequences per step
  int max_length = 0;                 // --max-length: prompt + output tokens; 0 = the model's maximum
  bool enable_prefix_caching = true;
  bool check_invariants = false;      // scheduler + block manager invariants after every step (tests)
  // --async-scheduling: submit step N+1 before step N's samples reach the host and process N's outputs while
  // the runner computes N+1 (docs/ARCHITECTURE.md "Async scheduling"). Same tokens as off; off = one blocking
  // ModelRunner::step() per step.
  bool async_scheduling = false;
};

class EngineCore {
 public:
  // The runner and tokenizer (nullptr: no text, no stop strings) must outlive the core.
  EngineCore(ModelRunner& runner, const Tokenizer* tokenizer, const EngineConfig& config);
  ~EngineCore();  // collects (and discards) outstanding steps
  EngineCore(const EngineCore&) = delete;
  EngineCore& operator=(const EngineCore&) = delete;

  const EngineConfig& config() const { return config_; }  // max_length resolved
  const KvCacheLayout& kv_layout() const { return layout_; }
  int vocab_size() const { return vocab_size_; }
  const Tokenizer* tokenizer() const { return tokenizer_; }

  // Checks a request against the limits; returns its effective max_tokens. Throws mxs::Error with both
  // numbers when it can never run (prompt + max_tokens > max_length, more KV blocks than the pool has,
  // bad sampling parameter, token id outside the vocabulary). Thread-safe: reads immutable state only.
  int validate(const Request& request) const;

  // Adds a request (validate() first; throws like it). Events go to `events`.
  void add(uint64_t id, Request request, std::shared_ptr<EventQueue> events);
  // Finishes a request with kAbort and frees its blocks; unknown or finished ids are ignored.
  void abort(uint64_t id);
  void abort_all();  // and collects outstanding steps

  bool has_work() const { return scheduler_.has_work() || !flights_.empty(); }
  // One scheduler step (no-op without work).
  void step();
  // Pushes the events produced since the last call (by step(), abort()) to their queues. Kept apart
  // so that Engine publishes the metrics of a step before anyone can see its events.
  void deliver_events();

  EngineMetrics metrics() const;
  void check_invariants() const { scheduler_.check_invariants(); }

 private:
  // A submitted step (async scheduling) and the sequences that finished while it was outstanding.
  struct Flight {
    uint64_t id = 0;
    SchedulerOutput sched;
    StepBatch batch;
    bool done_applied = false;  // scheduler_.on_step_done already ran (before collect, to schedule the next)
    bool masks_pending = false;  // some sequence's mask is deferred and not yet supplied (supply_deferred_masks)
    std::vector<std::unique_ptr<Sequence>> retired;  // blocks freed, objects destroyed after its collect
  };

  void step_sync();
  void step_async();
  // Async: schedules, assembles and submits a step (pushed on flights_); false when nothing was submitted.
  bool launch();
  void release(Flight* f);
  void drain();  // collects and discards every outstanding step
  void assemble(const SchedulerOutput& sched, StepBatch* batch, double start);
  // Structured outputs: the allowed-token masks of batch->seqs[i] for each i in `rows` (a constrained sequence that
  // samples), on the thread pool; the spans point into each sequence's mask. Empty span: that step is unrestricted
  // (or the sequence has finished).
  std::vector<std::span<const uint32_t>> compute_masks(const SchedulerOutput& sched, const std::vector<size_t>& rows);
  // Async: computes and hands the runner the deferred masks of the step in flight (SequenceStep::
  // allowed_tokens_deferred), now that the step before it has been collected and its samples accepted.
  void supply_deferred_masks(Flight* f);
  void process_samples(const SchedulerOutput& sched, const StepBatch& batch, const StepOutput& out);
  void process_sample(Sequence* seq, const SampleOutput& sample, double now);
  void finish(Sequence* seq, TokenEvent event, FinishReason reason);
  void fail_batch(const SchedulerOutput& sched, const std::string& error);

  ModelRunner& runner_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  KvCacheLayout layout_;
  int vocab_size_;
  KvCacheManager kv_;  // both KV groups
  Scheduler scheduler_;
  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> seqs_;  // waiting + running
  uint64_t next_arrival_ = 0;
  StepBatch batch_;  // reused across steps
  StepOutput step_out_;
  EngineMetrics counters_;  // the counter part of metrics()
  std::vector<std::pair<std::shared_ptr<EventQueue>, TokenEvent>> outbox_;
  std::deque<std::unique_ptr<Flight>> flights_;  // async: submitted, not yet collected (oldest first, <= 2)
  uint64_t next_step_id_ = 1;
  // Async: a step that samples a constrained sequence is overlapped too, its masks deferred (true unless
  // MXS_CONSTRAINED_SYNC is set: the A/B against the synchronous steps of session 32).
  const bool defer_masks_;
};

}  // namespace mxs
