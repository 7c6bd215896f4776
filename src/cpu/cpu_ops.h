// Numerical primitives of the CPU reference forward pass (gpt-oss-spec.md §3 and Appendix B).
// Each op rounds to bf16 exactly where HF transformers does. Accumulation is fp32 in a fixed order that
// does not depend on the number of rows in the batch or on the thread count, so a token gives the same
// bits whether it is run alone, in a chunk, or in a multi-sequence batch.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "common/bf16.h"

namespace mxs::cpu {

// ThreadPool::global().parallel_for over rows, or fn(0, rows) inline when rows * work_per_row (~ multiply-
// adds) is too small to pay for waking the pool. The split never changes results.
void parallel_rows(int64_t rows, int64_t work_per_row, const std::function<void(int64_t, int64_t)>& fn);

// sum_i a[i] * b[i] in fp32 with 8 interleaved partial sums, combined pairwise (fixed order).
float dot_f32(const float* a, const float* b, int n);

// dot_f32 with the first operand in bf16, widened on the fly: the same result as widening first.
float dot_bf16_f32(const bf16* w, const float* x, int n);

// bf16 -> fp32 for n values.
void bf16_to_f32_n(const bf16* in, int64_t n, float* out);

// Embedding gather: out[t] = table[ids[t]] for t < n. table [vocab, dim] bf16.
void embed_rows(const bf16* table, int dim, const int32_t* ids, int n, bf16* out);

// GptOssRMSNorm: out = bf(w * (x * rsqrt(mean(x^2) + eps))), fp32 inside.  x, out: [n_rows, dim].
void rmsnorm(const bf16* x, const bf16* weight, int n_rows, int dim, float eps, bf16* out);

// Dense linear layer (F.linear): y[t, o] = bf(sum_i x[t, i] * w[o, i] + bias[o]) - fp32 accumulate,
// bias added in fp32 before the single rounding (cuBLAS epilogue). w: [out, in] bf16 row-major;
// x: [n_rows, in] bf16; y: [n_rows, out] bf16; bias may be null. Threads split the output rows.
void linear_bf16(const bf16* x, int n_rows, int in, const bf16* w, const bf16* bias, int out, bf16* y);

// MXFP4 linear without bias: y[t, o] = bf(sum_i x[t, i] * W[o, i]), W decoded on the fly from
// blocks [out, in/32, 16] and scales [out, in/32] (common/mxfp4.h). x: [n_rows, in] fp32 holding bf16
// values; y: [n_rows, out] bf16. HF adds the expert bias afterwards as a separate bf16 op.
void linear_mxfp4(const float* x, int n_rows, int in, const uint8_t* blocks, const uint8_t* scales, int out,
                  bf16* y);

// One row of an MXFP4 matrix decoded to fp32 (a LUT per byte; bit-identical to mxfp4_decode_row).
void mxfp4_decode_row_fast(const uint8_t* packed_row, const uint8_t* scales_row, int in_features, float* out);

// Clamped SwiGLU of one token, on the interleaved gate_up row (gpt-oss-spec.md §3.6):
//   g = min(gu[2i], limit), u = clamp(gu[2i+1], -limit, limit)
//   act[i] = bf( bf(u + 1) * bf( g * bf(sigmoid(bf(g * alpha))) ) )
// gu: [2 * n_units] bf16 (already bf(bf(x.W) + b)); act: [n_units] bf16.
void swiglu_clamped(const bf16* gu, int n_units, float alpha, float limit, bf16* act);

// Attention of one query head over n_keys keys with a sink logit (gpt-oss-spec.md §3.4, Appendix B):
//   S_j = bf(bf(q.k_j) * 0.125);  m = max(S_j, sink);  C_j = bf(S_j - m);  C_s = bf(sink - m)
//   P_j = bf(exp(C_j) / (sum_j exp(C_j) + exp(C_s)));   out = bf(sum_j P_j * v_j)
// q: [head_dim] bf16; key_rows[j] + head_offset -> k_j [head_dim] (likewise values); keys ascending by
// position. scratch: >= n_keys floats. `scale` is head_dim^-0.5 (0.125 for gpt-oss).
void attention_with_sink(const bf16* q, const bf16* const* key_rows, const bf16* const* value_rows,
                         int head_offset, int n_keys, int head_dim, float scale, float sink, bf16* out,
                         float* scratch);

// Router (GptOssTopKRouter after the logits): top-k of the bf16 logits (descending, ties -> lower index
// first), then softmax over the k in fp32 with bf16 output. logits: [n_experts]; idx/weight: [k].
void router_topk_softmax(const bf16* logits, int n_experts, int k, int32_t* idx, float* weight);

}  // namespace mxs::cpu
