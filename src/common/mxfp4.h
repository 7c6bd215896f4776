// MXFP4 (OCP microscaling FP4) as gpt-oss stores its expert weights (gpt-oss-spec.md §2.3):
//   a block = 32 e2m1 values along the input dimension + one e8m0 scale byte;
//   16 bytes per block, byte b holds element 2b in its LOW nibble and element 2b+1 in its HIGH nibble;
//   value = e2m1[nibble] * 2^(scale - 127). Scale 255 is not treated as NaN (HF and OpenAI use ldexp).
#pragma once
#include <cmath>
#include <cstdint>

namespace mxs {

constexpr int kMxfp4BlockSize = 32;   // values per block
constexpr int kMxfp4BlockBytes = 16;  // packed bytes per block

// e2m1 code -> value; bit 3 is the sign, so codes 8..15 are the negatives of 0..7 (8 is -0.0).
constexpr float kE2m1Values[16] = {+0.0f, +0.5f, +1.0f, +1.5f, +2.0f, +3.0f, +4.0f, +6.0f,
                                   -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

inline float e2m1_to_f32(uint8_t nibble) { return kE2m1Values[nibble & 0xF]; }

// e8m0 scale byte -> 2^(s - 127) in fp32. s = 0 gives 2^-127 (an fp32 subnormal, exact); s = 255 gives
// 2^128 = +inf in fp32, so (like torch.ldexp) a non-zero value with that scale decodes to +-inf.
inline float e8m0_to_f32(uint8_t s) { return std::ldexp(1.0f, int(s) - 127); }

// One block: 16 packed bytes + scale -> 32 floats. Every result is exactly representable in bf16 for
// scale bytes >= 2 (e2m1 has at most 2 significant bits); the product is computed like ldexp.
inline void mxfp4_decode_block(const uint8_t* packed16, uint8_t scale, float* out32) {
  const int e = int(scale) - 127;
  for (int b = 0; b < kMxfp4BlockBytes; ++b) {
    out32[2 * b] = std::ldexp(kE2m1Values[packed16[b] & 0xF], e);
    out32[2 * b + 1] = std::ldexp(kE2m1Values[packed16[b] >> 4], e);
  }
}

// One row of an MXFP4 matrix [rows, in/32, 16] (+ scales [rows, in/32]) -> `in` floats.
inline void mxfp4_decode_row(const uint8_t* packed_row, const uint8_t* scales_row, int in_features,
                             float* out) {
  for (int g = 0; g < in_features / kMxfp4BlockSize; ++g)
    mxfp4_decode_block(packed_row + g * kMxfp4BlockBytes, scales_row[g], out + g * kMxfp4BlockSize);
}

// Nearest e2m1 code for x (already divided by the block scale), ties to the even code; used by mkmodel
// and tests to quantize random weights. |x| > 6 saturates to +-6.
uint8_t f32_to_e2m1(float x);

}  // namespace mxs
