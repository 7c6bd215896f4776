// Prometheus metrics registry and text exposition (see metrics.h).
#include "server/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"

namespace mxs::server {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

bool valid_name(const std::string& n) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    const char c = n[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// HELP text escaping: backslash and newline (exposition format rules).
std::string escape_help(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

}  // namespace

void Counter::inc(double v) {
  if (v > 0) atomic_add(value_, v);  // counters only go up
}

void Gauge::add(double v) {
  atomic_add(value_, v);
}

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  MXS_CHECK(std::is_sorted(bounds_.begin(), bounds_.end()) &&
                std::adjacent_find(bounds_.begin(), bounds_.end()) == bounds_.end(),
            "histogram bucket bounds must be strictly increasing");
  counts_.assign(bounds_.size() + 1, 0);
}

void Histogram::observe(double v) {
  if (!std::isfinite(v)) return;
  const size_t i = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard<std::mutex> lock(mu_);
  counts_[i] += 1;
  sum_ += v;
  count_ += 1;
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.bounds = bounds_;
  std::lock_guard<std::mutex> lock(mu_);
  s.cumulative.resize(counts_.size());
  uint64_t acc = 0;
  for (size_t i = 0; i < counts_.size(); ++i) s.cumulative[i] = (acc += counts_[i]);
  s.sum = sum_;
  s.count = count_;
  return s;
}

std::vector<double> latency_buckets_s() {
  return {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 300};
}

std::vector<double> token_time_buckets_s() {
  return {0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 10};
}

std::string prometheus_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  } else {
    std::snprintf(buf, sizeof buf, "%.9g", v);
  }
  return buf;
}

MetricsRegistry::Family& MetricsRegistry::add(const std::string& name, const std::string& help, Kind kind) {
  MXS_CHECK(valid_name(name), strfmt("invalid metric name '%s'", name.c_str()));
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& f : families_) {
    MXS_CHECK(f->name != name, strfmt("metric '%s' registered twice", name.c_str()));
  }
  families_.push_back(std::make_unique<Family>());
  Family& f = *families_.back();
  f.name = name;
  f.help = help;
  f.kind = kind;
  return f;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help) {
  Family& f = add(name, help, Kind::kCounter);
  f.counter = std::make_unique<Counter>();
  return *f.counter;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help) {
  Family& f = add(name, help, Kind::kGauge);
  f.gauge = std::make_unique<Gauge>();
  return *f.gauge;
}

void MetricsRegistry::gauge_fn(const std::string& name, const std::string& help, std::function<double()> read) {
  Family& f = add(name, help, Kind::kGaugeFn);
  f.read = std::move(read);
}

void MetricsRegistry::counter_fn(const std::string& name, const std::string& help, std::function<double()> read) {
  Family& f = add(name, help, Kind::kCounterFn);
  f.read = std::move(read);
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help, std::vector<double> bounds) {
  auto h = std::make_unique<Histogram>(std::move(bounds));  // validates before registering the name
  Family& f = add(name, help, Kind::kHistogram);
  f.histogram = std::move(h);
  return *f.histogram;
}

std::string MetricsRegistry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& f : families_) {
    out += "# HELP " + f->name + " " + escape_help(f->help) + "\n";
    switch (f->kind) {
      case Kind::kCounter:
        out += "# TYPE " + f->name + " counter\n";
        out += f->name + " " + prometheus_value(f->counter->value()) + "\n";
        break;
      case Kind::kCounterFn:
        out += "# TYPE " + f->name + " counter\n";
        out += f->name + " " + prometheus_value(f->read()) + "\n";
        break;
      case Kind::kGauge:
        out += "# TYPE " + f->name + " gauge\n";
        out += f->name + " " + prometheus_value(f->gauge->value()) + "\n";
        break;
      case Kind::kGaugeFn:
        out += "# TYPE " + f->name + " gauge\n";
        out += f->name + " " + prometheus_value(f->read()) + "\n";
        break;
      case Kind::kHistogram: {
        out += "# TYPE " + f->name + " histogram\n";
        const Histogram::Snapshot s = f->histogram->snapshot();
        for (size_t i = 0; i < s.bounds.size(); ++i) {
          out += f->name + "_bucket{le=\"" + prometheus_value(s.bounds[i]) + "\"} " +
                 prometheus_value(double(s.cumulative[i])) + "\n";
        }
        out += f->name + "_bucket{le=\"+Inf\"} " + prometheus_value(double(s.count)) + "\n";
        out += f->name + "_sum " + prometheus_value(s.sum) + "\n";
        out += f->name + "_count " + prometheus_value(double(s.count)) + "\n";
        break;
      }
    }
  }
  return out;
}

}  // namespace mxs::server
