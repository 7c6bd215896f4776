#include "common/mxfp4.h"

namespace mxs {

uint8_t f32_to_e2m1(float x) {
  const uint8_t sign = std::signbit(x) ? 8 : 0;
  const float a = std::fabs(x);
  // Magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6 (codes 0..7); midpoints decide, ties go to the even code.
  static const float kMid[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
  uint8_t code = 7;
  for (uint8_t i = 0; i < 7; ++i) {
    if (a < kMid[i] || (a == kMid[i] && (i % 2 == 0))) {
      code = i;
      break;
    }
  }
  if (std::isnan(x)) code = 0;
  return uint8_t(sign | code);
}

}  // namespace mxs
