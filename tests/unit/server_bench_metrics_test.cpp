// `mxserve bench serve` metric math on synthetic timelines (percentiles, TTFT/TPOT, pooled ITL, goodput, peak
// throughput) and the client's SSE splitting and chunk classification.
#include <gtest/gtest.h>

#include "common/error.h"
#include "server/bench_client.h"
#include "server/bench_metrics.h"

namespace mxs::server::bench {
namespace {

// A request sent at `start` whose output chunks arrive at `chunks`, ending at the last chunk.
RequestRecord timeline(double start, std::vector<double> chunks, int output_tokens, int prompt_tokens = 10) {
  RequestRecord r;
  r.ok = true;
  r.http_status = 200;
  r.start = start;
  r.chunk_times = std::move(chunks);
  r.end = r.chunk_times.empty() ? start : r.chunk_times.back();
  r.output_tokens = output_tokens;
  r.prompt_tokens = prompt_tokens;
  return r;
}

TEST(BenchMetrics, PercentilesInterpolateLikeNumpy) {
  EXPECT_DOUBLE_EQ(percentile({5, 1, 4, 2, 3}, 50), 3.0);
  EXPECT_DOUBLE_EQ(percentile({1, 2, 3, 4, 5}, 90), 4.6);
  EXPECT_NEAR(percentile({1, 2, 3, 4, 5}, 99), 4.96, 1e-12);
  EXPECT_DOUBLE_EQ(percentile({1, 2}, 50), 1.5);
  EXPECT_DOUBLE_EQ(percentile({7}, 99), 7.0);
  EXPECT_DOUBLE_EQ(percentile({}, 50), 0.0);
  const Distribution d = summarize({4, 1, 3, 2});
  EXPECT_EQ(d.count, 4);
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.median, 2.5);
  EXPECT_NEAR(d.p90, 3.7, 1e-12);
}

TEST(BenchMetrics, TtftTpotE2eOfOneRequest) {
  // Sent at 1.0 s; first chunk 100 ms later; 5 tokens over 4 more chunks ending at 1.5 s.
  const RequestRecord r = timeline(1.0, {1.1, 1.2, 1.3, 1.5}, 5);
  EXPECT_NEAR(ttft_ms(r), 100.0, 1e-9);
  EXPECT_NEAR(e2e_ms(r), 500.0, 1e-9);
  EXPECT_NEAR(tpot_ms(r), 400.0 / 4, 1e-9);  // (e2e - ttft) / (tokens - 1)
  const std::vector<double> itl = itl_ms(r);
  ASSERT_EQ(itl.size(), 3u);
  EXPECT_NEAR(itl[0], 100.0, 1e-9);
  EXPECT_NEAR(itl[2], 200.0, 1e-9);
  // One token: no TPOT.
  EXPECT_LT(tpot_ms(timeline(0, {0.2}, 1)), 0);
}

TEST(BenchMetrics, ItlIsPooledOverRequests) {
  // Gaps of 10 ms (x2) in one request and 30 ms (x1) in the other: pooled, not averaged per request.
  const Summary s = summarize_run({timeline(0, {0.1, 0.11, 0.12}, 3), timeline(0, {0.2, 0.23}, 2)}, {});
  EXPECT_EQ(s.itl.count, 3);
  EXPECT_NEAR(s.itl.mean, 50.0 / 3, 1e-9);
  EXPECT_NEAR(s.itl.median, 10.0, 1e-9);
  EXPECT_EQ(s.ttft.count, 2);
  EXPECT_NEAR(s.ttft.mean, 150.0, 1e-9);
}

TEST(BenchMetrics, ThroughputsGoodputAndFailures) {
  std::vector<RequestRecord> rs = {
      timeline(0.0, {0.1, 0.2, 0.3}, 3),  // ttft 100, tpot 100
      timeline(0.0, {0.5, 0.6, 0.7}, 3),  // ttft 500, tpot 100
      timeline(1.0, {1.1, 2.0}, 2),       // ttft 100, tpot 900
  };
  RequestRecord failed;
  failed.start = 0.5;
  failed.end = 0.6;
  failed.error = "boom";
  rs.push_back(failed);
  const Summary s = summarize_run(rs, parse_goodput("ttft:200,tpot:150"));
  EXPECT_EQ(s.completed, 3);
  EXPECT_EQ(s.failed, 1);
  EXPECT_DOUBLE_EQ(s.duration_s, 2.0);
  EXPECT_EQ(s.total_output_tokens, 8);
  EXPECT_EQ(s.total_input_tokens, 30);
  EXPECT_DOUBLE_EQ(s.request_throughput, 1.5);
  EXPECT_DOUBLE_EQ(s.output_throughput, 4.0);
  EXPECT_DOUBLE_EQ(s.total_token_throughput, 19.0);
  EXPECT_TRUE(s.has_slo);
  EXPECT_DOUBLE_EQ(s.goodput, 0.5);  // only the first request meets both SLOs
  // 1 s buckets: [0, 1) holds 3 + 3 tokens, [1, 2) one, [2, 3) one.
  EXPECT_DOUBLE_EQ(s.peak_output_throughput, 6.0);
  // Without an SLO there is no goodput.
  EXPECT_FALSE(summarize_run(rs, {}).has_slo);
}

TEST(BenchMetrics, TimeToFirstAnswerComesAfterReasoning) {
  RequestRecord r = timeline(0, {0.1, 0.2, 0.4}, 3);
  r.first_answer = 0.4;
  RequestRecord no_answer = timeline(0, {0.1}, 1);
  const Summary s = summarize_run({r, no_answer}, {});
  EXPECT_EQ(s.ttfa.count, 1);
  EXPECT_NEAR(s.ttfa.mean, 400.0, 1e-9);
}

TEST(BenchMetrics, GoodputSpecErrors) {
  EXPECT_THROW(parse_goodput("ttft"), Error);
  EXPECT_THROW(parse_goodput("ttft:abc"), Error);
  EXPECT_THROW(parse_goodput("foo:10"), Error);
  const Slo slo = parse_goodput("e2el:2000");
  EXPECT_DOUBLE_EQ(slo.e2e_ms, 2000.0);
}

TEST(BenchClient, SseSplitsAcrossReadsAndLineEndings) {
  SseSplitter sse;
  EXPECT_TRUE(sse.feed("data: {\"a\"").empty());
  std::vector<std::string> got = sse.feed(":1}\n\ndata: [DONE]\r\n\r\n: comment\n\n");
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "{\"a\":1}");
  EXPECT_EQ(got[1], "[DONE]");
  got = sse.feed("data: x\ndata: y\n\n");
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], "x\ny");
}

TEST(BenchClient, ChunksAreClassified) {
  using nlohmann::json;
  const ChunkInfo role = classify_chunk(json::parse(R"({"choices":[{"delta":{"role":"assistant","content":""}}]})"));
  EXPECT_FALSE(role.output);
  const ChunkInfo reasoning = classify_chunk(json::parse(R"({"choices":[{"delta":{"reasoning_content":"hm"}}]})"));
  EXPECT_TRUE(reasoning.output);
  EXPECT_FALSE(reasoning.answer);
  const ChunkInfo answer = classify_chunk(json::parse(R"({"choices":[{"delta":{"content":"Hi"}}]})"));
  EXPECT_TRUE(answer.output && answer.answer);
  const ChunkInfo text = classify_chunk(json::parse(R"({"choices":[{"text":"x","index":0}]})"));
  EXPECT_TRUE(text.output && text.answer);
  const ChunkInfo usage = classify_chunk(json::parse(
      R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":9,"completion_tokens_details":{"reasoning_tokens":4}}})"));
  EXPECT_FALSE(usage.output);
  EXPECT_TRUE(usage.has_usage);
  EXPECT_EQ(usage.prompt_tokens, 7);
  EXPECT_EQ(usage.completion_tokens, 9);
  EXPECT_EQ(usage.reasoning_tokens, 4);
  EXPECT_EQ(classify_chunk(json::parse(R"({"error":{"message":"shutting down"}})")).error, "shutting down");
}

TEST(BenchClient, UrlParsing) {
  const Target t = parse_url("http://127.0.0.1:8123/v1/");
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, "8123");
  EXPECT_EQ(t.base_path, "");
  EXPECT_EQ(parse_url("http://example:80/proxy").base_path, "/proxy");
  EXPECT_THROW(parse_url("https://x:1"), Error);
  EXPECT_THROW(parse_url("http://x:port"), Error);
}

}  // namespace
}  // namespace mxs::server::bench
