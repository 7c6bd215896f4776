// Scheduler: token budget, decode-first ordering, chunked prefill, preemption by recompute (scheduler.h).
#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>

#include "common/error.h"

namespace mxs {

namespace {

[[noreturn]] void invariant_failed(const std::string& what) {
  throw std::logic_error("scheduler invariant: " + what);
}

// Waiting-queue order: lower priority value first, then earlier arrival.
bool runs_before(const Sequence* a, const Sequence* b) {
  if (a->request.priority != b->request.priority) return a->request.priority < b->request.priority;
  return a->arrival_order < b->arrival_order;
}

}  // namespace

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager* kv) : config_(config), kv_(kv) {
  MXS_CHECK(config.max_num_batched_tokens > 0,
            strfmt("max-num-batched-tokens = %d: must be > 0", config.max_num_batched_tokens));
  MXS_CHECK(config.max_batch_size > 0, strfmt("max-batch-size = %d: must be > 0", config.max_batch_size));
}

void Scheduler::insert_waiting(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  waiting_.insert(std::upper_bound(waiting_.begin(), waiting_.end(), seq, runs_before), seq);
}

void Scheduler::add(Sequence* seq) { insert_waiting(seq); }

Sequence* Scheduler::pick_victim() const {
  Sequence* victim = nullptr;
  for (Sequence* s : running_)
    if (!victim || runs_before(victim, s)) victim = s;
  return victim;
}

void Scheduler::preempt(Sequence* victim, SchedulerOutput* out, int* budget) {
  for (auto it = out->seqs.begin(); it != out->seqs.end(); ++it) {
    if (it->seq != victim) continue;
    *budget += it->num_new_tokens;
    out->num_tokens -= it->num_new_tokens;
    out->seqs.erase(it);
    break;
  }
  running_.erase(std::find(running_.begin(), running_.end(), victim));
  kv_->free(victim);
  victim->num_computed_tokens = 0;
  ++victim->num_preemptions;
  ++num_preemptions_;
  ++out->num_preempted;
  insert_waiting(victim);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int budget = config_.max_num_batched_tokens;

  // 1. Running sequences: decodes first, then prefill chunks (stable: admission order within each).
  std::vector<Sequence*> order = running_;
  std::stable_partition(order.begin(), order.end(), [](const Sequence* s) { return s->num_uncomputed_tokens() == 1; });
  for (Sequence* seq : order) {
    if (budget == 0) break;
    if (seq->status != SeqStatus::kRunning) continue;  // preempted earlier in this loop
    if (seq->num_uncomputed_tokens() == 0) continue;   // async: ends with the step in flight (never in sync)
    const int n = std::min({seq->num_uncomputed_tokens(), budget, kv_->max_new_tokens(seq->num_computed_tokens)});
    for (;;) {
      if (kv_->allocate(seq, nullptr, seq->num_computed_tokens + n)) {
        out.seqs.push_back({seq, n});
        out.num_tokens += n;
        budget -= n;
        break;
      }
      Sequence* victim = pick_victim();
      preempt(victim, &out, &budget);
      if (victim == seq) break;
    }
  }

  // 2. Waiting sequences, unless this step had to preempt (the pool is under pressure).
  while (out.num_preempted == 0 && budget > 0 && !waiting_.empty() &&
         int(running_.size()) < config_.max_batch_size) {
    Sequence* seq = waiting_.front();
    // At least the last token is computed (its logits pick the next token), so a hit stops short of it.
    const PrefixHit hit = kv_->find_cached_prefix(seq->tokens, seq->num_tokens() - 1);
    const int num_cached = hit.num_tokens;
    const int n = std::min({seq->num_tokens() - num_cached, budget, kv_->max_new_tokens(num_cached)});
    if (!kv_->allocate(seq, &hit, num_cached + n)) break;
    waiting_.pop_front();
    seq->status = SeqStatus::kRunning;
    seq->num_computed_tokens = num_cached;
    if (seq->num_cached_tokens < 0) seq->num_cached_tokens = std::min(num_cached, seq->num_prompt_tokens);
    running_.push_back(seq);
    out.seqs.push_back({seq, n});
    out.num_tokens += n;
    budget -= n;
  }
  return out;
}

void Scheduler::on_step_done(const SchedulerOutput& out) {
  for (const ScheduledSeq& s : out.seqs) {
    if (s.seq->status == SeqStatus::kFinished) continue;  // retired while the step ran (async)
    s.seq->num_computed_tokens += s.num_new_tokens;
    kv_->on_computed(s.seq);
  }
}

void Scheduler::remove(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end()) waiting_.erase(it);
  kv_->free(seq);
  seq->status = SeqStatus::kFinished;
}

void Scheduler::retire(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end()) waiting_.erase(it);
  seq->status = SeqStatus::kFinished;
  retired_.push_back(seq);
}

void Scheduler::release(Sequence* seq) {
  if (auto it = std::find(retired_.begin(), retired_.end(), seq); it != retired_.end()) retired_.erase(it);
  kv_->free(seq);
}

void Scheduler::check_invariants() const {
  if (int(running_.size()) > config_.max_batch_size)
    invariant_failed(strfmt("%zu running > max_batch_size %d", running_.size(), config_.max_batch_size));
  std::vector<const Sequence*> live;
  for (const Sequence* s : running_) {
    if (s->status != SeqStatus::kRunning) invariant_failed(strfmt("seq %llu in running_ is not running",
                                                                  (unsigned long long)s->id));
    if (s->num_computed_tokens < 0 || s->num_computed_tokens >= s->num_tokens())
      invariant_failed(strfmt("seq %llu: %d computed of %d tokens", (unsigned long long)s->id,
                              s->num_computed_tokens, s->num_tokens()));
    if (std::count(running_.begin(), running_.end(), s) != 1 || std::count(waiting_.begin(), waiting_.end(), s))
      invariant_failed(strfmt("seq %llu queued twice", (unsigned long long)s->id));
    live.push_back(s);
  }
  for (size_t i = 0; i < waiting_.size(); ++i) {
    const Sequence* s = waiting_[i];
    if (s->status != SeqStatus::kWaiting || !s->blocks.ids.empty() || !s->sliding_blocks.ids.empty() ||
        s->num_computed_tokens != 0)
      invariant_failed(strfmt("waiting seq %llu holds state", (unsigned long long)s->id));
    if (i > 0 && runs_before(s, waiting_[i - 1])) invariant_failed("waiting queue out of order");
    if (std::count(waiting_.begin(), waiting_.end(), s) != 1) invariant_failed("waiting seq queued twice");
  }
  for (const Sequence* s : retired_) {  // async: still holds the blocks a step in flight reads
    if (s->status != SeqStatus::kFinished || std::count(running_.begin(), running_.end(), s) ||
        std::count(waiting_.begin(), waiting_.end(), s) || std::count(retired_.begin(), retired_.end(), s) != 1)
      invariant_failed(strfmt("retired seq %llu is queued or not finished", (unsigned long long)s->id));
    live.push_back(s);
  }
  kv_->check_invariants(live);
}

}  // namespace mxs
