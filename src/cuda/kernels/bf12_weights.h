// Device pointers of one bf12-packed matrix (layout: common/bf12.h); host-includable (no device code).
#pragma once
#include <cstdint>

#include "common/bf12.h"

namespace mxs::cuda {

struct Bf12Weights {
  const uint8_t* bytes = nullptr;  // [N][K] sign | mantissa
  const uint32_t* nibs = nullptr;  // [N][K / 8] exponent codes
  const Bf12Row* rows = nullptr;   // [N]
  const uint32_t* exc = nullptr;   // [n_exc]
};

}  // namespace mxs::cuda
