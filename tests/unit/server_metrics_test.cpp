// Prometheus text exposition: counters, gauges, histograms (cumulative buckets, +Inf, _sum, _count).
#include <gtest/gtest.h>

#include <thread>

#include "common/error.h"
#include "server/metrics.h"

namespace mxs::server {
namespace {

TEST(ServerMetrics, RendersTheTextFormat) {
  MetricsRegistry r;
  Counter& c = r.counter("mxs_requests_total", "Requests");
  Gauge& g = r.gauge("mxs_waiting", "Waiting\nrequests");
  r.gauge_fn("mxs_usage", "Usage", [] { return 0.25; });
  r.counter_fn("mxs_tokens_total", "Tokens", [] { return 1e6; });
  Histogram& h = r.histogram("mxs_latency_seconds", "Latency", {0.1, 1.0});
  c.inc();
  c.inc(2);
  c.inc(-5);  // ignored: counters never go down
  g.set(3);
  g.add(-1);
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.1);  // le is inclusive
  h.observe(7);
  EXPECT_EQ(r.render(),
            "# HELP mxs_requests_total Requests\n# TYPE mxs_requests_total counter\nmxs_requests_total 3\n"
            "# HELP mxs_waiting Waiting\\nrequests\n# TYPE mxs_waiting gauge\nmxs_waiting 2\n"
            "# HELP mxs_usage Usage\n# TYPE mxs_usage gauge\nmxs_usage 0.25\n"
            "# HELP mxs_tokens_total Tokens\n# TYPE mxs_tokens_total counter\nmxs_tokens_total 1000000\n"
            "# HELP mxs_latency_seconds Latency\n# TYPE mxs_latency_seconds histogram\n"
            "mxs_latency_seconds_bucket{le=\"0.1\"} 2\nmxs_latency_seconds_bucket{le=\"1\"} 3\n"
            "mxs_latency_seconds_bucket{le=\"+Inf\"} 4\nmxs_latency_seconds_sum 7.65\nmxs_latency_seconds_count 4\n");
}

TEST(ServerMetrics, RejectsBadAndDuplicateNames) {
  MetricsRegistry r;
  r.counter("ok_name", "x");
  EXPECT_THROW(r.counter("ok_name", "x"), Error);
  EXPECT_THROW(r.gauge("9starts_with_digit", "x"), Error);
  EXPECT_THROW(r.gauge("has-dash", "x"), Error);
  EXPECT_THROW(r.histogram("h", "x", {1.0, 0.5}), Error);
}

TEST(ServerMetrics, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  Counter& c = r.counter("c", "x");
  Histogram& h = r.histogram("h", "x", latency_buckets_s());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.01);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000.0);
  EXPECT_EQ(h.snapshot().count, 40000u);
}

TEST(ServerMetrics, ValueFormatting) {
  EXPECT_EQ(prometheus_value(0), "0");
  EXPECT_EQ(prometheus_value(42), "42");
  EXPECT_EQ(prometheus_value(0.001), "0.001");
  EXPECT_EQ(prometheus_value(1.0 / 0.0), "+Inf");
  EXPECT_EQ(prometheus_value(-1.0 / 0.0), "-Inf");
  EXPECT_EQ(prometheus_value(0.0 / 0.0), "NaN");
}

}  // namespace
}  // namespace mxs::server
