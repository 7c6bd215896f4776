// Sampler: greedy ties, each filter on hand-made logits, penalties (OpenAI and HF semantics), seed
// determinism, empirical frequencies vs the filtered distribution, logprobs of the raw logits, logit bias and
// min_tokens.
#include <cmath>
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "cpu/sampler.h"

namespace mxs::cpu {
namespace {

SamplingParams temp(float t) {
  SamplingParams p;
  p.temperature = t;
  return p;
}

// Frequencies of the sampled ids over `n` seeds.
std::map<int32_t, int> histogram(const std::vector<float>& logits, SamplingParams p, int n,
                                 std::vector<int32_t> output = {}) {
  std::map<int32_t, int> h;
  for (int s = 0; s < n; ++s) {
    p.seed = uint64_t(s) * 7919 + 1;
    ++h[sample_token(logits, p, {}, output).token];
  }
  return h;
}

TEST(CpuSampler, GreedyTakesTheFirstIndexOnTies) {
  const std::vector<float> z = {1.0f, 3.0f, -2.0f, 3.0f, 0.5f};
  EXPECT_EQ(sample_token(z, temp(0.0f), {}, {}).token, 1);
}

TEST(CpuSampler, SameSeedSameTokensDifferentSeedsDiffer) {
  std::vector<float> z(1000);
  for (size_t i = 0; i < z.size(); ++i) z[i] = std::sin(float(i) * 0.37f) * 3.0f;
  SamplingParams p = temp(1.0f);
  p.seed = 1234;
  std::vector<int32_t> out1, out2;
  for (int step = 0; step < 20; ++step) {  // the RNG counter is output_tokens.size()
    out1.push_back(sample_token(z, p, {}, out1).token);
    out2.push_back(sample_token(z, p, {}, out2).token);
  }
  EXPECT_EQ(out1, out2);
  p.seed = 99;
  std::vector<int32_t> out3;
  for (int step = 0; step < 20; ++step) out3.push_back(sample_token(z, p, {}, out3).token);
  EXPECT_NE(out1, out3);
}

TEST(CpuSampler, InverseCdfDrawInIdOrderWithTheSharedUniform) {
  // p = (0.25, 0.25, 0.5) for ids 0, 1, 2, walked in id order: u < 0.25 -> 0, u < 0.5 -> 1, else 2.
  const std::vector<float> z = {std::log(0.25f), std::log(0.25f), std::log(0.5f)};
  SamplingParams p = temp(1.0f);
  int seen[3] = {0, 0, 0};
  for (uint64_t seed = 0; seed < 200; ++seed) {
    p.seed = seed;
    const float u = sample_uniform(seed, 0);
    const int32_t expect = u < 0.25f ? 0 : (u < 0.5f ? 1 : 2);
    if (std::fabs(u - 0.5f) < 1e-5f || std::fabs(u - 0.25f) < 1e-5f) continue;
    const int32_t got = sample_token(z, p, {}, {}).token;
    EXPECT_EQ(got, expect) << "u = " << u;
    ++seen[got];
  }
  EXPECT_GT(seen[0], 0);
  EXPECT_GT(seen[1], 0);
  EXPECT_GT(seen[2], 0);
}

TEST(CpuSampler, TopPOnALargeFlatVocabularySortsProgressively) {
  // 5000 ids, a few large ones then a flat tail: top_p must keep exactly the prefix of the sorted order.
  std::vector<float> z(5000);
  for (size_t i = 0; i < z.size(); ++i) z[i] = float((i * 7919) % 5000) * 1e-3f;  // distinct, scattered
  SamplingParams p = temp(1.0f);
  p.top_p = 0.5f;
  // Reference: full sort, the shortest prefix whose units (sampler.h step 7) reach ceil(0.5 x total).
  std::vector<int32_t> order(z.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int32_t(i);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return z[size_t(a)] > z[size_t(b)]; });
  auto units = [&](int32_t id) { return top_p_units(std::exp(z[size_t(id)] - z[size_t(order[0])])); };
  uint64_t total = 0;
  for (int32_t id : order) total += units(id);
  const uint64_t target = uint64_t(std::ceil(0.5 * double(total)));
  uint64_t cum = 0;
  size_t n = 0;
  while (cum < target) cum += units(order[n++]);
  EXPECT_GT(n, 100u);
  EXPECT_LT(n, 4900u);
  const std::set<int32_t> allowed(order.begin(), order.begin() + std::ptrdiff_t(n));
  for (int s = 0; s < 300; ++s) {
    p.seed = uint64_t(s);
    EXPECT_TRUE(allowed.count(sample_token(z, p, {}, {}).token));
  }
}

TEST(CpuSampler, TopKKeepsTheKBest) {
  const std::vector<float> z = {0.0f, 5.0f, 4.9f, 4.8f, 1.0f, 4.7f};
  SamplingParams p = temp(5.0f);  // flat: without top-k every id would show up
  p.top_k = 2;
  const auto h = histogram(z, p, 400);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(1) && h.count(2));
}

TEST(CpuSampler, TopPKeepsTheShortestPrefixReachingP) {
  // p = 0.5, 0.3, 0.15, 0.05: top_p 0.8 keeps {0, 1} (cumulative before id 2 is 0.8, not < 0.8).
  const std::vector<float> z = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p = temp(1.0f);
  p.top_p = 0.79f;
  auto h = histogram(z, p, 600);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_NEAR(double(h[0]) / 600, 0.5 / 0.8, 0.07);
  p.top_p = 0.81f;
  h = histogram(z, p, 600);
  EXPECT_EQ(h.size(), 3u);
  p.top_p = 0.01f;  // the first candidate is always kept
  h = histogram(z, p, 50);
  EXPECT_EQ(h.size(), 1u);
  EXPECT_EQ(h.begin()->first, 0);
}

TEST(CpuSampler, TopPCutsTiesInIdOrderByUnits) {
  // Four equal weights (2^43 units each): top_p 0.5 reaches ceil(0.5 x 4 x 2^43) with the first two of the order,
  // which are the lower ids; 0.5 + 2^-20 needs a third.
  const std::vector<float> z = {2.0f, 2.0f, 2.0f, 2.0f, -40.0f};
  SamplingParams p = temp(1.0f);
  p.top_p = 0.5f;
  auto h = histogram(z, p, 400);
  EXPECT_EQ(h.size(), 2u);
  EXPECT_TRUE(h.count(0) && h.count(1));
  p.top_p = 0.5f + 0x1p-20f;
  h = histogram(z, p, 400);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_TRUE(h.count(0) && h.count(1) && h.count(2));
  EXPECT_EQ(top_p_target(0.5f, 4ull << kTopPUnitBits), 2ull << kTopPUnitBits);
  EXPECT_EQ(top_p_target(1e-30f, 5), 1u);  // at least the best candidate
  EXPECT_EQ(top_p_units(1.0f), 1ull << kTopPUnitBits);
  EXPECT_EQ(top_p_units(0x1p-44f), 0u);
}

TEST(CpuSampler, MinPIsRelativeToTheMostLikely) {
  const std::vector<float> z = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p = temp(1.0f);
  p.min_p = 0.29f;  // keeps p >= 0.145: ids 0, 1, 2
  auto h = histogram(z, p, 600);
  EXPECT_EQ(h.size(), 3u);
  EXPECT_EQ(h.count(3), 0u);
  p.min_p = 0.61f;  // keeps p >= 0.305: id 0 only
  h = histogram(z, p, 100);
  EXPECT_EQ(h.size(), 1u);
}

TEST(CpuSampler, TemperatureSharpensAndFlattens) {
  const std::vector<float> z = {1.0f, 0.0f};
  SamplingParams p = temp(0.25f);  // p0 = 1 / (1 + e^-4) = 0.982
  auto h = histogram(z, p, 1000);
  EXPECT_NEAR(h[0] / 1000.0, 1.0 / (1.0 + std::exp(-4.0)), 0.02);
  p.temperature = 4.0f;  // p0 = 1 / (1 + e^-0.25) = 0.562
  h = histogram(z, p, 2000);
  EXPECT_NEAR(h[0] / 2000.0, 1.0 / (1.0 + std::exp(-0.25)), 0.04);
}

TEST(CpuSampler, FrequencyAndPresencePenaltiesUseOutputCounts) {
  // id 0 leads by 1.0; it appeared 3 times in the output: 1.0 - 3 * 0.2 - 0.5 < 0 -> id 1 wins greedily.
  const std::vector<float> z = {2.0f, 1.0f, 0.0f};
  SamplingParams p = temp(0.0f);
  p.frequency_penalty = 0.2f;
  p.presence_penalty = 0.5f;
  EXPECT_EQ(sample_token(z, p, {}, std::vector<int32_t>{0, 0, 0}).token, 1);
  EXPECT_EQ(sample_token(z, p, {}, std::vector<int32_t>{0}).token, 0);  // 2 - 0.2 - 0.5 = 1.3 > 1
  // Prompt tokens do not count for OpenAI penalties.
  EXPECT_EQ(sample_token(z, p, std::vector<int32_t>{0, 0, 0, 0, 0}, {}).token, 0);
}

TEST(CpuSampler, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingParams p = temp(0.0f);
  p.repetition_penalty = 2.0f;
  // id 0: 3 -> 1.5 (seen in the prompt), id 1: 2 unchanged: id 1 wins.
  EXPECT_EQ(sample_token(std::vector<float>{3.0f, 2.0f}, p, std::vector<int32_t>{0}, {}).token, 1);
  // id 0: -1 -> -2 (seen in the output), id 1: -1.5 unchanged: id 1 wins.
  EXPECT_EQ(sample_token(std::vector<float>{-1.0f, -1.5f}, p, {}, std::vector<int32_t>{0}).token, 1);
  // Applied once per distinct id however often it repeats: 3 -> 1.5, still above 1.4.
  EXPECT_EQ(sample_token(std::vector<float>{3.0f, 1.4f}, p, std::vector<int32_t>{0, 0, 0}, {}).token, 0);
}

TEST(CpuSampler, LogprobsAreOfTheRawLogitsAndSumToOne) {
  std::vector<float> z(300);
  for (size_t i = 0; i < z.size(); ++i) z[i] = std::cos(float(i)) * 4.0f;
  SamplingParams p = temp(0.7f);
  p.logprobs = true;
  p.top_logprobs = 5;
  p.frequency_penalty = 2.0f;  // penalties must not change the reported logprobs
  p.seed = 5;
  const std::vector<int32_t> output = {1, 2, 3};
  const SampleResult r = sample_token(z, p, {}, output);
  double total = 0;
  for (size_t i = 0; i < z.size(); ++i) total += std::exp(double(raw_logprob(z, int32_t(i))));
  EXPECT_NEAR(total, 1.0, 1e-5);
  EXPECT_FLOAT_EQ(r.logprob, raw_logprob(z, r.token));
  ASSERT_EQ(r.top.size(), 5u);
  for (size_t i = 1; i < r.top.size(); ++i) EXPECT_GE(r.top[i - 1].logprob, r.top[i].logprob);
  int32_t best = 0;
  for (size_t i = 1; i < z.size(); ++i)
    if (z[i] > z[size_t(best)]) best = int32_t(i);
  EXPECT_EQ(r.top[0].token, best);
  EXPECT_FLOAT_EQ(r.top[0].logprob, raw_logprob(z, best));
}

TEST(CpuSampler, LogitBiasIsAddedBeforeThePenalties) {
  const std::vector<float> z = {2.0f, 1.0f, 0.0f};
  SamplingParams p = temp(0.0f);
  p.logit_bias = {{1, 1.5f}};  // 1 + 1.5 = 2.5 > 2
  EXPECT_EQ(sample_token(z, p, {}, {}).token, 1);
  p.logit_bias = {{0, -100.0f}, {2, 1.5f}};  // 0 - 98 < 1 < 1.5
  EXPECT_EQ(sample_token(z, p, {}, {}).token, 2);
  // Before the repetition penalty: id 1's (1 + 3) / 2 = 2 ties id 0's 2 (lower id wins); after it, 1 / 2 + 3 = 3.5.
  p.logit_bias = {{1, 3.0f}};
  p.repetition_penalty = 2.0f;
  EXPECT_EQ(sample_token(z, p, std::vector<int32_t>{1}, {}).token, 0);
  // Sampled: a banned token is never drawn; the logprobs stay those of the raw logits.
  SamplingParams t = temp(1.0f);
  t.logit_bias = {{0, -100.0f}};
  t.logprobs = true;
  const auto h = histogram(z, t, 400);
  EXPECT_EQ(h.count(0), 0u);
  t.seed = 3;
  const SampleResult r = sample_token(z, t, {}, {});
  EXPECT_FLOAT_EQ(r.logprob, raw_logprob(z, r.token));
  t.logit_bias = {{7, 1.0f}};  // outside the vocabulary of 3
  EXPECT_THROW(sample_token(z, t, {}, {}), Error);
}

TEST(CpuSampler, MinTokensHoldsBackItsIdsUntilEnoughAreGenerated) {
  const std::vector<float> z = {0.0f, 5.0f, 1.0f};
  SamplingParams p = temp(0.0f);
  p.min_tokens = 2;
  p.min_tokens_ids = {1};
  EXPECT_EQ(sample_token(z, p, {}, {}).token, 2);
  EXPECT_EQ(sample_token(z, p, {}, std::vector<int32_t>{2}).token, 2);
  EXPECT_EQ(sample_token(z, p, {}, std::vector<int32_t>{2, 2}).token, 1);  // 2 generated: allowed again
  // -inf wins over any logit_bias of the same id, and no draw picks it.
  p.logit_bias = {{1, 100.0f}};
  EXPECT_EQ(sample_token(z, p, {}, {}).token, 2);
  SamplingParams t = temp(2.0f);
  t.min_tokens = 1;
  t.min_tokens_ids = {1, 2};
  EXPECT_EQ(histogram(z, t, 200), (std::map<int32_t, int>{{0, 200}}));
}

TEST(CpuSampler, AllowedMaskLeavesOnlyItsTokens) {
  std::vector<float> z(70);
  for (size_t i = 0; i < z.size(); ++i) z[i] = std::sin(float(i)) * 3.0f;
  std::vector<uint32_t> mask(3, 0u);  // ceil(70 / 32) words: ids 5, 33 and 69
  for (int t : {5, 33, 69}) mask[size_t(t) / 32] |= 1u << (t % 32);
  SamplingParams g = temp(0.0f);
  int32_t best = 5;
  for (int t : {33, 69}) if (z[size_t(t)] > z[size_t(best)]) best = t;
  EXPECT_EQ(sample_token(z, g, {}, {}, mask).token, best);
  SamplingParams t = temp(1.5f);
  t.logprobs = true;
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    t.seed = seed;
    const SampleResult r = sample_token(z, t, {}, {}, mask);
    seen.insert(r.token);
    EXPECT_FLOAT_EQ(r.logprob, raw_logprob(z, r.token));  // (logprobs stay those of the raw logits)
  }
  EXPECT_EQ(seen, (std::set<int32_t>{5, 33, 69}));
  EXPECT_THROW(sample_token(z, g, {}, {}, std::vector<uint32_t>(2, ~0u)), Error);  // wrong size
}

TEST(SamplingParams, StepLogitBiasMergesMinTokensIds) {
  SamplingParams p;
  p.logit_bias = {{5, 1.0f}, {9, -2.0f}};
  p.min_tokens = 3;
  p.min_tokens_ids = {9, 4, 4};
  auto at = [&](uint64_t step) {
    std::vector<std::pair<int32_t, float>> v;
    for (const LogitBias& e : step_logit_bias(p, step)) v.emplace_back(e.token, e.bias);
    return v;
  };
  using V = std::vector<std::pair<int32_t, float>>;
  EXPECT_EQ(at(2), (V{{5, 1.0f}, {9, -INFINITY}, {4, -INFINITY}}));  // one entry per token
  EXPECT_EQ(at(3), (V{{5, 1.0f}, {9, -2.0f}}));
  EXPECT_EQ(apply_logit_bias(2.0f, -INFINITY), -INFINITY);
  EXPECT_EQ(apply_logit_bias(INFINITY, -INFINITY), -INFINITY);  // set, not added (inf - inf would be NaN)
  EXPECT_EQ(apply_logit_bias(2.0f, 0.5f), 2.5f);
}

TEST(CpuSampler, RefusesUnusableInput) {
  SamplingParams p = temp(1.0f);
  p.top_p = 0.0f;
  EXPECT_THROW(sample_token(std::vector<float>{1.0f, 2.0f}, p, {}, {}), Error);
  EXPECT_THROW(sample_token(std::vector<float>{1.0f, NAN}, temp(1.0f), {}, {}), Error);
  SamplingParams rp = temp(0.0f);
  rp.repetition_penalty = 1.5f;
  EXPECT_THROW(sample_token(std::vector<float>{1.0f, 2.0f}, rp, std::vector<int32_t>{7}, {}), Error);
}

}  // namespace
}  // namespace mxs::cpu
