// YaRN rotary position embedding in the NeoX half-split layout, as HF transformers computes it
// (gpt-oss-spec.md §3.3): fp32 inv_freq table with the truncate=false ramp, cos/sin multiplied by the
// mscale and rounded to bf16, and the rotation done with bf16 elementwise ops.
#pragma once
#include <vector>

#include "common/bf16.h"
#include "model/config.h"

namespace mxs::cpu {

class YarnRope {
 public:
  explicit YarnRope(const ModelConfig& config);

  int half_dim() const { return half_dim_; }
  const std::vector<float>& inv_freq() const { return inv_freq_; }  // [head_dim / 2], fp32
  float mscale() const { return mscale_; }                         // 0.1 ln(factor) + 1, as fp32

  // cos/sin of one position: [head_dim / 2] each, values bf(cos(fp32(pos * inv_freq)) * mscale).
  void cos_sin(int position, float* cos_out, float* sin_out) const;

  // Rotates n_heads vectors of head_dim in place (x: [n_heads, head_dim] bf16), halves [0, d/2) = a and
  // [d/2, d) = b:  a' = bf(bf(a c) - bf(b s)),  b' = bf(bf(b c) + bf(a s)).
  void apply(bf16* x, int n_heads, const float* cos, const float* sin) const;

 private:
  int head_dim_;
  int half_dim_;
  float mscale_;
  std::vector<float> inv_freq_;
};

}  // namespace mxs::cpu
