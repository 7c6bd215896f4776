// The engine loop: one thread owns the runner, the KV pool and all sequence state (an EngineCore) and
// runs steps back to back. Other threads talk to it only through queues of native types: submit()/cancel()
// go in, TokenEvents come out on each request's EventQueue. Cancellation takes effect (blocks freed, a
// final kAbort event) at the next step boundary.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/engine_core.h"

namespace mxs {

class Engine {
 public:
  // Starts the loop thread. runner and tokenizer (may be nullptr) must outlive the engine.
  Engine(ModelRunner& runner, const Tokenizer* tokenizer, const EngineConfig& config);
  ~Engine();  // stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; returns its id. Throws mxs::Error (with both numbers) when it can never run, so a
  // caller learns at once instead of waiting. Its events, the last one with finish set, go to `events`.
  uint64_t submit(Request request, std::shared_ptr<EventQueue> events);
  void cancel(uint64_t id);
  // Aborts every request (each gets its final kAbort event) and joins the loop thread. Idempotent.
  void stop();

  int validate(const Request& request) const { return core_.validate(request); }  // effective max_tokens
  const EngineConfig& config() const { return core_.config(); }
  const KvCacheLayout& kv_layout() const { return core_.kv_layout(); }
  int vocab_size() const { return core_.vocab_size(); }  // the model's (token ids and masks span it)
  EngineMetrics metrics() const;  // as of the last step

 private:
  struct Submission {
    uint64_t id;
    Request request;
    std::shared_ptr<EventQueue> events;
  };
  void loop();
  void publish();  // metrics snapshot, then the step's events

  EngineCore core_;  // engine thread only (validate() excepted)
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Submission> inbox_;
  std::vector<uint64_t> cancels_;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  EngineMetrics metrics_;
  std::thread thread_;
};

}  // namespace mxs
