// bfloat16 on the host: storage type, fp32 <-> bf16 conversion (round to nearest even), and bf()
// (the "round to bf16" of gpt-oss-spec.md §3). Host-only: CUDA code uses __nv_bfloat16 with the same bits.
#pragma once
#include <cstdint>
#include <cstring>

namespace mxs {

// Raw bf16 bits: sign(1) exponent(8) mantissa(7) = the upper half of an IEEE fp32.
struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2);

inline float bf16_to_f32(bf16 v) {
  const uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest, ties to even. NaN stays NaN (quiet bit forced so that truncation cannot make it inf);
// overflow rounds to +-inf as IEEE does.
inline bf16 f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

// bf(x): the value x takes after one rounding to bf16, as an fp32.
inline float bf(float x) { return bf16_to_f32(f32_to_bf16(x)); }

}  // namespace mxs
