// The reference bf12 packer (common/bf12.h): packing then unpacking gives every input bit back, for random rows,
// rows with values far below their largest (exceptions), zeros, subnormals, infinities and NaNs; the planes hold
// what the layout says; bad shapes are refused.
#include <cmath>
#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "common/bf12.h"
#include "common/bf16.h"
#include "common/error.h"

namespace mxs {
namespace {

std::vector<uint16_t> random_rows(int n, int k, uint64_t seed, float scale) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<uint16_t> w(size_t(n) * k);
  for (auto& x : w) x = f32_to_bf16(d(g)).bits;
  return w;
}

TEST(Bf12, RandomRowsRoundTripExactly) {
  for (int k : {8, 64, 2880, 4096}) {
    const int n = 37;
    const auto w = random_rows(n, k, 100 + k, 0.02f);
    const Bf12Matrix m = bf12_pack(w.data(), n, k);
    ASSERT_EQ(m.bytes.size(), size_t(n) * k);
    ASSERT_EQ(m.nibs.size(), size_t(n) * k / 8);
    EXPECT_EQ(bf12_unpack(m), w) << "k = " << k;
    // Normal rows: exceptions are rare (P(|w| < max * 2^-15) per value).
    size_t n_exc = 0;
    for (int r = 0; r < n; ++r) n_exc += bf12_row_exceptions(m, r).size();
    EXPECT_LT(n_exc, size_t(n) * k / 1000 + 2) << "k = " << k;
  }
}

TEST(Bf12, SpecialValuesBecomeExceptionsAndRoundTrip) {
  const int n = 6, k = 64;
  auto w = random_rows(n, k, 7, 1.0f);
  w[0 * k + 3] = 0x0000;                        // +0 in a row with base > 0
  w[0 * k + 9] = 0x8000;                        // -0
  w[1 * k + 0] = 0x0001;                        // smallest subnormal
  w[1 * k + 63] = f32_to_bf16(1e-30f).bits;     // far below the row's largest
  w[2 * k + 5] = 0x7F80;                        // +inf: the row's base moves up, most values become exceptions
  w[3 * k + 1] = 0x7FC1;                        // NaN
  for (int c = 0; c < k; ++c) w[4 * k + c] = 0;  // an all-zero row: base 0, no exceptions
  for (int c = 0; c < k; ++c) w[5 * k + c] = f32_to_bf16(std::ldexp(1.0f, -c)).bits;  // 64 binades
  const Bf12Matrix m = bf12_pack(w.data(), n, k);
  EXPECT_EQ(bf12_unpack(m), w);
  auto count = [&](int r) { return bf12_row_exceptions(m, r).size(); };
  EXPECT_GE(count(0), 2u);
  EXPECT_GE(count(1), 2u);
  EXPECT_EQ(count(4), 0u);
  EXPECT_EQ(m.rows[4].cword, 0u);
  EXPECT_EQ(m.rows[4].exc0, kBf12None);
  EXPECT_EQ(count(5), size_t(k - 16)) << "16 binades fit the window, the rest are exceptions";
  // Two inline, the rest in the row's overflow list (count first); by increasing column; the true bits.
  EXPECT_EQ(m.exc[m.rows[5].exc_rest], uint32_t(k - 18));
  for (int r = 0; r < n; ++r) {
    const std::vector<uint32_t> e = bf12_row_exceptions(m, r);
    const Bf12Row& h = m.rows[size_t(r)];
    EXPECT_EQ(h.exc0, e.size() > 0 ? e[0] : kBf12None);
    EXPECT_EQ(h.exc1, e.size() > 1 ? e[1] : kBf12None);
    EXPECT_EQ(h.exc_rest == kBf12None, e.size() <= 2);
    for (size_t i = 0; i + 1 < e.size(); ++i) EXPECT_LT(e[i] >> 16, e[i + 1] >> 16);
    for (uint32_t x : e) EXPECT_EQ(x & 0xFFFFu, w[size_t(r) * k + (x >> 16)]);
  }
}

TEST(Bf12, PlanesFollowTheLayout) {
  // One row of 8: exponents 120..127 (the row's largest is 127, so base = 112), alternating signs.
  std::vector<uint16_t> w(8);
  for (int i = 0; i < 8; ++i) w[size_t(i)] = uint16_t((i % 2) << 15 | (120 + i) << 7 | (i * 9));
  const Bf12Matrix m = bf12_pack(w.data(), 1, 8);
  EXPECT_EQ(m.rows[0].cword, 112u << 7 | 112u << 23);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(m.bytes[size_t(i)], uint8_t((i % 2) << 7 | (i * 9))) << i;
    EXPECT_EQ((m.nibs[0] >> bf12_code_shift(i)) & 0xFu, uint32_t(120 + i - 112)) << i;
  }
  EXPECT_EQ(bf12_code_shift(0), 0);
  EXPECT_EQ(bf12_code_shift(1), 16);
  EXPECT_EQ(bf12_code_shift(6), 12);
  EXPECT_EQ(bf12_code_shift(7), 28);
  EXPECT_EQ(bf12_bytes(1, 8, 0), size_t(8 + 4 + 16));
  EXPECT_TRUE(m.exc.empty());
  EXPECT_EQ(bf12_overflow_words(2), 0u);
  EXPECT_EQ(bf12_overflow_words(3), 2u);
}

TEST(Bf12, DecodedBitsOfAnExceptionUseTheBase) {
  EXPECT_EQ(bf12_decoded_bits(0x3F80, 100), 0x3F80);  // exponent 127 >= base: itself
  EXPECT_EQ(bf12_decoded_bits(0x8005, 100), uint16_t(0x8005 | 100 << 7));  // -subnormal: sign, mantissa, base
}

TEST(Bf12, BadShapesAreRefused) {
  std::vector<uint16_t> w(12);
  EXPECT_THROW(bf12_pack(w.data(), 1, 12), Error);
  EXPECT_THROW(bf12_pack(w.data(), 1, 0), Error);
  std::vector<uint16_t> wide(65536);
  EXPECT_THROW(bf12_pack(wide.data(), 1, 65536), Error);
}

}  // namespace
}  // namespace mxs
