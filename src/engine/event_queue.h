// A thread-safe FIFO of TokenEvents from the engine thread to a consumer (an HTTP handler, the offline
// API). One queue may carry the events of many requests (TokenEvent::request_id tells them apart).
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "engine/request.h"

namespace mxs {

class EventQueue {
 public:
  // Called (on the engine thread, after the push, without the queue's lock) for every event: e.g. to
  // post a wake-up into an Asio strand. Set it before submitting requests that use this queue.
  void set_notify(std::function<void()> notify) { notify_ = std::move(notify); }

  void push(TokenEvent event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
    if (notify_) notify_();
  }

  // Waits up to timeout_s (< 0: forever) for an event; false on timeout.
  bool pop(TokenEvent* out, double timeout_s = -1.0) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return !events_.empty(); };
    if (timeout_s < 0) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_for(lock, std::chrono::duration<double>(timeout_s), ready)) {
      return false;
    }
    *out = std::move(events_.front());
    events_.pop_front();
    return true;
  }

  bool try_pop(TokenEvent* out) { return pop(out, 0.0); }

  std::vector<TokenEvent> drain() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<TokenEvent> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_.size();
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TokenEvent> events_;
  std::function<void()> notify_;
};

}  // namespace mxs
