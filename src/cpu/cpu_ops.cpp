// CPU reference primitives: see cpu_ops.h for the exact rounding points of each op.
// Hot loops are written so that GCC vectorizes them at -O2 without reassociating (no -ffast-math):
// fixed 8-lane partial sums, combined in a fixed tree. dot_f32 and the bf16 widening are also compiled for
// AVX2 (picked at load time); without FMA the results are bit-identical to the SSE2 build.
#include "cpu/cpu_ops.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>

#include "common/mxfp4.h"
#include "common/thread_pool.h"

// x86-64: an AVX2 clone beside the baseline (SSE2) one, chosen at load time; elsewhere just the baseline.
#if defined(__x86_64__)
#define MXS_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MXS_SIMD_CLONES
#endif

namespace mxs::cpu {

MXS_SIMD_CLONES float dot_f32(const float* a, const float* b, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += a[i] * b[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Four dot products sharing `w` (register tiling for multi-token chunks); each one accumulates exactly like
// dot_f32(x_t, w, n), so the results are bit-identical to four separate calls.
MXS_SIMD_CLONES void dot4_f32(const float* w, const float* x0, const float* x1,
                                                               const float* x2, const float* x3, int n,
                                                               float* out4) {
  float a0[8] = {}, a1[8] = {}, a2[8] = {}, a3[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      const float wv = w[i + j];
      a0[j] += x0[i + j] * wv;
      a1[j] += x1[i + j] * wv;
      a2[j] += x2[i + j] * wv;
      a3[j] += x3[i + j] * wv;
    }
  for (int j = 0; i < n; ++i, ++j) {
    a0[j] += x0[i] * w[i];
    a1[j] += x1[i] * w[i];
    a2[j] += x2[i] * w[i];
    a3[j] += x3[i] * w[i];
  }
  float* acc[4] = {a0, a1, a2, a3};
  for (int t = 0; t < 4; ++t) {
    const float* a = acc[t];
    out4[t] = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  }
}

MXS_SIMD_CLONES float dot_bf16_f32(const bf16* w, const float* x, int n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += bf16_to_f32(w[i + j]) * x[i + j];
  for (int j = 0; i < n; ++i, ++j) acc[j] += bf16_to_f32(w[i]) * x[i];
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

MXS_SIMD_CLONES void bf16_to_f32_n(const bf16* in, int64_t n, float* out) {
  const uint16_t* bits = reinterpret_cast<const uint16_t*>(in);
  uint32_t* words = reinterpret_cast<uint32_t*>(out);  // bf16 is the upper half of an fp32
  for (int64_t i = 0; i < n; ++i) words[i] = uint32_t(bits[i]) << 16;
}

void parallel_rows(int64_t rows, int64_t work_per_row, const std::function<void(int64_t, int64_t)>& fn) {
  if (rows * work_per_row < (int64_t(1) << 15)) {
    fn(0, rows);
    return;
  }
  ThreadPool::global().parallel_for(rows, fn);
}

void embed_rows(const bf16* table, int dim, const int32_t* ids, int n, bf16* out) {
  for (int t = 0; t < n; ++t)
    std::memcpy(out + int64_t(t) * dim, table + int64_t(ids[t]) * dim, sizeof(bf16) * size_t(dim));
}

void rmsnorm(const bf16* x, const bf16* weight, int n_rows, int dim, float eps, bf16* out) {
  std::vector<float> xf(size_t(dim), 0.0f);
  for (int t = 0; t < n_rows; ++t) {
    bf16_to_f32_n(x + int64_t(t) * dim, dim, xf.data());
    const float var = dot_f32(xf.data(), xf.data(), dim) / float(dim);
    const float r = 1.0f / std::sqrt(var + eps);
    bf16* o = out + int64_t(t) * dim;
    for (int i = 0; i < dim; ++i) o[i] = f32_to_bf16(bf16_to_f32(weight[i]) * (xf[i] * r));
  }
}

// y[t * y_stride] = bf(dot(x[t], w) + b) for the n_rows rows of x [n_rows, in], four at a time.
static void dot_rows(const float* w, const float* x, int n_rows, int in, float b, bf16* y, int y_stride) {
  int t = 0;
  for (; t + 4 <= n_rows; t += 4) {
    float d[4];
    const float* xt = x + size_t(t) * in;
    dot4_f32(w, xt, xt + in, xt + 2 * size_t(in), xt + 3 * size_t(in), in, d);
    for (int k = 0; k < 4; ++k) y[int64_t(t + k) * y_stride] = f32_to_bf16(d[k] + b);
  }
  for (; t < n_rows; ++t) y[int64_t(t) * y_stride] = f32_to_bf16(dot_f32(x + size_t(t) * in, w, in) + b);
}

// Rows of x are converted to fp32 once; each thread converts one weight row at a time and dots it with
// every input row, so a weight row is read from memory once per call whatever n_rows is.
void linear_bf16(const bf16* x, int n_rows, int in, const bf16* w, const bf16* bias, int out, bf16* y) {
  std::vector<float> xf(size_t(n_rows) * size_t(in));
  bf16_to_f32_n(x, int64_t(n_rows) * in, xf.data());
  parallel_rows(out, int64_t(n_rows) * in, [&](int64_t o_begin, int64_t o_end) {
    thread_local std::vector<float> wrow;
    wrow.resize(size_t(in));
    for (int64_t o = o_begin; o < o_end; ++o) {
      const float b = bias ? bf16_to_f32(bias[o]) : 0.0f;
      if (n_rows == 1) {  // decode: widen in registers (same products, same order as dot_f32)
        y[o] = f32_to_bf16(dot_bf16_f32(w + o * in, xf.data(), in) + b);
        continue;
      }
      bf16_to_f32_n(w + o * in, in, wrow.data());
      dot_rows(wrow.data(), xf.data(), n_rows, in, b, y + o, out);
    }
  });
}

namespace {

// byte -> (value of the low nibble, value of the high nibble), unscaled.
struct Mxfp4Lut {
  std::array<std::array<float, 2>, 256> pair;
  std::array<float, 256> scale;  // e8m0 byte -> 2^(s-127); 255 (= inf) takes the exact slow path
  Mxfp4Lut() {
    for (int b = 0; b < 256; ++b) pair[size_t(b)] = {e2m1_to_f32(uint8_t(b & 0xF)), e2m1_to_f32(uint8_t(b >> 4))};
    for (int s = 0; s < 256; ++s) scale[size_t(s)] = e8m0_to_f32(uint8_t(s));
  }
};
const Mxfp4Lut& mxfp4_lut() {
  static const Mxfp4Lut lut;
  return lut;
}

}  // namespace

void mxfp4_decode_row_fast(const uint8_t* packed_row, const uint8_t* scales_row, int in_features, float* out) {
  const Mxfp4Lut& lut = mxfp4_lut();
  for (int g = 0; g < in_features / kMxfp4BlockSize; ++g) {
    const uint8_t* p = packed_row + g * kMxfp4BlockBytes;
    float* o = out + g * kMxfp4BlockSize;
    const uint8_t s = scales_row[g];
    if (s == 255) {  // lut * inf would turn a zero nibble into NaN; ldexp keeps it 0 (like torch.ldexp)
      mxfp4_decode_block(p, s, o);
      continue;
    }
    // e2m1 value x 2^k is exact in fp32 here (s = 0 gives an exact subnormal product).
    const float sc = lut.scale[s];
    for (int b = 0; b < kMxfp4BlockBytes; ++b) {
      o[2 * b] = lut.pair[p[b]][0] * sc;
      o[2 * b + 1] = lut.pair[p[b]][1] * sc;
    }
  }
}

void linear_mxfp4(const float* x, int n_rows, int in, const uint8_t* blocks, const uint8_t* scales, int out,
                  bf16* y) {
  const int64_t row_bytes = int64_t(in / kMxfp4BlockSize) * kMxfp4BlockBytes;
  const int64_t row_scales = in / kMxfp4BlockSize;
  parallel_rows(out, int64_t(n_rows) * in, [&](int64_t o_begin, int64_t o_end) {
    thread_local std::vector<float> wrow;
    wrow.resize(size_t(in));
    for (int64_t o = o_begin; o < o_end; ++o) {
      mxfp4_decode_row_fast(blocks + o * row_bytes, scales + o * row_scales, in, wrow.data());
      dot_rows(wrow.data(), x, n_rows, in, 0.0f, y + o, out);
    }
  });
}

void swiglu_clamped(const bf16* gu, int n_units, float alpha, float limit, bf16* act) {
  for (int i = 0; i < n_units; ++i) {
    const float g = std::min(bf16_to_f32(gu[2 * i]), limit);  // NaN passes through, as in torch.clamp
    const float u = std::clamp(bf16_to_f32(gu[2 * i + 1]), -limit, limit);
    const float ga = bf(g * alpha);
    const float sig = bf(1.0f / (1.0f + std::exp(-ga)));
    const float glu = bf(g * sig);
    act[i] = f32_to_bf16(bf(u + 1.0f) * glu);
  }
}

void attention_with_sink(const bf16* q, const bf16* const* key_rows, const bf16* const* value_rows,
                         int head_offset, int n_keys, int head_dim, float scale, float sink, bf16* out,
                         float* scratch) {
  float qf[256];
  float kf[256];
  bf16_to_f32_n(q, head_dim, qf);
  float m = sink;
  for (int j = 0; j < n_keys; ++j) {
    bf16_to_f32_n(key_rows[j] + head_offset, head_dim, kf);
    const float s = bf(bf(dot_f32(qf, kf, head_dim)) * scale);
    scratch[j] = s;
    m = std::max(m, s);
  }
  float den = 0.0f;
  for (int j = 0; j < n_keys; ++j) {
    scratch[j] = std::exp(bf(scratch[j] - m));
    den += scratch[j];
  }
  den += std::exp(bf(sink - m));  // the sink column comes last in HF's torch.cat([S, sinks])
  float acc[256];
  std::fill(acc, acc + head_dim, 0.0f);
  for (int j = 0; j < n_keys; ++j) {
    const float p = bf(scratch[j] / den);
    const bf16* v = value_rows[j] + head_offset;
    for (int d = 0; d < head_dim; ++d) acc[d] += p * bf16_to_f32(v[d]);
  }
  for (int d = 0; d < head_dim; ++d) out[d] = f32_to_bf16(acc[d]);
}

void router_topk_softmax(const bf16* logits, int n_experts, int k, int32_t* idx, float* weight) {
  // Selection sort over a few dozen experts: strict '>' keeps the lower index on ties.
  std::vector<bool> taken(size_t(n_experts), false);
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int e = 0; e < n_experts; ++e) {
      if (taken[size_t(e)]) continue;
      if (best < 0 || bf16_to_f32(logits[e]) > bf16_to_f32(logits[best])) best = e;
    }
    taken[size_t(best)] = true;
    idx[s] = best;
  }
  const float m = bf16_to_f32(logits[idx[0]]);
  float sum = 0.0f;
  for (int s = 0; s < k; ++s) {
    weight[s] = std::exp(bf16_to_f32(logits[idx[s]]) - m);
    sum += weight[s];
  }
  for (int s = 0; s < k; ++s) weight[s] = bf(weight[s] / sum);
}

}  // namespace mxs::cpu
