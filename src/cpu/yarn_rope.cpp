// YaRN inv_freq (transformers `_compute_yarn_parameters`, truncate=false) and the NeoX rotation.
// Python floats (low, high, mscale) are computed in double and enter the fp32 tensor math as fp32.
#include "cpu/yarn_rope.h"

#include <algorithm>
#include <cmath>

namespace mxs::cpu {

YarnRope::YarnRope(const ModelConfig& c) : head_dim_(c.head_dim), half_dim_(c.head_dim / 2) {
  const double base = c.rope_theta, factor = c.rope_factor, dim = double(c.head_dim);
  const double l0 = double(c.rope_original_max_position);
  mscale_ = float(factor <= 1.0 ? 1.0 : 0.1 * std::log(factor) + 1.0);
  auto correction_dim = [&](double num_rot) {
    return (dim * std::log(l0 / (num_rot * 2.0 * M_PI))) / (2.0 * std::log(base));
  };
  double low = correction_dim(c.rope_beta_fast), high = correction_dim(c.rope_beta_slow);
  if (c.rope_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;  // transformers' linear_ramp_factor guards against a zero range
  const float low_f = float(low), range_f = float(high - low);
  inv_freq_.resize(size_t(half_dim_));
  for (int i = 0; i < half_dim_; ++i) {
    // pos_freqs = base ** (arange(0, dim, 2).float() / dim), fp32
    const float pos_freq = std::pow(float(base), float(2 * i) / float(dim));
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (float(factor) * pos_freq);
    const float ramp = std::clamp((float(i) - low_f) / range_f, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    inv_freq_[size_t(i)] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

void YarnRope::cos_sin(int position, float* cos_out, float* sin_out) const {
  for (int i = 0; i < half_dim_; ++i) {
    const float angle = inv_freq_[size_t(i)] * float(position);
    cos_out[i] = bf(std::cos(angle) * mscale_);
    sin_out[i] = bf(std::sin(angle) * mscale_);
  }
}

void YarnRope::apply(bf16* x, int n_heads, const float* cos, const float* sin) const {
  for (int h = 0; h < n_heads; ++h) {
    bf16* v = x + h * head_dim_;
    for (int i = 0; i < half_dim_; ++i) {
      const float a = bf16_to_f32(v[i]), b = bf16_to_f32(v[i + half_dim_]);
      v[i] = f32_to_bf16(bf(a * cos[i]) - bf(b * sin[i]));
      v[i + half_dim_] = f32_to_bf16(bf(b * cos[i]) + bf(a * sin[i]));
    }
  }
}

}  // namespace mxs::cpu
