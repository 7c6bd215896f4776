// Engine: the loop thread around EngineCore and its inbox (engine.h).
#include "engine/engine.h"

#include <exception>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"

namespace mxs {

Engine::Engine(ModelRunner& runner, const Tokenizer* tokenizer, const EngineConfig& config)
    : core_(runner, tokenizer, config) {
  metrics_ = core_.metrics();
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() { stop(); }

uint64_t Engine::submit(Request request, std::shared_ptr<EventQueue> events) {
  core_.validate(request);  // throws: never queued
  if (request.arrival_time <= 0.0) request.arrival_time = now_seconds();
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    MXS_CHECK(!stopping_, "the engine is shutting down");
    id = next_id_++;
    inbox_.push_back({id, std::move(request), std::move(events)});
  }
  cv_.notify_one();
  return id;
}

void Engine::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.push_back(id);
  }
  cv_.notify_one();
}

void Engine::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

EngineMetrics Engine::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

void Engine::loop() {
  for (;;) {
    std::vector<Submission> inbox;
    std::vector<uint64_t> cancels;
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !inbox_.empty() || !cancels_.empty() || core_.has_work(); });
      inbox.swap(inbox_);
      cancels.swap(cancels_);
      stopping = stopping_;
    }
    // Step boundary: admit, then cancel (a request cancelled right after submit is admitted and aborted).
    for (Submission& s : inbox) {
      try {
        core_.add(s.id, std::move(s.request), s.events);
      } catch (const std::exception& e) {  // validated in submit(); only a duplicate id could land here
        TokenEvent ev;
        ev.request_id = s.id;
        ev.finish = FinishReason::kError;
        ev.error = e.what();
        if (s.events) s.events->push(std::move(ev));
      }
    }
    for (uint64_t id : cancels) core_.abort(id);
    if (stopping) {
      core_.abort_all();
      publish();
      return;
    }
    try {
      core_.step();
    } catch (const std::exception& e) {
      // A broken invariant: a bug. Fail everything in flight rather than take the process down.
      MXS_LOG_ERROR("engine step failed, aborting all requests: %s", e.what());
      core_.abort_all();
    }
    publish();
  }
}

void Engine::publish() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    metrics_ = core_.metrics();
  }
  core_.deliver_events();
}

}  // namespace mxs
