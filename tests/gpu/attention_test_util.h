// Shared by the attention kernel tests: a step's inputs on the device, and the scalar split kernel
// (attention_decode, 256 keys per split, second-launch combine) as the baseline on the same inputs.
#pragma once
#include <vector>

#include "cuda/kernels/attention_decode.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {

// Device copies of one step's inputs. S: a test's step (positions, token_seq, block_tables, max_blocks,
// n_tokens).
struct DevStep {
  DevBuf<bf16> q, kv, sinks;
  DevBuf<int32_t> pos, seq, tab;
  template <typename S>
  DevStep(const S& s, const std::vector<bf16>& hq, const std::vector<bf16>& hkv, const std::vector<bf16>& hs)
      : q(hq), kv(hkv), sinks(hs), pos(s.positions), seq(s.token_seq), tab(s.block_tables) {}
};

// attention_decode's split path over the step; `max_keys`: the most keys a token of the step sees.
template <typename S>
std::vector<float> run_attention_decode_split(const S& s, DevStep& d, int n_heads, int n_kv, int bs, int window,
                                              int max_keys) {
  constexpr int kHeadDim = 64;
  const int kps = 256, n_splits = (max_keys + kps - 1) / kps;
  DevBuf<float> po(attention_partial_floats(s.n_tokens, n_heads, n_splits)),
      pml(size_t(s.n_tokens) * n_heads * n_splits * 2);
  DevBuf<bf16> out(size_t(s.n_tokens) * n_heads * kHeadDim);
  out.poison();
  AttentionDecodeParams p;
  p.q = d.q.p, p.kv = {d.kv.p, bs, n_kv}, p.meta = {d.pos.p, d.seq.p, d.tab.p, s.max_blocks}, p.sinks = d.sinks.p;
  p.part_o = po.p, p.part_ml = pml.p, p.out = out.p;
  p.n_tokens = s.n_tokens, p.n_heads = n_heads, p.n_kv_heads = n_kv, p.window = window;
  p.n_splits = n_splits, p.keys_per_split = kps;
  attention_decode(p, nullptr);
  return to_f32(out.download());
}

}  // namespace mxs::cuda::test
