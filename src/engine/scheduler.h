// Scheduler: pure CPU policy deciding, each step, how many new tokens every sequence runs (vLLM v1 style:
// no prefill/decode phase; a sequence's num_computed_tokens catches up with its tokens).
//
// One step: a budget of max_num_batched_tokens tokens and max_batch_size sequences.
//   1. Running sequences, decodes (one uncomputed token) first, then the prefill chunks of sequences
//      still catching up, each in admission order; a chunk takes what is left of the budget.
//      A chunk is also capped so that the sequence's sliding-window table fits the sliding pool on its own
//      (KvCacheManager::max_new_tokens). When either KV group has no block for a running sequence, the
//      lowest-priority, newest running sequence (highest priority value, then latest arrival) is
//      preempted: its blocks (both groups) are freed and it goes back
//      to the waiting queue to be recomputed later (prompt + what it generated; the prefix cache often
//      still holds most of it). If it is the sequence being scheduled, that one waits.
//   2. Then, if nothing was preempted, waiting sequences in (priority, arrival) order are admitted while
//      budget, batch slots and blocks last: a prefix-cache lookup first, then a chunk of the rest. The
//      head of the queue blocks the ones behind it (strict FCFS within a priority).
// A sequence samples in a step only when its chunk reaches its last token (SequenceStep::sample). A running
// sequence with no uncomputed token (async scheduling: it finishes by length with the step in flight) is
// skipped.
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/sequence.h"

namespace mxs {

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;  // new tokens per step, all sequences together
  int max_batch_size = 256;           // sequences per step (= running sequences at most)
};

struct ScheduledSeq {
  Sequence* seq = nullptr;
  int num_new_tokens = 0;  // tokens[num_computed_tokens, + num_new_tokens) run this step
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;  // batch order
  int num_tokens = 0;
  int num_preempted = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager* kv);

  const SchedulerConfig& config() const { return config_; }
  void add(Sequence* seq);  // a new request: waiting
  SchedulerOutput schedule();
  // After the runner ran `out`: advances num_computed_tokens, registers newly full blocks and releases
  // sliding-window blocks the sequences no longer read. Skips sequences retired meanwhile (async).
  void on_step_done(const SchedulerOutput& out);
  // A finished or aborted sequence leaves its queue and frees its blocks.
  void remove(Sequence* seq);
  // Async scheduling: a sequence that finished while a submitted step still computes it leaves its queue
  // (status kFinished, never scheduled again) but keeps its blocks until release(), after that step.
  void retire(Sequence* seq);
  void release(Sequence* seq);

  bool has_work() const { return !running_.empty() || !waiting_.empty(); }
  int num_running() const { return int(running_.size()); }
  int num_waiting() const { return int(waiting_.size()); }
  uint64_t num_preemptions() const { return num_preemptions_; }
  const std::vector<Sequence*>& running() const { return running_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }

  // Throws std::logic_error on a broken invariant (queues, computed counts, block coverage, refcounts).
  void check_invariants() const;

 private:
  void insert_waiting(Sequence* seq);
  Sequence* pick_victim() const;
  void preempt(Sequence* victim, SchedulerOutput* out, int* budget);

  SchedulerConfig config_;
  KvCacheManager* kv_;
  std::vector<Sequence*> running_;  // admission order
  std::deque<Sequence*> waiting_;   // sorted by (priority, arrival_order)
  std::vector<Sequence*> retired_;  // finished, blocks held until release()
  uint64_t num_preemptions_ = 0;
};

}  // namespace mxs
