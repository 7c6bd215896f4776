// Prometheus metrics: counters, gauges (set or read through a callback) and histograms with fixed buckets,
// rendered in the text exposition format (version 0.0.4). Updates are thread-safe and lock-free except for
// histograms (one short mutex per observation); render() may run concurrently with updates.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace mxs::server {

class Counter {
 public:
  void inc(double v = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Cumulative histogram: bucket i counts observations <= bounds[i]; +Inf is implicit.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // [bounds.size() + 1], last = count (+Inf)
    double sum = 0.0;
    uint64_t count = 0;
  };
  Snapshot snapshot() const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; [bounds.size() + 1]
  double sum_ = 0.0;
  uint64_t count_ = 0;
};

// Latency buckets in seconds, from 1 ms to 5 min (TTFT, queue time, e2e).
std::vector<double> latency_buckets_s();
// Finer buckets for per-token times (TPOT, ITL), 1 ms to 10 s.
std::vector<double> token_time_buckets_s();

// A set of named metrics in registration order. Names follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*);
// registering a bad or duplicate name throws mxs::Error (a programming error caught at start-up).
class MetricsRegistry {
 public:
  Counter& counter(const std::string& name, const std::string& help);
  Gauge& gauge(const std::string& name, const std::string& help);
  // A gauge read at render time (e.g. engine queue lengths owned by another thread).
  void gauge_fn(const std::string& name, const std::string& help, std::function<double()> read);
  // A counter owned elsewhere (e.g. the engine's), read at render time.
  void counter_fn(const std::string& name, const std::string& help, std::function<double()> read);
  Histogram& histogram(const std::string& name, const std::string& help, std::vector<double> bounds);

  std::string render() const;  // text/plain; version=0.0.4

 private:
  enum class Kind { kCounter, kCounterFn, kGauge, kGaugeFn, kHistogram };
  struct Family {
    std::string name, help;
    Kind kind;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::function<double()> read;
    std::unique_ptr<Histogram> histogram;
  };
  Family& add(const std::string& name, const std::string& help, Kind kind);

  mutable std::mutex mu_;  // guards families_ (registration vs render); metric updates do not take it
  std::vector<std::unique_ptr<Family>> families_;
};

// Formats a sample value the way Prometheus expects (integers without exponent, +Inf/-Inf/NaN spelled out).
std::string prometheus_value(double v);

}  // namespace mxs::server
