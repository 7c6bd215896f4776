// bf16 rounding, e2m1 / e8m0 decoding and MXFP4 block decode (every nibble, the extreme scale bytes).
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "common/bf16.h"
#include "common/mxfp4.h"

namespace mxs {
namespace {

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Bf16, ExactValuesRoundTrip) {
  for (float v : {0.0f, -0.0f, 1.0f, -2.5f, 0.125f, 65280.0f, 3.0e38f}) {
    EXPECT_EQ(bf(v), v == 3.0e38f ? bf(v) : v);
  }
  for (uint32_t hi = 0; hi < 0x10000; hi += 7) {
    const uint32_t u = hi << 16;
    const float f = from_bits(u);
    if (std::isnan(f)) continue;
    EXPECT_EQ(f32_to_bf16(f).bits, uint16_t(hi));
  }
}

TEST(Bf16, RoundsToNearestEven) {
  // 1 + 2^-8 is exactly halfway between 1 and 1 + 2^-7: ties to even -> 1.
  EXPECT_EQ(bf(1.0f + 0x1p-8f), 1.0f);
  // 1 + 3*2^-8 is halfway between 1+2^-7 (odd mantissa) and 1+2^-6 (even): -> 1 + 2^-6.
  EXPECT_EQ(bf(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);
  // Just above halfway rounds up.
  EXPECT_EQ(bf(from_bits(0x3f808001u)), 1.0f + 0x1p-7f);
  // Just below halfway rounds down.
  EXPECT_EQ(bf(from_bits(0x3f807fffu)), 1.0f);
  EXPECT_EQ(bf(-1.0f - 0x1p-8f), -1.0f);
}

TEST(Bf16, SpecialValues) {
  EXPECT_TRUE(std::isinf(bf(std::numeric_limits<float>::infinity())));
  EXPECT_TRUE(std::isnan(bf(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload lives only in the low 16 bits must stay NaN (not become inf).
  EXPECT_TRUE(std::isnan(bf(from_bits(0x7f800001u))));
  // The largest finite fp32 rounds up to inf (past bf16's max 3.3895e38).
  EXPECT_TRUE(std::isinf(bf(std::numeric_limits<float>::max())));
  // Subnormals are kept.
  EXPECT_EQ(bf(0x1p-130f), 0x1p-130f);
}

TEST(Bf16, RandomAgreesWithDefinition) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> dist(-1e4f, 1e4f);
  for (int i = 0; i < 100000; ++i) {
    const float x = dist(rng);
    const float r = bf(x);
    // r is a bf16 value and no other bf16 value is closer.
    uint32_t u;
    std::memcpy(&u, &r, 4);
    ASSERT_EQ(u & 0xffffu, 0u);
    const float up = from_bits(u + 0x10000u), down = from_bits(u - 0x10000u);
    ASSERT_LE(std::fabs(r - x), std::fabs(up - x));
    ASSERT_LE(std::fabs(r - x), std::fabs(down - x));
  }
}

TEST(Mxfp4, EveryNibble) {
  const float expected[16] = {0, .5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int n = 0; n < 16; ++n) {
    EXPECT_EQ(e2m1_to_f32(uint8_t(n)), expected[n]) << "nibble " << n;
    EXPECT_EQ(std::signbit(e2m1_to_f32(uint8_t(n))), n >= 8) << "nibble " << n;
  }
}

TEST(Mxfp4, ScaleBytes) {
  EXPECT_EQ(e8m0_to_f32(127), 1.0f);
  EXPECT_EQ(e8m0_to_f32(128), 2.0f);
  EXPECT_EQ(e8m0_to_f32(126), 0.5f);
  EXPECT_EQ(e8m0_to_f32(0), 0x1p-127f);   // subnormal, exact
  EXPECT_EQ(e8m0_to_f32(1), 0x1p-126f);
  EXPECT_EQ(e8m0_to_f32(254), 0x1p127f);
  EXPECT_TRUE(std::isinf(e8m0_to_f32(255)));  // 2^128 overflows fp32 (no NaN special case)
}

TEST(Mxfp4, BlockDecodeNibbleOrderAndScale) {
  // Byte b = (hi << 4) | lo: element 2b gets lo, element 2b+1 gets hi.
  uint8_t packed[16];
  for (int b = 0; b < 16; ++b) packed[b] = uint8_t(((15 - b) << 4) | b);
  for (int scale : {0, 1, 2, 100, 127, 130, 254}) {
    float out[32];
    mxfp4_decode_block(packed, uint8_t(scale), out);
    for (int b = 0; b < 16; ++b) {
      EXPECT_EQ(out[2 * b], std::ldexp(e2m1_to_f32(uint8_t(b)), scale - 127));
      EXPECT_EQ(out[2 * b + 1], std::ldexp(e2m1_to_f32(uint8_t(15 - b)), scale - 127));
      // Exactly representable in bf16 for scale >= 2 (spec §2.3).
      if (scale >= 2) {
        EXPECT_EQ(bf(out[2 * b]), out[2 * b]);
      }
    }
  }
  float out[32];
  mxfp4_decode_block(packed, 255, out);
  EXPECT_EQ(out[0], 0.0f);              // 0 * 2^128 stays 0 (ldexp)
  EXPECT_EQ(out[2], 0x1p127f);          // 0.5 * 2^128 = 2^127 is still finite
  EXPECT_TRUE(std::isinf(out[4]));      // 1.0 * 2^128 overflows fp32
}

TEST(Mxfp4, QuantizeIsNearest) {
  for (int n = 0; n < 16; ++n) EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(e2m1_to_f32(uint8_t(n)))), e2m1_to_f32(uint8_t(n)));
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(0.2f)), 0.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(0.3f)), 0.5f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(2.6f)), 3.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(5.1f)), 6.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(100.f)), 6.0f);
  EXPECT_EQ(e2m1_to_f32(f32_to_e2m1(-4.4f)), -4.0f);
}

}  // namespace
}  // namespace mxs
