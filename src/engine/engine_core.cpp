// EngineCore: admission checks, StepBatch assembly, sample processing and stop conditions (engine_core.h).
#include "engine/engine_core.h"

#include <algorithm>
#include <cstdlib>
#include <exception>

#include "common/error.h"
#include "common/log.h"
#include "common/thread_pool.h"
#include "common/timer.h"

namespace mxs {

EngineCore::EngineCore(ModelRunner& runner, const Tokenizer* tokenizer, const EngineConfig& config)
    : runner_(runner),
      tokenizer_(tokenizer),
      config_(config),
      layout_(runner.kv_layout()),
      vocab_size_(runner.config().vocab_size),
      kv_(layout_, runner.config().sliding_window, config.enable_prefix_caching),
      scheduler_(SchedulerConfig{config.max_num_batched_tokens, config.max_batch_size}, &kv_),
      defer_masks_(std::getenv("MXS_CONSTRAINED_SYNC") == nullptr) {
  const int model_max = runner.config().max_position_embeddings;
  if (config_.max_length <= 0) config_.max_length = model_max;
  MXS_CHECK(config_.max_length <= model_max,
            strfmt("max-length = %d exceeds the model's max_position_embeddings (%d)", config_.max_length, model_max));
  counters_.kv_blocks_total = layout_.num_blocks;
  counters_.kv_sliding_blocks_total = layout_.num_sliding_blocks;
}

int EngineCore::validate(const Request& r) const {
  const int n_prompt = int(r.prompt.size());
  MXS_CHECK(n_prompt > 0, "the prompt is empty: at least one token is needed");
  for (size_t i = 0; i < r.prompt.size(); ++i)
    MXS_CHECK(r.prompt[i] >= 0 && r.prompt[i] < vocab_size_,
              strfmt("prompt token %d at index %zu is outside the vocabulary [0, %d)", r.prompt[i], i, vocab_size_));
  r.sampling.validate();
  MXS_CHECK(r.max_tokens == -1 || r.max_tokens >= 1,
            strfmt("max_tokens = %d is out of range: must be >= 1 (or unset)", r.max_tokens));
  for (const LogitBias& e : r.sampling.logit_bias)
    MXS_CHECK(e.token < vocab_size_,
              strfmt("logit_bias: token %d is outside the vocabulary [0, %d)", e.token, vocab_size_));
  if (r.sampling.min_tokens > 0) {
    MXS_CHECK(r.max_tokens == -1 || r.sampling.min_tokens <= r.max_tokens,
              strfmt("min_tokens = %d exceeds max_tokens = %d", r.sampling.min_tokens, r.max_tokens));
    const auto& ids = r.sampling.min_tokens_ids.empty() ? r.stop_token_ids : r.sampling.min_tokens_ids;
    MXS_CHECK(ids.size() <= size_t(SamplingParams::kMaxMinTokensIds),
              strfmt("min_tokens applies to %zu stop tokens: at most %d are allowed", ids.size(),
                     SamplingParams::kMaxMinTokensIds));
    for (int32_t id : ids)
      MXS_CHECK(id >= 0 && id < vocab_size_,
                strfmt("min_tokens: stop token %d is outside the vocabulary [0, %d)", id, vocab_size_));
  }
  MXS_CHECK(r.stop_strings.empty() || tokenizer_,
            "stop strings need a tokenizer, and this engine has none");
  const int max_length = config_.max_length;
  MXS_CHECK(n_prompt < max_length,
            strfmt("the prompt has %d tokens but --max-length is %d (prompt + output): no room to generate",
                   n_prompt, max_length));
  if (r.max_tokens > 0)
    MXS_CHECK(int64_t(n_prompt) + r.max_tokens <= max_length,
              strfmt("prompt (%d tokens) + max_tokens (%d) = %lld tokens exceeds --max-length %d", n_prompt,
                     r.max_tokens, (long long)n_prompt + r.max_tokens, max_length));
  // The last generated token never enters the KV cache, so a request needs prompt + max_tokens - 1 slots.
  const int64_t pool_tokens = int64_t(layout_.num_blocks) * layout_.block_size;
  const int max_tokens = r.max_tokens > 0 ? r.max_tokens : max_length - n_prompt;
  const int64_t kv_tokens = int64_t(n_prompt) + max_tokens - 1;
  if (kv_tokens > pool_tokens) {
    MXS_CHECK(r.max_tokens < 0,
              strfmt("prompt (%d tokens) + max_tokens (%d) needs %lld KV blocks of %d tokens, but the KV pool "
                     "has %d blocks (%lld tokens)",
                     n_prompt, r.max_tokens, (long long)kv_.blocks_for_tokens(kv_tokens), layout_.block_size,
                     layout_.num_blocks, (long long)pool_tokens));
    MXS_CHECK(n_prompt <= pool_tokens,
              strfmt("the prompt (%d tokens) needs %d KV blocks of %d tokens, but the KV pool has %d blocks "
                     "(%lld tokens)",
                     n_prompt, kv_.blocks_for_tokens(n_prompt), layout_.block_size, layout_.num_blocks,
                     (long long)pool_tokens));
    return int(pool_tokens - n_prompt + 1);  // unset max_tokens: as many as the pool can hold
  }
  return max_tokens;
}

void EngineCore::add(uint64_t id, Request request, std::shared_ptr<EventQueue> events) {
  const int max_tokens = validate(request);
  MXS_CHECK(!seqs_.count(id), strfmt("request id %llu is already in use", (unsigned long long)id));
  auto seq = std::make_unique<Sequence>();
  seq->id = id;
  seq->tokens = std::move(request.prompt);
  seq->num_prompt_tokens = int(seq->tokens.size());
  seq->max_tokens = max_tokens;
  seq->arrival_order = next_arrival_++;
  seq->events = std::move(events);
  if (request.arrival_time <= 0.0) request.arrival_time = now_seconds();
  seq->timings.arrival = request.arrival_time;
  seq->text.init(tokenizer_, request.stop_strings);
  if (request.sampling.min_tokens > 0 && request.sampling.min_tokens_ids.empty())
    request.sampling.min_tokens_ids = request.stop_token_ids;  // (what min_tokens holds back)
  if (request.constraint) seq->constraint = request.constraint();
  seq->request = std::move(request);
  scheduler_.add(seq.get());
  seqs_.emplace(id, std::move(seq));
  ++counters_.requests_added;
  counters_.prompt_tokens += uint64_t(seqs_.at(id)->num_prompt_tokens);
}

void EngineCore::abort(uint64_t id) {
  auto it = seqs_.find(id);
  if (it == seqs_.end()) return;
  finish(it->second.get(), TokenEvent{}, FinishReason::kAbort);
}

void EngineCore::abort_all() {
  std::vector<uint64_t> ids;
  for (const auto& [id, seq] : seqs_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (uint64_t id : ids) abort(id);
  drain();
}

void EngineCore::finish(Sequence* seq, TokenEvent event, FinishReason reason) {
  if (seq->pending_sample) {  // its sample never came (error, abort): the stand-in is not an output token
    seq->tokens.pop_back();
    seq->pending_sample = false;
  }
  event.request_id = seq->id;
  event.finish = reason;
  if (reason != FinishReason::kError) event.text += seq->text.flush();
  seq->timings.end = now_seconds();
  event.num_prompt_tokens = seq->num_prompt_tokens;
  event.num_output_tokens = seq->num_output_tokens();
  event.num_cached_tokens = std::max(0, seq->num_cached_tokens);
  event.num_preemptions = seq->num_preemptions;
  event.timings = std::move(seq->timings);
  switch (reason) {
    case FinishReason::kStop: ++counters_.requests_finished_stop; break;
    case FinishReason::kLength: ++counters_.requests_finished_length; break;
    case FinishReason::kAbort: ++counters_.requests_aborted; break;
    case FinishReason::kError: ++counters_.requests_failed; break;
    case FinishReason::kNone: break;
  }
  std::shared_ptr<EventQueue> events = std::move(seq->events);
  const uint64_t id = seq->id;
  // Async: a step still outstanding computes this sequence (its newest one is seq->last_step): keep the object
  // and the blocks until that step is collected; its samples for this sequence are discarded (status kFinished).
  Flight* holder = nullptr;
  for (auto& f : flights_)
    if (f->id == seq->last_step) holder = f.get();
  if (holder) {
    scheduler_.retire(seq);
    auto it = seqs_.find(id);
    holder->retired.push_back(std::move(it->second));
    seqs_.erase(it);
  } else {
    scheduler_.remove(seq);
    seqs_.erase(id);  // `seq` is gone from here on
  }
  if (events) outbox_.emplace_back(std::move(events), std::move(event));
}

void EngineCore::deliver_events() {
  for (auto& [queue, event] : outbox_) queue->push(std::move(event));
  outbox_.clear();
}

void EngineCore::fail_batch(const SchedulerOutput& sched, const std::string& error) {
  for (const ScheduledSeq& s : sched.seqs) {
    if (s.seq->status == SeqStatus::kFinished) continue;  // async: retired while the step was outstanding
    TokenEvent ev;
    ev.error = error;
    finish(s.seq, std::move(ev), FinishReason::kError);
  }
}

void EngineCore::step() {
  if (config_.async_scheduling) step_async();
  else step_sync();
}

// Assembles the flat batch; spans point into each sequence's token vector, which does not change until the
// samples are appended (sync), or until the next submit (async: the runner reads spans only during submit()).
// A sequence with a pending sample (async) decodes its stand-in token: the runner fills in the sample of the
// step before, and output_tokens leaves the stand-in out.
void EngineCore::assemble(const SchedulerOutput& sched, StepBatch* batch, double start) {
  batch->tokens.clear();
  batch->positions.clear();
  batch->seqs.clear();
  for (const ScheduledSeq& s : sched.seqs) {
    Sequence* seq = s.seq;
    if (seq->timings.first_scheduled == 0.0) seq->timings.first_scheduled = start;
    SequenceStep ss;
    ss.seq_id = seq->id;
    ss.token_offset = int32_t(batch->tokens.size());
    ss.num_tokens = s.num_new_tokens;
    ss.context_len = seq->num_computed_tokens + s.num_new_tokens;
    ss.block_table = seq->blocks.ids;
    ss.sliding_block_table = seq->sliding_blocks.ids;  // empty with one KV group
    ss.sample = ss.context_len == seq->num_tokens();
    ss.sampling = &seq->request.sampling;
    ss.prompt_tokens = seq->prompt();
    ss.output_tokens = seq->output();
    for (int p = seq->num_computed_tokens; p < ss.context_len; ++p) {
      batch->tokens.push_back(seq->tokens[size_t(p)]);
      batch->positions.push_back(p);
    }
    if (seq->pending_sample) {
      // The scheduler gives a sequence with a pending sample exactly its one uncomputed token (the stand-in).
      MXS_CHECK(ss.num_tokens == 1 && ss.context_len == seq->num_tokens(),
                "internal: a pending sample must be its sequence's only new token");
      ss.input_from_last_sample = true;
      batch->tokens.back() = 0;
      ss.output_tokens = ss.output_tokens.first(ss.output_tokens.size() - 1);
    }
    batch->seqs.push_back(ss);
  }
  // Structured outputs: the constrained sequences' allowed-token masks. A sequence whose input is the sample of the
  // step in flight (async) cannot have its mask yet: deferred, the runner gets it from supply_deferred_masks().
  std::vector<size_t> masked;
  for (size_t i = 0; i < batch->seqs.size(); ++i) {
    SequenceStep& q = batch->seqs[i];
    if (!q.sample || !sched.seqs[i].seq->constraint) continue;
    if (!q.input_from_last_sample)
      masked.push_back(i);
    else if (sched.seqs[i].seq->constraint->may_restrict_after_next())
      q.allowed_tokens_deferred = true;  // (else the step is unrestricted whatever the token in flight is)
  }
  const std::vector<std::span<const uint32_t>> masks = compute_masks(sched, masked);
  for (size_t k = 0; k < masked.size(); ++k) batch->seqs[masked[k]].allowed_tokens = masks[k];
}

std::vector<std::span<const uint32_t>> EngineCore::compute_masks(const SchedulerOutput& sched,
                                                                 const std::vector<size_t>& rows) {
  // On the pool's threads: each walks the vocabulary's tries or copies a cached mask (~2-90 us); 64 JSON requests
  // would otherwise add milliseconds to a step.
  std::vector<char> restricted(rows.size(), 0);
  auto compute = [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; ++k) {
      Sequence* seq = sched.seqs[rows[size_t(k)]].seq;
      if (seq->status == SeqStatus::kFinished) continue;  // (async: finished by the step before; sample discarded)
      restricted[size_t(k)] = seq->constraint->allowed(&seq->allowed_mask);
    }
  };
  if (rows.size() == 1)
    compute(0, 1);
  else if (rows.size() > 1)
    ThreadPool::global().parallel_for(int64_t(rows.size()), compute);
  std::vector<std::span<const uint32_t>> masks(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    if (!restricted[k]) continue;
    Sequence* seq = sched.seqs[rows[k]].seq;
    MXS_CHECK(seq->allowed_mask.size() == size_t(vocab_size_ + 31) / 32,
              strfmt("internal: a token constraint's mask has %zu words for a vocabulary of %d",
                     seq->allowed_mask.size(), vocab_size_));
    masks[k] = seq->allowed_mask;
  }
  return masks;
}

void EngineCore::supply_deferred_masks(Flight* f) {
  if (!f->masks_pending) return;
  f->masks_pending = false;
  std::vector<size_t> rows;
  for (size_t i = 0; i < f->batch.seqs.size(); ++i)
    if (f->batch.seqs[i].allowed_tokens_deferred) rows.push_back(i);
  if (rows.empty()) return;
  const std::vector<std::span<const uint32_t>> masks = compute_masks(f->sched, rows);
  try {
    runner_.supply_masks(masks);
  } catch (const std::exception& e) {  // (the step's collect then fails too)
    MXS_LOG_ERROR("runner supply_masks failed (%zu sequences): %s", f->sched.seqs.size(), e.what());
    fail_batch(f->sched, strfmt("the %s backend failed on this step: %s", runner_.name().c_str(), e.what()));
  }
}

// Samples come in batch order, one per sequence that asked. Async: a sequence retired while the step was
// outstanding (finished by the step before, or aborted) has its sample discarded.
void EngineCore::process_samples(const SchedulerOutput& sched, const StepBatch& batch, const StepOutput& out) {
  const double now = now_seconds();
  size_t next = 0;
  for (size_t i = 0; i < batch.seqs.size(); ++i) {
    if (!batch.seqs[i].sample) continue;
    Sequence* seq = sched.seqs[i].seq;
    const bool have = next < out.samples.size() && out.samples[next].seq_id == seq->id;
    if (seq->status == SeqStatus::kFinished) {
      if (have) ++next;
      continue;
    }
    if (!have) {
      TokenEvent ev;
      ev.error = strfmt("the %s backend returned no sample for this request", runner_.name().c_str());
      finish(seq, std::move(ev), FinishReason::kError);
      continue;
    }
    process_sample(seq, out.samples[next++], now);
  }
}

void EngineCore::step_sync() {
  if (!scheduler_.has_work()) return;
  Stopwatch watch;
  SchedulerOutput sched = scheduler_.schedule();
  if (sched.empty()) {
    // Cannot happen for validated requests (each fits the pool alone, and older ones preempt newer ones);
    // fail the head of the queue rather than spin.
    if (scheduler_.num_running() == 0 && scheduler_.num_waiting() > 0) {
      TokenEvent ev;
      ev.error = "internal: the scheduler could not place this request in an idle KV pool";
      MXS_LOG_ERROR("%s", ev.error.c_str());
      finish(scheduler_.waiting().front(), std::move(ev), FinishReason::kError);
    }
    return;
  }
  counters_.kv_usage_peak = std::max(counters_.kv_usage_peak, kv_.full().usage());

  assemble(sched, &batch_, now_seconds());
  counters_.computed_tokens += uint64_t(sched.num_tokens);

  step_out_.samples.clear();
  try {
    runner_.step(batch_, &step_out_);
  } catch (const std::exception& e) {
    MXS_LOG_ERROR("runner step failed (%zu sequences, %d tokens): %s", sched.seqs.size(), sched.num_tokens, e.what());
    fail_batch(sched, strfmt("the %s backend failed on this step: %s", runner_.name().c_str(), e.what()));
    return;
  }
  scheduler_.on_step_done(sched);
  process_samples(sched, batch_, step_out_);
  ++counters_.steps;
  counters_.step_seconds += watch.seconds();
  if (config_.check_invariants) scheduler_.check_invariants();
}

bool EngineCore::launch() {
  SchedulerOutput sched = scheduler_.schedule();
  if (sched.empty()) {
    // As in step_sync, but only when nothing is outstanding: retired sequences may still hold blocks.
    if (flights_.empty() && scheduler_.num_running() == 0 && scheduler_.num_waiting() > 0) {
      TokenEvent ev;
      ev.error = "internal: the scheduler could not place this request in an idle KV pool";
      MXS_LOG_ERROR("%s", ev.error.c_str());
      finish(scheduler_.waiting().front(), std::move(ev), FinishReason::kError);
    }
    return false;
  }
  counters_.kv_usage_peak = std::max(counters_.kv_usage_peak, kv_.full().usage());
  auto f = std::make_unique<Flight>();
  f->id = next_step_id_++;
  f->sched = std::move(sched);
  assemble(f->sched, &f->batch, now_seconds());
  for (const SequenceStep& q : f->batch.seqs) f->masks_pending |= q.allowed_tokens_deferred;
  try {
    runner_.submit(f->batch);
  } catch (const std::exception& e) {
    MXS_LOG_ERROR("runner submit failed (%zu sequences, %d tokens): %s", f->sched.seqs.size(), f->sched.num_tokens,
                  e.what());
    fail_batch(f->sched, strfmt("the %s backend failed on this step: %s", runner_.name().c_str(), e.what()));
    return false;
  }
  counters_.computed_tokens += uint64_t(f->sched.num_tokens);
  for (const ScheduledSeq& s : f->sched.seqs) s.seq->last_step = f->id;
  flights_.push_back(std::move(f));
  return true;
}

void EngineCore::release(Flight* f) {
  for (auto& seq : f->retired) scheduler_.release(seq.get());
  f->retired.clear();
}

void EngineCore::step_async() {
  Stopwatch watch;
  if (flights_.empty() && !launch()) return;
  Flight* cur = flights_.front().get();
  // Overlap: account step N as done (the runner writes its KV before it runs N + 1: one stream), give each
  // sequence sampling in N a stand-in for that sample, then schedule and submit N + 1. A sequence that ends
  // by length at N whatever it samples gets no stand-in (the scheduler skips it: no wasted row). A step that
  // samples a constrained sequence is overlapped too: N + 1's mask for it needs N's sample, so it is deferred
  // (assemble) and handed to the runner once N has been collected and its samples accepted (below), while the
  // runner computes N + 1's forward pass. With MXS_CONSTRAINED_SYNC such a step is not overlapped at all.
  bool constrained = false;
  for (size_t i = 0; i < cur->batch.seqs.size(); ++i)
    constrained |= cur->batch.seqs[i].sample && cur->sched.seqs[i].seq->constraint != nullptr &&
                   cur->sched.seqs[i].seq->status != SeqStatus::kFinished;
  if (flights_.size() == 1 && (!constrained || defer_masks_)) {
    scheduler_.on_step_done(cur->sched);
    cur->done_applied = true;
    for (size_t i = 0; i < cur->batch.seqs.size(); ++i) {
      Sequence* seq = cur->sched.seqs[i].seq;
      if (!cur->batch.seqs[i].sample || seq->status == SeqStatus::kFinished) continue;
      if (seq->num_output_tokens() + 1 >= seq->max_tokens) continue;
      seq->tokens.push_back(0);  // overwritten by N's sample in process_sample
      seq->pending_sample = true;
    }
    if (launch()) ++counters_.overlapped_steps;
  }

  step_out_.samples.clear();
  try {
    runner_.collect(&step_out_);
  } catch (const std::exception& e) {
    MXS_LOG_ERROR("runner step failed (%zu sequences, %d tokens): %s", cur->sched.seqs.size(), cur->sched.num_tokens,
                  e.what());
    fail_batch(cur->sched, strfmt("the %s backend failed on this step: %s", runner_.name().c_str(), e.what()));
    release(cur);
    flights_.pop_front();
    if (!flights_.empty()) supply_deferred_masks(flights_.front().get());
    return;
  }
  if (!cur->done_applied) scheduler_.on_step_done(cur->sched);
  process_samples(cur->sched, cur->batch, step_out_);
  release(cur);
  flights_.pop_front();
  if (!flights_.empty()) supply_deferred_masks(flights_.front().get());
  ++counters_.steps;
  counters_.step_seconds += watch.seconds();
  if (config_.check_invariants) scheduler_.check_invariants();
}

void EngineCore::drain() {
  while (!flights_.empty()) {
    Flight* f = flights_.front().get();
    step_out_.samples.clear();
    try {
      supply_deferred_masks(f);  // (the runner holds the step's sampling until then)
      runner_.collect(&step_out_);
    } catch (const std::exception& e) {
      MXS_LOG_ERROR("runner step failed while draining: %s", e.what());
    }
    fail_batch(f->sched, "the engine stopped while this step was running");
    release(f);
    flights_.pop_front();
  }
}

EngineCore::~EngineCore() { drain(); }

void EngineCore::process_sample(Sequence* seq, const SampleOutput& sample, double now) {
  TokenEvent ev;
  ev.request_id = seq->id;
  if (!sample.ok || sample.token < 0 || sample.token >= vocab_size_) {
    ev.error = !sample.ok ? sample.error
                          : strfmt("the sampler returned token %d, outside the vocabulary [0, %d)", sample.token,
                                   vocab_size_);
    finish(seq, std::move(ev), FinishReason::kError);
    return;
  }
  const int32_t token = sample.token;
  if (seq->pending_sample) {  // async: the stand-in the next step already decoded (the runner used this token)
    seq->tokens.back() = token;
    seq->pending_sample = false;
  } else {
    seq->tokens.push_back(token);
  }
  ++counters_.generation_tokens;
  if (seq->timings.first_token == 0.0) seq->timings.first_token = now;
  seq->timings.token_times.push_back(now);
  ev.token_ids.push_back(token);
  if (seq->constraint && !seq->constraint->accept(token)) {
    ev.error = strfmt("the sampled token %d breaks the constraint (response format or tool arguments)", token);
    finish(seq, std::move(ev), FinishReason::kError);
    return;
  }
  const SamplingParams& sp = seq->request.sampling;
  if (sp.logprobs) ev.logprobs.push_back(sample.logprob);
  if (sp.top_logprobs > 0) ev.top.push_back(sample.top);

  const Request& r = seq->request;
  const bool stop_token = !r.ignore_stop_tokens &&
                          std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), token) != r.stop_token_ids.end();
  if (stop_token) {
    ev.stop_token = token;
    finish(seq, std::move(ev), FinishReason::kStop);
    return;
  }
  try {
    ev.text = seq->text.feed(token);
  } catch (const std::exception& e) {
    ev.error = strfmt("detokenizing token %d failed: %s", token, e.what());
    finish(seq, std::move(ev), FinishReason::kError);
    return;
  }
  if (seq->text.stopped()) {
    ev.stop_string = seq->text.matched_stop();
    finish(seq, std::move(ev), FinishReason::kStop);
  } else if (seq->num_output_tokens() >= seq->max_tokens) {
    finish(seq, std::move(ev), FinishReason::kLength);
  } else if (seq->events) {
    outbox_.emplace_back(seq->events, std::move(ev));
  }
}

EngineMetrics EngineCore::metrics() const {
  EngineMetrics m = counters_;
  m.num_running = scheduler_.num_running();
  m.num_waiting = scheduler_.num_waiting();
  m.kv_blocks_total = kv_.full().num_blocks();
  m.kv_blocks_used = kv_.full().num_used_blocks();
  m.kv_usage = kv_.full().usage();
  if (const BlockManager* sliding = kv_.sliding()) {
    m.kv_sliding_blocks_total = sliding->num_blocks();
    m.kv_sliding_blocks_used = sliding->num_used_blocks();
  }
  m.prefix_query_tokens = kv_.prefix_stats().query_tokens;
  m.prefix_hit_tokens = kv_.prefix_stats().hit_tokens;
  m.preemptions = scheduler_.num_preemptions();
  return m;
}

}  // namespace mxs
