// CPU reference primitives against straightforward double-precision references on random inputs (odd
// sizes included), plus the exact facts of the spec: the YaRN inv_freq table, sink softmax, router ties.
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "common/bf16.h"
#include "common/mxfp4.h"
#include "cpu/cpu_ops.h"
#include "cpu/random_weights.h"
#include "cpu/yarn_rope.h"
#include "model/config.h"

namespace mxs::cpu {
namespace {

std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float spread = 1.0f) {
  std::uniform_real_distribution<float> u(-spread, spread);
  std::vector<bf16> v(n);
  for (auto& x : v) x = f32_to_bf16(u(rng));
  return v;
}
double f(bf16 v) { return double(bf16_to_f32(v)); }
// One bf16 rounding of a value of magnitude |ref| is at most 2^-8 |ref| (plus fp32 accumulation noise).
void expect_bf16_close(double got, double ref, double abs_slack, const char* what, int i) {
  EXPECT_LE(std::fabs(got - ref), std::ldexp(std::fabs(ref), -8) + abs_slack) << what << " index " << i;
}

TEST(CpuOps, DotMatchesDoubleOddSizes) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int n : {1, 7, 8, 9, 63, 64, 2880}) {
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n));
    double ref = 0, mag = 0;
    for (int i = 0; i < n; ++i) {
      a[size_t(i)] = u(rng);
      b[size_t(i)] = u(rng);
      ref += double(a[size_t(i)]) * b[size_t(i)];
      mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    }
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), ref, 1e-6 * mag + 1e-30) << "n=" << n;
  }
}

TEST(CpuOps, RmsNormMatchesDouble) {
  std::mt19937 rng(2);
  for (int dim : {64, 96, 2880}) {
    const int rows = 3;
    auto x = random_bf16(size_t(rows * dim), rng, 3.0f);
    auto w = random_bf16(size_t(dim), rng, 2.0f);
    std::vector<bf16> out(x.size());
    rmsnorm(x.data(), w.data(), rows, dim, 1e-5f, out.data());
    for (int r = 0; r < rows; ++r) {
      double ss = 0;
      for (int i = 0; i < dim; ++i) ss += f(x[size_t(r * dim + i)]) * f(x[size_t(r * dim + i)]);
      const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
      for (int i = 0; i < dim; ++i)
        expect_bf16_close(f(out[size_t(r * dim + i)]), f(w[size_t(i)]) * f(x[size_t(r * dim + i)]) * inv, 1e-6,
                          "rmsnorm", i);
    }
  }
}

TEST(CpuOps, LinearBf16MatchesDoubleOddSizes) {
  std::mt19937 rng(3);
  struct Case { int rows, in, out; bool bias; };
  for (Case c : {Case{1, 64, 17, true}, Case{5, 70, 33, true}, Case{3, 9, 1, false}, Case{13, 128, 65, true}}) {
    auto x = random_bf16(size_t(c.rows * c.in), rng);
    auto w = random_bf16(size_t(c.out * c.in), rng, 0.5f);
    auto b = random_bf16(size_t(c.out), rng);
    std::vector<bf16> y(static_cast<size_t>(c.rows * c.out));
    linear_bf16(x.data(), c.rows, c.in, w.data(), c.bias ? b.data() : nullptr, c.out, y.data());
    for (int t = 0; t < c.rows; ++t)
      for (int o = 0; o < c.out; ++o) {
        double ref = c.bias ? f(b[size_t(o)]) : 0.0, mag = std::fabs(ref);
        for (int i = 0; i < c.in; ++i) {
          ref += f(x[size_t(t * c.in + i)]) * f(w[size_t(o * c.in + i)]);
          mag += std::fabs(f(x[size_t(t * c.in + i)]) * f(w[size_t(o * c.in + i)]));
        }
        expect_bf16_close(f(y[size_t(t * c.out + o)]), ref, 1e-6 * mag, "linear", o);
      }
  }
}

TEST(CpuOps, LinearRowsAreIndependentOfBatching) {
  std::mt19937 rng(4);
  const int rows = 6, in = 96, out = 40;
  auto x = random_bf16(size_t(rows * in), rng);
  auto w = random_bf16(size_t(out * in), rng);
  std::vector<bf16> all(static_cast<size_t>(rows * out)), one(static_cast<size_t>(out));
  linear_bf16(x.data(), rows, in, w.data(), nullptr, out, all.data());
  for (int t = 0; t < rows; ++t) {
    linear_bf16(x.data() + t * in, 1, in, w.data(), nullptr, out, one.data());
    for (int o = 0; o < out; ++o) ASSERT_EQ(one[size_t(o)].bits, all[size_t(t * out + o)].bits);
  }
}

TEST(CpuOps, Mxfp4FastDecodeEqualsReferenceForEveryScaleByte) {
  std::mt19937 rng(5);
  std::vector<uint8_t> packed(256 * 16);
  std::vector<uint8_t> scales(256);
  for (int s = 0; s < 256; ++s) {
    scales[size_t(s)] = uint8_t(s);
    for (int b = 0; b < 16; ++b) packed[size_t(s * 16 + b)] = uint8_t((s * 16 + b) * 37 + int(rng() % 7));
  }
  std::vector<float> fast(256 * 32), ref(256 * 32);
  mxfp4_decode_row_fast(packed.data(), scales.data(), 256 * 32, fast.data());
  mxfp4_decode_row(packed.data(), scales.data(), 256 * 32, ref.data());
  for (size_t i = 0; i < fast.size(); ++i) {
    if (std::isnan(ref[i])) {
      EXPECT_TRUE(std::isnan(fast[i])) << i;
    } else {
      EXPECT_EQ(fast[i], ref[i]) << i;
      EXPECT_EQ(std::signbit(fast[i]), std::signbit(ref[i])) << i;
    }
  }
}

TEST(CpuOps, LinearMxfp4MatchesDequantizedDouble) {
  std::mt19937 rng(6);
  const int rows = 3, in = 96, out = 11;
  std::vector<uint8_t> blocks(static_cast<size_t>(out * in / 2)), scales(static_cast<size_t>(out * in / 32));
  for (auto& b : blocks) b = uint8_t(rng());
  for (auto& s : scales) s = uint8_t(120 + rng() % 8);
  auto xb = random_bf16(size_t(rows * in), rng);
  std::vector<float> x(xb.size());
  bf16_to_f32_n(xb.data(), int64_t(xb.size()), x.data());
  std::vector<bf16> y(static_cast<size_t>(rows * out));
  linear_mxfp4(x.data(), rows, in, blocks.data(), scales.data(), out, y.data());
  std::vector<float> wrow(static_cast<size_t>(in));
  for (int o = 0; o < out; ++o) {
    mxfp4_decode_row(&blocks[size_t(o * in / 2)], &scales[size_t(o * in / 32)], in, wrow.data());
    for (int t = 0; t < rows; ++t) {
      double ref = 0, mag = 0;
      for (int i = 0; i < in; ++i) {
        ref += double(x[size_t(t * in + i)]) * wrow[size_t(i)];
        mag += std::fabs(double(x[size_t(t * in + i)]) * wrow[size_t(i)]);
      }
      expect_bf16_close(f(y[size_t(t * out + o)]), ref, 1e-6 * mag, "mxfp4 linear", o);
    }
  }
}

TEST(CpuOps, SwigluClampsAndMatchesDouble) {
  // gu interleaved: (gate, up) pairs, including values beyond the limit on both sides.
  const std::vector<std::pair<float, float>> pairs = {
      {0.5f, 0.25f}, {-1.0f, 2.0f}, {9.0f, 1.0f}, {1.0f, 9.0f}, {1.0f, -9.0f}, {-20.0f, 3.0f}, {7.0f, -7.0f}};
  std::vector<bf16> gu;
  for (auto [g, u] : pairs) {
    gu.push_back(f32_to_bf16(g));
    gu.push_back(f32_to_bf16(u));
  }
  std::vector<bf16> act(pairs.size());
  swiglu_clamped(gu.data(), int(pairs.size()), 1.702f, 7.0f, act.data());
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double g = std::min(double(pairs[i].first), 7.0);          // gate clamped above only
    const double u = std::clamp(double(pairs[i].second), -7.0, 7.0);  // up clamped both sides
    const double ref = (u + 1.0) * g / (1.0 + std::exp(-1.702 * g));
    EXPECT_NEAR(f(act[i]), ref, 0.02 * std::fabs(ref) + 1e-6) << "pair " << i;
  }
  // A very negative gate is not clamped: g * sigmoid(1.702 g) is a tiny negative number, not -7 * ...
  EXPECT_LT(std::fabs(f(act[5])), 1e-12);
}

TEST(CpuOps, AttentionWithSinkMatchesDouble) {
  std::mt19937 rng(7);
  const int D = 64, kv_heads = 2;
  for (int n_keys : {1, 2, 17, 130}) {
    for (float sink : {-3.0f, 0.0f, 2.5f, 40.0f}) {
      auto q = random_bf16(size_t(D), rng, 2.0f);
      auto kbuf = random_bf16(size_t(n_keys * kv_heads * D), rng, 2.0f);
      auto vbuf = random_bf16(size_t(n_keys * kv_heads * D), rng, 1.0f);
      std::vector<const bf16*> kr(static_cast<size_t>(n_keys)), vr(static_cast<size_t>(n_keys));
      for (int j = 0; j < n_keys; ++j) {
        kr[size_t(j)] = &kbuf[size_t(j * kv_heads * D)];
        vr[size_t(j)] = &vbuf[size_t(j * kv_heads * D)];
      }
      const int head = 1;
      std::vector<bf16> out(static_cast<size_t>(D));
      std::vector<float> scratch(static_cast<size_t>(n_keys));
      attention_with_sink(q.data(), kr.data(), vr.data(), head * D, n_keys, D, 0.125f, bf(sink), out.data(),
                          scratch.data());
      // Double reference: p_j = exp(s_j) / (sum_k exp(s_k) + exp(sink)), out = sum_j p_j v_j.
      std::vector<double> s(static_cast<size_t>(n_keys));
      double m = bf(sink);
      for (int j = 0; j < n_keys; ++j) {
        double d = 0;
        for (int i = 0; i < D; ++i) d += f(q[size_t(i)]) * f(kr[size_t(j)][head * D + i]);
        s[size_t(j)] = d * 0.125;
        m = std::max(m, s[size_t(j)]);
      }
      double den = std::exp(double(bf(sink)) - m);
      for (int j = 0; j < n_keys; ++j) den += std::exp(s[size_t(j)] - m);
      for (int i = 0; i < D; ++i) {
        double ref = 0;
        for (int j = 0; j < n_keys; ++j) ref += std::exp(s[size_t(j)] - m) / den * f(vr[size_t(j)][head * D + i]);
        // bf16 scores and probabilities: a few bf16 ulps of the value scale.
        EXPECT_NEAR(f(out[size_t(i)]), ref, 0.03) << "n_keys " << n_keys << " sink " << sink << " dim " << i;
      }
    }
  }
}

TEST(CpuOps, SinkAbsorbsProbabilityMass) {
  // One key with score 0 and a sink of logit 0: p = 1/2, output = v / 2 exactly.
  std::vector<bf16> q(64, f32_to_bf16(0.0f)), k(64, f32_to_bf16(1.0f)), v(64);
  for (int i = 0; i < 64; ++i) v[size_t(i)] = f32_to_bf16(float(i) - 20.0f);
  const bf16* kr[1] = {k.data()};
  const bf16* vr[1] = {v.data()};
  std::vector<bf16> out(64);
  float scratch[1];
  attention_with_sink(q.data(), kr, vr, 0, 1, 64, 0.125f, 0.0f, out.data(), scratch);
  for (int i = 0; i < 64; ++i) EXPECT_EQ(bf16_to_f32(out[size_t(i)]), (float(i) - 20.0f) / 2) << i;
}

TEST(CpuOps, RouterTopkTiesPreferLowerIndexAndSoftmaxOverK) {
  const std::vector<float> vals = {1.0f, 3.0f, 2.0f, 3.0f, -1.0f, 2.0f, 0.5f, 3.0f};
  std::vector<bf16> logits;
  for (float v : vals) logits.push_back(f32_to_bf16(v));
  int32_t idx[4];
  float w[4];
  router_topk_softmax(logits.data(), 8, 4, idx, w);
  EXPECT_EQ(idx[0], 1);
  EXPECT_EQ(idx[1], 3);
  EXPECT_EQ(idx[2], 7);
  EXPECT_EQ(idx[3], 2);
  const double den = 3 * std::exp(0.0) + std::exp(-1.0);
  EXPECT_NEAR(w[0], 1.0 / den, 1.0 / 256);
  EXPECT_NEAR(w[3], std::exp(-1.0) / den, 1.0 / 256);
  EXPECT_EQ(w[0], bf(w[0]));  // bf16 output
}

TEST(CpuOps, YarnInvFreqMatchesSpecTable) {
  // gpt-oss-spec.md §3.3 (float64 math rounded to fp32; torch's fp32 pow may differ by an ulp).
  const double table[32] = {1.0,          6.890443e-01, 4.747820e-01, 3.271459e-01, 2.254180e-01, 1.553230e-01,
                            1.070244e-01, 7.374457e-02, 5.081327e-02, 3.170570e-02, 1.933500e-02, 1.159205e-02,
                            6.794959e-03, 3.860359e-03, 2.093793e-03, 1.052602e-03, 4.564839e-04, 1.293187e-04,
                            3.830881e-05, 2.639647e-05, 1.818834e-05, 1.253257e-05, 8.635496e-06, 5.950239e-06,
                            4.099978e-06, 2.825067e-06, 1.946596e-06, 1.341291e-06, 9.242090e-07, 6.368209e-07,
                            4.387979e-07, 3.023511e-07};
  YarnRope rope(ModelConfig{});  // the defaults are gpt-oss-20b's rope parameters
  ASSERT_EQ(rope.inv_freq().size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(rope.inv_freq()[size_t(i)], table[i], 2e-6 * table[i]) << "pair " << i;
  EXPECT_FLOAT_EQ(rope.mscale(), 1.3465735902799727f);
}

TEST(CpuOps, YarnCosSinAreBf16AndRotationMatchesDouble) {
  YarnRope rope(ModelConfig{});
  std::mt19937 rng(8);
  for (int pos : {0, 1, 127, 4097, 100000}) {
    float c[32], s[32];
    rope.cos_sin(pos, c, s);
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(c[i], bf(c[i]));
      const double angle = double(float(double(rope.inv_freq()[size_t(i)]) * pos));
      EXPECT_NEAR(c[i], std::cos(angle) * 1.3465735902799727, 0.01);
      EXPECT_NEAR(s[i], std::sin(angle) * 1.3465735902799727, 0.01);
    }
    auto x = random_bf16(3 * 64, rng);
    auto y = x;
    rope.apply(y.data(), 3, c, s);
    for (int h = 0; h < 3; ++h)
      for (int i = 0; i < 32; ++i) {  // NeoX half-split: dims i and i + 32 form a pair
        const double a = f(x[size_t(h * 64 + i)]), b = f(x[size_t(h * 64 + 32 + i)]);
        EXPECT_NEAR(f(y[size_t(h * 64 + i)]), a * c[i] - b * s[i], 0.03);
        EXPECT_NEAR(f(y[size_t(h * 64 + 32 + i)]), b * c[i] + a * s[i], 0.03);
      }
  }
  float c0[32], s0[32];
  rope.cos_sin(0, c0, s0);
  EXPECT_EQ(c0[0], bf(1.3465735902799727f));  // mscale on cos
  EXPECT_EQ(s0[0], 0.0f);
}

}  // namespace
}  // namespace mxs::cpu
