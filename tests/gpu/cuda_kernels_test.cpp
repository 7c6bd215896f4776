// Every decode kernel family against the CPU reference ops (src/cpu/cpu_ops.h, which round to bf16 where
// HF does) on fresh random inputs: both model geometries (hidden 2880 and the tiny preset's 64), odd row
// counts and batch sizes, outputs poisoned before each run (an unwritten element reads as NaN).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "cpu/cpu_ops.h"
#include "cpu/yarn_rope.h"
#include "cuda/kernels/attention_decode.h"
#include "cuda/kernels/dense_gemm.h"
#include "cuda/kernels/gemv_bf16.h"
#include "cuda/kernels/moe_gemm_pack.h"
#include "cuda/kernels/moe_gemv_mxfp4.h"
#include "cuda/kernels/moe_router.h"
#include "cuda/kernels/qkv_rope.h"
#include "cuda/kernels/rmsnorm.h"
#include "cuda/kernels/skinny_gemm.h"
#include "bf12_test_util.h"
#include "gpu_test_util.h"
#include "model/config.h"

namespace mxs::cuda::test {
namespace {

constexpr double kTol = 4e-3;  // relative L2 for bf16 outputs with the reference's rounding points

// The presets, plus "tiny-128-experts" (the tiny shapes with gpt-oss-120b's 128 experts: the router's
// 4-experts-per-lane selection and scans, the MoE workspaces sized by the expert count).
ModelConfig geometry(const std::string& name) {
  if (name != "tiny-128-experts") return ModelConfig::preset(name);
  ModelConfig c = ModelConfig::preset("tiny");
  c.num_experts = 128;
  return c;
}

class Geometry : public ::testing::TestWithParam<const char*> {
 protected:
  ModelConfig c = geometry(GetParam());
};

TEST_P(Geometry, RmsNormAndEmbedding) {
  const int H = c.hidden_size;
  for (int n : {1, 3, 17}) {
    Rng rng(100 + n);
    const auto x = random_bf16(size_t(n) * H, rng, -3.f, 3.f);
    const auto w = random_bf16(H, rng, -1.5f, 1.5f);
    std::vector<bf16> ref(x.size());
    cpu::rmsnorm(x.data(), w.data(), n, H, c.rms_norm_eps, ref.data());
    DevBuf<bf16> dx(x), dw(w), dout(x.size());
    dout.poison();
    RmsNormParams p;
    p.x = dx.p, p.weight = dw.p, p.out = dout.p, p.n_rows = n, p.dim = H, p.eps = c.rms_norm_eps;
    rmsnorm(p, nullptr);
    expect_close(to_f32(dout.download()), to_f32(ref), kTol, "rmsnorm");

    // embed_rmsnorm: rows gathered from a table by token id.
    const int vocab = 1001;
    const auto table = random_bf16(size_t(vocab) * H, rng, -2.f, 2.f);
    std::vector<int32_t> tok(static_cast<size_t>(n));
    for (auto& t : tok) t = rng.below(vocab);
    std::vector<bf16> gathered(size_t(n) * H), ref2(gathered.size());
    cpu::embed_rows(table.data(), H, tok.data(), n, gathered.data());
    cpu::rmsnorm(gathered.data(), w.data(), n, H, c.rms_norm_eps, ref2.data());
    DevBuf<bf16> dtable(table), dxo(gathered.size());
    DevBuf<int32_t> dtok(tok);
    dxo.poison(), dout.poison();
    RmsNormParams e;
    e.embed = dtable.p, e.tokens = dtok.p, e.x_out = dxo.p, e.weight = dw.p, e.out = dout.p;
    e.n_rows = n, e.dim = H, e.eps = c.rms_norm_eps;
    embed_rmsnorm(e, nullptr);
    const auto xo = to_f32(dxo.download());
    EXPECT_EQ(xo, to_f32(gathered)) << "embed gather";
    expect_close(to_f32(dout.download()), to_f32(ref2), kTol, "embed_rmsnorm");
  }
}

// Three sequences with random block tables; new tokens at the end of each context.
struct StepLayout {
  std::vector<int32_t> positions, token_seq, block_tables;
  int max_blocks = 0;
};
StepLayout make_layout(const std::vector<int>& ctx, const std::vector<int>& n_new, int block_size, int num_blocks,
                       Rng& rng) {
  StepLayout s;
  s.max_blocks = 0;
  for (int cl : ctx) s.max_blocks = std::max(s.max_blocks, (cl + block_size - 1) / block_size);
  std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = num_blocks - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
  size_t next = 0;
  s.block_tables.assign(ctx.size() * size_t(s.max_blocks), -1);
  for (size_t q = 0; q < ctx.size(); ++q) {
    for (int b = 0; b < (ctx[q] + block_size - 1) / block_size; ++b) s.block_tables[q * s.max_blocks + b] = perm[next++];
    for (int i = 0; i < n_new[q]; ++i) {
      s.positions.push_back(ctx[q] - n_new[q] + i);
      s.token_seq.push_back(int32_t(q));
    }
  }
  return s;
}

// q/k/v + bias + RoPE + paged K/V write for steps of 1, 2 (two sequences: each token's own block table) and 3
// tokens (the streaming GEMV at hidden 2880), 6 tokens (the register-resident GEMV), and through the dense path
// (cuBLAS fp32 GEMM + qkv_rope_from_f32) for 6, 13 and 82 tokens (one head per warp over (token, head group) CTAs)
// and 270 tokens (one CTA per token over all heads), positions up to 499.
TEST_P(Geometry, QkvRopeWritesQAndPagedKv) {
  const int H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, D = 64, bs = 16, nblk = 40;
  const int rows = c.qkv_dim();
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  enum Path { kGemv, kCublas, kSkinny };  // the GEMV kernels, or a GEMM (cuBLAS / skinny_gemm) + the epilogue
  const struct {
    std::vector<int> ctx, n_new;
    Path path;
  } cases[] = {{{90}, {1}, kGemv}, {{40, 7}, {1, 1}, kGemv}, {{5, 60}, {2, 1}, kGemv},
               {{37, 1, 130}, {3, 1, 2}, kGemv}, {{37, 1, 130}, {3, 1, 2}, kCublas}, {{200, 17}, {9, 4}, kCublas}, {{500, 17}, {77, 5}, kCublas},
               {{300}, {270}, kCublas}, {{37, 1, 130}, {3, 1, 2}, kSkinny}, {{200, 17}, {9, 4}, kSkinny},
               {{100, 3}, {60, 4}, kSkinny}};
  for (const auto& tc : cases) {
    Rng rng(7 + tc.ctx.size() + (tc.path != kGemv));
    const StepLayout L = make_layout(tc.ctx, tc.n_new, bs, nblk, rng);
    const int n = int(L.positions.size());
    SCOPED_TRACE(strfmt("%d tokens, %s", n, tc.path == kGemv ? "GEMV" : tc.path == kCublas ? "cuBLAS + epilogue"
                                                                                           : "skinny GEMM + epilogue"));
    const auto xn = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const float ws = 1.0f / std::sqrt(float(H));
    const auto w = random_bf16(size_t(rows) * H, rng, -ws, ws);
    const auto b = random_bf16(size_t(rows), rng, -0.5f, 0.5f);
    // Reference: q/k/v = linear + bias (one rounding), then RoPE on q and k.
    std::vector<bf16> ref(size_t(n) * rows);
    cpu::linear_bf16(xn.data(), n, H, w.data(), b.data(), rows, ref.data());
    cpu::YarnRope rope(c);
    std::vector<float> cs(32), sn(32);
    for (int t = 0; t < n; ++t) {
      rope.cos_sin(L.positions[size_t(t)], cs.data(), sn.data());
      rope.apply(&ref[size_t(t) * rows], NH + NKV, cs.data(), sn.data());
    }
    DevBuf<bf16> dxn(xn), dw(w), db(b), dq(size_t(n) * NH * D), dkv(size_t(nblk) * 2 * NKV * bs * D);
    DevBuf<float> dacc(size_t(skinny_gemm_splits(n, H, rows)) * n * rows);
    std::vector<float> inv_freq(rope.inv_freq());
    DevBuf<float> dinv(inv_freq);
    DevBuf<int32_t> dpos(L.positions), dseq(L.token_seq), dtab(L.block_tables);
    dq.poison(), dkv.poison();
    QkvRopeParams p;
    p.xn = dxn.p, p.w_qkv = dw.p, p.b_qkv = db.p, p.inv_freq = dinv.p, p.mscale = rope.mscale(), p.q_out = dq.p;
    p.kv = {dkv.p, bs, NKV};
    p.meta = {dpos.p, dseq.p, dtab.p, L.max_blocks};
    p.n_tokens = n, p.hidden = H, p.n_heads = NH, p.n_kv_heads = NKV;
    if (tc.path == kCublas) {
      gemm_bf16_f32(handle, dxn.p, dw.p, dacc.p, n, H, rows);
      qkv_rope_from_f32(p, dacc.p, nullptr);
    } else if (tc.path == kSkinny) {
      ASSERT_TRUE(skinny_gemm_supports(n, H, rows));
      const int splits = skinny_gemm_bf16_f32(dxn.p, dw.p, dacc.p, n, H, rows, nullptr);
      qkv_rope_from_f32(p, dacc.p, nullptr, splits);
    } else {
      qkv_rope(p, nullptr);
    }
    const auto q = to_f32(dq.download());
    const auto kv = to_f32(dkv.download());
    std::vector<float> q_ref, k_ref, v_ref, k_out, v_out;
    for (int t = 0; t < n; ++t) {
      for (int i = 0; i < NH * D; ++i) q_ref.push_back(bf16_to_f32(ref[size_t(t) * rows + i]));
      const int pos = L.positions[size_t(t)];
      const int blk = L.block_tables[size_t(L.token_seq[size_t(t)]) * L.max_blocks + pos / bs];
      for (int h = 0; h < NKV; ++h)
        for (int d = 0; d < D; ++d) {
          k_ref.push_back(bf16_to_f32(ref[size_t(t) * rows + NH * D + h * D + d]));
          v_ref.push_back(bf16_to_f32(ref[size_t(t) * rows + (NH + NKV) * D + h * D + d]));
          k_out.push_back(kv[((size_t(blk) * 2 + 0) * NKV + h) * bs * D + size_t(pos % bs) * D + d]);
          v_out.push_back(kv[((size_t(blk) * 2 + 1) * NKV + h) * bs * D + size_t(pos % bs) * D + d]);
        }
    }
    expect_close(q, q_ref, kTol, "q (rotated)");
    expect_close(k_out, k_ref, kTol, "k cache (rotated)");
    expect_close(v_out, v_ref, kTol, "v cache");
  }
  cublasDestroy(handle);
}

// The dense path's other pieces for steps of >= 8 rows: o_proj as a cuBLAS fp32 GEMM + residual_rmsnorm_from_f32
// (x = bf(x + bf(acc + b)), then the next norm), and the LM head as gather_rows_bf16 + a bf16 cuBLAS GEMM +
// row_argmax_bf16 (the greedy key: largest logit, lowest id on ties), against the CPU reference.
// A decode step of n sequences of one new token each, sequence i at context ctx0 + i * dctx.
StepLayout decode_layout(int n, int ctx0, int dctx, int bs, int nblk, Rng& rng) {
  std::vector<int> ctx(static_cast<size_t>(n)), n_new(static_cast<size_t>(n), 1);
  for (int i = 0; i < n; ++i) ctx[size_t(i)] = ctx0 + dctx * i;
  return make_layout(ctx, n_new, bs, nblk, rng);
}

// The fused-prologue q/k/v tests' launch parameters: weights, RoPE, the step's tables and shapes.
QkvRopeParams qkv_params(const ModelConfig& c, const void* w, const void* b, const float* inv_freq, float mscale,
                         const TokenMeta& meta, int n) {
  QkvRopeParams p;
  p.w_qkv = w, p.b_qkv = b, p.inv_freq = inv_freq, p.mscale = mscale, p.meta = meta;
  p.n_tokens = n, p.hidden = c.hidden_size, p.n_heads = c.num_heads, p.n_kv_heads = c.num_kv_heads;
  return p;
}

// The entries of KV cache `b` that `a` wrote (both started poisoned: NaN elsewhere), with a's, as (a, b).
std::pair<std::vector<float>, std::vector<float>> written_kv(const DevBuf<bf16>& a, const DevBuf<bf16>& b) {
  const auto va = to_f32(a.download()), vb = to_f32(b.download());
  std::pair<std::vector<float>, std::vector<float>> r;
  for (size_t i = 0; i < va.size(); ++i)
    if (!std::isnan(va[i])) r.first.push_back(va[i]), r.second.push_back(vb[i]);
  return r;
}

// The streaming q/k/v GEMV with the previous layer's MoE combine and this layer's input norm in its prologue
// (qkv_rope's moe_yw): x_out equals the reference combine bit for bit, and q / k / v match the unfused launch
// on the reference's normed rows.
TEST_P(Geometry, QkvRopeWithFusedCombineAndNorm) {
  if (c.hidden_size != 2880) GTEST_SKIP() << "the fused prologue is on the streaming GEMV (hidden 2880)";
  const int H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, D = 64, bs = 16, nblk = 40;
  const int E = c.num_experts, K = c.experts_per_token;
  for (int n : {1, 2, 3, 4}) {  // 1-2: x_mid loaded before the wait (the runner fuses at <= 2)
    SCOPED_TRACE(strfmt("%d tokens", n));
    Rng rng(900 + n);
    const StepLayout L = decode_layout(n, 20, 37, bs, nblk, rng);
    const auto x_mid = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const auto yw = random_bf16(size_t(n) * K * H, rng, -0.5f, 0.5f);
    const auto norm_w = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    std::vector<int32_t> idx(size_t(n) * K);
    for (int t = 0; t < n; ++t) {  // distinct experts per token, in a random (unsorted) slot order
      std::vector<int32_t> perm(static_cast<size_t>(E));
      std::iota(perm.begin(), perm.end(), 0);
      for (int i = E - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
      for (int s = 0; s < K; ++s) idx[size_t(t) * K + s] = perm[size_t(s)];
    }
    // Reference: the combine chain in ascending expert id, then the norm.
    const std::vector<bf16> x_ref = combine_reference(x_mid, yw, idx, n, K, H);
    std::vector<bf16> xn_ref(x_mid.size());
    cpu::rmsnorm(x_ref.data(), norm_w.data(), n, H, c.rms_norm_eps, xn_ref.data());
    const int rows = c.qkv_dim();
    const float ws = 1.0f / std::sqrt(float(H));
    // (zeros and tiny values in a third of the rows: the bf12 run below corrects their exceptions)
    const auto w = packable_matrix(rows, H, rng, ws, /*huge_rows=*/false);
    const auto b = random_bf16(size_t(rows), rng, -0.5f, 0.5f);
    cpu::YarnRope rope(c);
    std::vector<float> inv_freq(rope.inv_freq());
    DevBuf<float> dinv(inv_freq);
    DevBuf<int32_t> dpos(L.positions), dseq(L.token_seq), dtab(L.block_tables), didx(idx);
    DevBuf<bf16> dw(w), db(b), dxmid(x_mid), dyw(yw), dnorm(norm_w), dxn_ref(xn_ref), dxout(x_mid.size());
    DevBuf<bf16> dq1(size_t(n) * NH * D), dq2(size_t(n) * NH * D);
    DevBuf<bf16> dkv1(size_t(nblk) * 2 * NKV * bs * D), dkv2(size_t(nblk) * 2 * NKV * bs * D);
    dq1.poison(), dq2.poison(), dkv1.poison(), dkv2.poison(), dxout.poison();
    const QkvRopeParams p = qkv_params(c, dw.p, db.p, dinv.p, rope.mscale(), {dpos.p, dseq.p, dtab.p, L.max_blocks}, n);
    QkvRopeParams plain = p;  // on the reference's normed rows
    plain.xn = dxn_ref.p, plain.q_out = dq1.p, plain.kv = {dkv1.p, bs, NKV};
    qkv_rope(plain, nullptr);
    QkvRopeParams fused = p;
    fused.q_out = dq2.p, fused.kv = {dkv2.p, bs, NKV};
    fused.moe_x_mid = dxmid.p, fused.moe_yw = dyw.p, fused.moe_topk_idx = didx.p, fused.moe_top_k = K;
    fused.norm_w = dnorm.p, fused.x_out = dxout.p, fused.eps = c.rms_norm_eps;
    qkv_rope(fused, nullptr);
    EXPECT_EQ(to_f32(dxout.download()), to_f32(x_ref)) << "combined residual";
    expect_close(to_f32(dq2.download()), to_f32(dq1.download()), kTol, "q (fused prologue vs reference norm)");
    const auto [a1, a2] = written_kv(dkv1, dkv2);  // the KV cache: only the written rows
    ASSERT_EQ(a1.size(), size_t(n) * 2 * NKV * D);
    expect_close(a2, a1, kTol, "k/v cache (fused prologue vs reference norm)");
    if (n == 1) {
      // One token on the bf12 copy of W (gemv_warp_kernel with Bf12Format): the same q / k / v within the bf16
      // tolerance, and bit for bit on the pairs whose two rows have no exception.
      const DevicePacked packed = pack_on_device(dw.p, rows, H);
      ASSERT_GT(packed.n_exc, 0u);
      DevBuf<bf16> dq3(size_t(n) * NH * D), dkv3(size_t(nblk) * 2 * NKV * bs * D), dxout3(x_mid.size());
      dq3.poison(), dkv3.poison();
      QkvRopeParams f12 = fused;
      f12.q_out = dq3.p, f12.kv = {dkv3.p, bs, NKV}, f12.x_out = dxout3.p, f12.w_qkv_bf12 = packed.w;
      qkv_rope(f12, nullptr);
      const auto q2 = dq2.download(), q3 = dq3.download();
      expect_close(to_f32(q3), to_f32(q2), kTol, "q (bf12 weights vs bf16)");
      const Bf12Matrix m = pack_reference(w, rows, H);
      int exact = 0;
      for (int h = 0; h < NH; ++h)
        for (int d = 0; d < D / 2; ++d) {
          const int r0 = h * D + d, r1 = r0 + D / 2;
          if (m.rows[size_t(r0)].exc0 != kBf12None || m.rows[size_t(r1)].exc0 != kBf12None) continue;
          ++exact;
          ASSERT_EQ(q3[size_t(r0)].bits, q2[size_t(r0)].bits) << "q row " << r0;
          ASSERT_EQ(q3[size_t(r1)].bits, q2[size_t(r1)].bits) << "q row " << r1;
        }
      EXPECT_GT(exact, NH * D / 16);
      expect_close(written_kv(dkv1, dkv3).second, a2, kTol, "k/v cache (bf12 weights vs bf16)");
    }
    fused.x_out = dxmid.p;  // aliasing the input is refused
    EXPECT_THROW(qkv_rope(fused, nullptr), Error);
  }
}

// The first layer's prologue (qkv_rope's embed): x = embed[tokens] gathered and normed in the q/k/v GEMV itself
// (no embed_rmsnorm launch). x_out is the gathered rows bit for bit, q / k / v match the unfused launch on the
// reference's normed rows, on the bf16 weights and (one token) on their bf12 copy.
TEST_P(Geometry, QkvRopeWithFusedEmbeddingAndNorm) {
  if (c.hidden_size != 2880) GTEST_SKIP() << "the fused prologue is on the streaming GEMV (hidden 2880)";
  const int H = c.hidden_size, NH = c.num_heads, NKV = c.num_kv_heads, D = 64, bs = 16, nblk = 40, V = 77;
  for (int n : {1, 2}) {
    SCOPED_TRACE(strfmt("%d tokens", n));
    Rng rng(950 + n);
    const StepLayout L = decode_layout(n, 9, 41, bs, nblk, rng);
    const auto embed = random_bf16(size_t(V) * H, rng, -2.f, 2.f);
    const auto norm_w = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (auto& t : tokens) t = int32_t(rng.below(V));
    std::vector<bf16> x_ref(size_t(n) * H), xn_ref(size_t(n) * H);
    for (int t = 0; t < n; ++t)
      std::copy_n(embed.begin() + size_t(tokens[size_t(t)]) * H, H, x_ref.begin() + size_t(t) * H);
    cpu::rmsnorm(x_ref.data(), norm_w.data(), n, H, c.rms_norm_eps, xn_ref.data());
    const int rows = c.qkv_dim();
    const auto w = packable_matrix(rows, H, rng, 1.0f / std::sqrt(float(H)), /*huge_rows=*/false);
    const auto b = random_bf16(size_t(rows), rng, -0.5f, 0.5f);
    cpu::YarnRope rope(c);
    std::vector<float> inv_freq(rope.inv_freq());
    DevBuf<float> dinv(inv_freq);
    DevBuf<int32_t> dpos(L.positions), dseq(L.token_seq), dtab(L.block_tables), dtok(tokens);
    DevBuf<bf16> dw(w), db(b), dembed(embed), dnorm(norm_w), dxn_ref(xn_ref), dxout(x_ref.size());
    DevBuf<bf16> dq1(size_t(n) * NH * D), dq2(size_t(n) * NH * D);
    DevBuf<bf16> dkv1(size_t(nblk) * 2 * NKV * bs * D), dkv2(size_t(nblk) * 2 * NKV * bs * D);
    dq1.poison(), dq2.poison(), dkv1.poison(), dkv2.poison(), dxout.poison();
    QkvRopeParams plain = qkv_params(c, dw.p, db.p, dinv.p, rope.mscale(), {dpos.p, dseq.p, dtab.p, L.max_blocks}, n);
    QkvRopeParams fused = plain;
    plain.xn = dxn_ref.p, plain.q_out = dq1.p, plain.kv = {dkv1.p, bs, NKV};
    qkv_rope(plain, nullptr);
    fused.q_out = dq2.p, fused.kv = {dkv2.p, bs, NKV};
    fused.embed = dembed.p, fused.embed_tokens = dtok.p;
    fused.norm_w = dnorm.p, fused.x_out = dxout.p, fused.eps = c.rms_norm_eps;
    qkv_rope(fused, nullptr);
    EXPECT_EQ(to_f32(dxout.download()), to_f32(x_ref)) << "gathered residual";
    expect_close(to_f32(dq2.download()), to_f32(dq1.download()), kTol, "q (fused embedding vs reference norm)");
    const auto [e1, e2] = written_kv(dkv1, dkv2);
    ASSERT_EQ(e1.size(), size_t(n) * 2 * NKV * D);
    expect_close(e2, e1, kTol, "k/v cache (fused embedding vs reference norm)");
    if (n == 1) {
      const DevicePacked packed = pack_on_device(dw.p, rows, H);
      DevBuf<bf16> dq3(size_t(n) * NH * D), dkv3(size_t(nblk) * 2 * NKV * bs * D), dxout3(x_ref.size());
      dq3.poison(), dkv3.poison(), dxout3.poison();
      QkvRopeParams f12 = fused;
      f12.q_out = dq3.p, f12.kv = {dkv3.p, bs, NKV}, f12.x_out = dxout3.p, f12.w_qkv_bf12 = packed.w;
      qkv_rope(f12, nullptr);
      EXPECT_EQ(to_f32(dxout3.download()), to_f32(x_ref)) << "gathered residual (bf12 launch)";
      expect_close(to_f32(dq3.download()), to_f32(dq2.download()), kTol, "q (bf12 weights vs bf16)");
    }
    fused.moe_yw = dembed.p;  // with a combine, or at 3+ tokens: refused
    EXPECT_THROW(qkv_rope(fused, nullptr), Error);
  }
}

TEST_P(Geometry, DenseProjectionsAndArgmax) {
  const int H = c.hidden_size, Q = c.q_dim();
  cublasHandle_t handle;
  ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  // 4 / 5: the fewest rows the runner sends to these GEMMs (kLmHeadGemmMinRows, kDenseGemmMinRows).
  for (int n : {4, 5, 8, 13, 77}) {
    Rng rng(500 + n);
    const auto a = random_bf16(size_t(n) * Q, rng, -1.f, 1.f);
    const float ws = 1.0f / std::sqrt(float(Q));
    const auto w = random_bf16(size_t(H) * Q, rng, -ws, ws);
    const auto b = random_bf16(size_t(H), rng, -0.2f, 0.2f);
    const auto x = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const auto nw = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    std::vector<bf16> proj(size_t(n) * H);
    cpu::linear_bf16(a.data(), n, Q, w.data(), b.data(), H, proj.data());
    std::vector<bf16> x_ref(x.size()), xn_ref(x.size());
    for (size_t i = 0; i < x.size(); ++i) x_ref[i] = f32_to_bf16(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));
    DevBuf<bf16> da(a), dw(w), db(b), dx(x), dnw(nw), dxn(size_t(n) * H);
    DevBuf<float> dacc(size_t(n) * H);
    dxn.poison();
    gemm_bf16_f32(handle, da.p, dw.p, dacc.p, n, Q, H);
    ResidualNormParams rp;
    rp.acc = dacc.p, rp.bias = db.p, rp.x = dx.p, rp.norm_weight = dnw.p, rp.xn = dxn.p;
    rp.n_rows = n, rp.dim = H, rp.eps = c.rms_norm_eps;
    residual_rmsnorm_from_f32(rp, nullptr);
    const auto xo = dx.download();
    expect_close(to_f32(xo), to_f32(x_ref), kTol, "o_proj (cuBLAS) + bias + residual");
    cpu::rmsnorm(xo.data(), nw.data(), n, H, c.rms_norm_eps, xn_ref.data());  // the norm of the GPU's own rows
    expect_close(to_f32(dxn.download()), to_f32(xn_ref), kTol, "post-attention rmsnorm");
    if (skinny_gemm_supports(n, Q, H)) {  // the same through skinny_gemm's split partials
      DevBuf<bf16> dx2(x), dxn2(size_t(n) * H);
      DevBuf<float> dacc2(size_t(skinny_gemm_splits(n, Q, H)) * n * H);
      dxn2.poison(), dacc2.poison();
      ResidualNormParams rp2 = rp;
      rp2.acc = dacc2.p, rp2.x = dx2.p, rp2.xn = dxn2.p;
      rp2.acc_splits = skinny_gemm_bf16_f32(da.p, dw.p, dacc2.p, n, Q, H, nullptr);
      residual_rmsnorm_from_f32(rp2, nullptr);
      const auto xo2 = dx2.download();
      expect_close(to_f32(xo2), to_f32(x_ref), kTol, "o_proj (skinny GEMM) + bias + residual");
      cpu::rmsnorm(xo2.data(), nw.data(), n, H, c.rms_norm_eps, xn_ref.data());
      expect_close(to_f32(dxn2.download()), to_f32(xn_ref), kTol, "post-attention rmsnorm (skinny GEMM)");
    }

    // LM head on selected rows, then the row argmax: an odd vocabulary (row 0: 16-byte loads + the scalar
    // tail; the other rows are not 16-byte aligned: the scalar path) and one of 16-byte aligned rows.
    for (const int V : {1001, 4104}) {
      const int n_src = n + 3;
      const auto hs = random_bf16(size_t(n_src) * H, rng, -2.f, 2.f);
      const float wl = 1.0f / std::sqrt(float(H));
      const auto wlm = random_bf16(size_t(V) * H, rng, -wl, wl);
      std::vector<int32_t> rows(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) rows[size_t(i)] = (i * 5 + 2) % n_src;
      std::vector<bf16> sel(size_t(n) * H), logits(size_t(n) * V);
      for (int i = 0; i < n; ++i) std::copy_n(&hs[size_t(rows[size_t(i)]) * H], H, &sel[size_t(i) * H]);
      cpu::linear_bf16(sel.data(), n, H, wlm.data(), nullptr, V, logits.data());
      DevBuf<bf16> dh(hs), dwl(wlm), dsel(size_t(n) * H), dl(logits.size());
      DevBuf<int32_t> drows(rows);
      DevBuf<unsigned long long> dkeys(static_cast<size_t>(n));
      dsel.poison(), dl.poison(), dkeys.poison();
      gather_rows_bf16(dh.p, drows.p, dsel.p, n, H, nullptr);
      gemm_bf16_bf16(handle, dsel.p, dwl.p, dl.p, n, H, V);
      row_argmax_bf16(dl.p, dkeys.p, n, V, nullptr);
      const auto gl = dl.download();
      expect_close(to_f32(gl), to_f32(logits), kTol, "lm_head (cuBLAS, bf16 out)");
      const auto keys = dkeys.download();
      for (int i = 0; i < n; ++i) {
        // The argmax of the GPU's own logits, lowest id on ties.
        const bf16* row = &gl[size_t(i) * V];
        int best = 0;
        for (int j = 1; j < V; ++j)
          if (bf16_to_f32(row[j]) > bf16_to_f32(row[best])) best = j;
        EXPECT_EQ(0x7fffffff - int(keys[size_t(i)] & 0xffffffffu), best) << "row " << i;
      }
    }
  }
  cublasDestroy(handle);
}

// The CPU reference's attention (cpu::attention_with_sink) of every (token, head) of a step over a paged K/V pool
// ([blocks][K|V][kv heads][bs][64] bf16), full (window 0) or sliding.
std::vector<bf16> cpu_paged_attention(const StepLayout& L, const std::vector<bf16>& q, const std::vector<bf16>& kv,
                                      const std::vector<bf16>& sinks, int NH, int NKV, int bs, int window) {
  constexpr int D = 64;
  const int n = int(L.positions.size());
  std::vector<bf16> ref(size_t(n) * NH * D);
  std::vector<float> scratch(1024);
  for (int t = 0; t < n; ++t) {
    const int pos = L.positions[size_t(t)], s = L.token_seq[size_t(t)];
    const int first = window ? std::max(0, pos - window + 1) : 0;
    std::vector<const bf16*> krows, vrows;
    for (int j = first; j <= pos; ++j) {
      const int blk = L.block_tables[size_t(s) * L.max_blocks + j / bs];
      krows.push_back(&kv[(size_t(blk) * 2 + 0) * NKV * bs * D + size_t(j % bs) * D]);
      vrows.push_back(&kv[(size_t(blk) * 2 + 1) * NKV * bs * D + size_t(j % bs) * D]);
    }
    for (int h = 0; h < NH; ++h)
      cpu::attention_with_sink(&q[(size_t(t) * NH + h) * D], krows.data(), vrows.data(), (h / (NH / NKV)) * bs * D,
                               int(krows.size()), D, 0.125f, bf16_to_f32(sinks[size_t(h)]),
                               &ref[(size_t(t) * NH + h) * D], scratch.data());
  }
  return ref;
}

TEST_P(Geometry, AttentionDecodePagedWithSinksAndWindow) {
  const int NH = c.num_heads, NKV = c.num_kv_heads, D = 64, bs = 16, nblk = 120;
  for (int window : {0, 128}) {
    for (int kps : {128, 256}) {
      Rng rng(uint64_t(31 + window + kps));
      const std::vector<int> ctx = {700, 1, 300, 129};
      const StepLayout L = make_layout(ctx, {3, 1, 1, 2}, bs, nblk, rng);
      const int n = int(L.positions.size());
      const auto q = random_bf16(size_t(n) * NH * D, rng, -2.f, 2.f);
      const auto kv = random_bf16(size_t(nblk) * 2 * NKV * bs * D, rng, -2.f, 2.f);
      const auto sinks = random_bf16(size_t(NH), rng, -1.f, 3.f);
      const std::vector<bf16> ref = cpu_paged_attention(L, q, kv, sinks, NH, NKV, bs, window);
      const int max_keys = window ? window : *std::max_element(ctx.begin(), ctx.end());
      const int n_splits = (max_keys + kps - 1) / kps;
      DevBuf<bf16> dq(q), dkv(kv), dsinks(sinks), dout(size_t(n) * NH * D);
      DevBuf<float> po(attention_partial_floats(n, NH, n_splits)), pml(size_t(n) * NH * n_splits * 2);
      DevBuf<int32_t> dpos(L.positions), dseq(L.token_seq), dtab(L.block_tables);
      dout.poison(), po.poison(), pml.poison();
      AttentionDecodeParams p;
      p.q = dq.p, p.kv = {dkv.p, bs, NKV}, p.meta = {dpos.p, dseq.p, dtab.p, L.max_blocks}, p.sinks = dsinks.p;
      p.part_o = po.p, p.part_ml = pml.p, p.out = dout.p;
      p.n_tokens = n, p.n_heads = NH, p.n_kv_heads = NKV, p.window = window, p.n_splits = n_splits;
      p.keys_per_split = kps;
      p.exact = n_splits == 1 && kps == 256;  // sliding with kps 256: the exact path; the rest: split-K
      attention_decode(p, nullptr);
      // The reference rounds the probabilities to bf16 before P.V; the kernel keeps them fp32.
      expect_close(to_f32(dout.download()), to_f32(ref), p.exact ? 2e-3 : 1e-2,
                   p.exact ? "exact attention" : window ? "sliding attention (split)" : "full attention (split)");
    }
  }
}

// The exact path's staged kernel against the first version's kernel (attention_decode_exact_simple): the same
// operations, so the same bits, for full and sliding layers, contexts of 1-256 keys (odd ones included) and
// sequences with several tokens in the step (whose later tokens see keys the step itself wrote). Also close to
// the CPU reference (exp differs from the host's by an ulp now and then).
TEST_P(Geometry, AttentionDecodeExactStagedMatchesSimple) {
  const int NH = c.num_heads, NKV = c.num_kv_heads, D = 64, bs = 16, nblk = 90;
  for (int window : {0, 128}) {
    Rng rng(uint64_t(77 + window));
    const std::vector<int> ctx = {256, 1, 37, 200, 129, 3};
    const StepLayout L = make_layout(ctx, {1, 1, 4, 1, 2, 3}, bs, nblk, rng);
    const int n = int(L.positions.size());
    const auto q = random_bf16(size_t(n) * NH * D, rng, -2.f, 2.f);
    const auto kv = random_bf16(size_t(nblk) * 2 * NKV * bs * D, rng, -2.f, 2.f);
    const auto sinks = random_bf16(size_t(NH), rng, -1.f, 3.f);
    const std::vector<bf16> ref = cpu_paged_attention(L, q, kv, sinks, NH, NKV, bs, window);
    DevBuf<bf16> dq(q), dkv(kv), dsinks(sinks), dout(size_t(n) * NH * D), dsimple(size_t(n) * NH * D);
    DevBuf<int32_t> dpos(L.positions), dseq(L.token_seq), dtab(L.block_tables);
    dout.poison(), dsimple.poison();
    AttentionDecodeParams p;
    p.q = dq.p, p.kv = {dkv.p, bs, NKV}, p.meta = {dpos.p, dseq.p, dtab.p, L.max_blocks}, p.sinks = dsinks.p;
    p.n_tokens = n, p.n_heads = NH, p.n_kv_heads = NKV, p.window = window, p.n_splits = 1;
    p.keys_per_split = window ? window : 256, p.exact = true;
    p.out = dsimple.p;
    attention_decode_exact_simple(p, nullptr);
    const auto want = dsimple.download();
    expect_close(to_f32(want), to_f32(ref), 2e-3, window ? "exact attention (sliding)" : "exact attention (full)");
    for (int slices : {0, 1, 2, 4, 8}) {  // 0: the launcher's choice
      dout.poison();
      p.out = dout.p, p.exact_head_slices = slices;
      attention_decode(p, nullptr);
      const auto got = dout.download();
      int diff = 0;
      for (size_t i = 0; i < got.size(); ++i) diff += got[i].bits != want[i].bits;
      EXPECT_EQ(diff, 0) << "staged vs simple exact kernel, window " << window << ", " << slices << " head slices";
    }
  }
}

TEST_P(Geometry, GemvBf16ResidualAndLmHead) {
  const int H = c.hidden_size, Q = c.q_dim();
  for (int n : {1, 2, 5}) {
    Rng rng(200 + n);
    // o_proj + bias + residual.
    const auto a = random_bf16(size_t(n) * Q, rng, -1.f, 1.f);
    const float ws = 1.0f / std::sqrt(float(Q));
    const auto w = random_bf16(size_t(H) * Q, rng, -ws, ws);
    const auto b = random_bf16(size_t(H), rng, -0.2f, 0.2f);
    const auto x = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    std::vector<bf16> proj(size_t(n) * H);
    cpu::linear_bf16(a.data(), n, Q, w.data(), b.data(), H, proj.data());
    std::vector<float> ref(proj.size());
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = bf(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));
    const auto nw = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    DevBuf<bf16> da(a), dw(w), db(b), dx(x), dnw(nw), dxn(size_t(n) * H);
    DevBuf<unsigned> counter(1);
    CUDA_CHECK(cudaMemset(counter.p, 0, sizeof(unsigned)));
    dxn.poison();
    GemvBf16Params p;
    p.a = da.p, p.w = dw.p, p.bias = db.p, p.y = dx.p, p.n_rows = n, p.k = Q, p.n_out = H;
    const bool fused = n <= 4;  // the fused norm serves steps of up to 4 tokens
    if (fused) p.norm_weight = dnw.p, p.norm_out = dxn.p, p.done_counter = counter.p, p.eps = c.rms_norm_eps;
    gemv_bf16_residual(p, nullptr);
    const auto xo = dx.download();
    expect_close(to_f32(xo), ref, kTol, "o_proj + residual");
    if (fused) {
      std::vector<bf16> xn_ref(xo.size());  // the fused norm of the GPU's own rows
      cpu::rmsnorm(xo.data(), nw.data(), n, H, c.rms_norm_eps, xn_ref.data());
      expect_close(to_f32(dxn.download()), to_f32(xn_ref), kTol, "fused post-attention rmsnorm");
      EXPECT_EQ(counter.download()[0], 0u) << "the last CTA resets the counter";
    }

    // LM head on selected rows, an odd number of outputs.
    const int V = 1001, n_src = n + 2;
    const auto hs = random_bf16(size_t(n_src) * H, rng, -2.f, 2.f);
    const float wl = 1.0f / std::sqrt(float(H));
    const auto wlm = random_bf16(size_t(V) * H, rng, -wl, wl);
    std::vector<int32_t> rows(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) rows[size_t(i)] = n_src - 1 - i;
    std::vector<bf16> sel(size_t(n) * H), logits(size_t(n) * V);
    for (int i = 0; i < n; ++i) std::copy_n(&hs[size_t(rows[size_t(i)]) * H], H, &sel[size_t(i) * H]);
    cpu::linear_bf16(sel.data(), n, H, wlm.data(), nullptr, V, logits.data());
    DevBuf<bf16> dh(hs), dwl(wlm), dl(logits.size());
    DevBuf<int32_t> drows(rows);
    dl.poison();
    GemvBf16Params l;
    l.a = dh.p, l.src_rows = drows.p, l.w = dwl.p, l.y = dl.p, l.n_rows = n, l.k = H, l.n_out = V;
    gemv_bf16_lm_head(l, nullptr);
    expect_close(to_f32(dl.download()), to_f32(logits), kTol, "lm_head");
  }
}

// moe_router_norm (post-attention norm + router in one cluster launch, one token) and moe_router with the norm
// folded into its CTAs (x set; any token count) against rmsnorm + moe_router on the same inputs: xn, logits, top-k
// and weights bit for bit, a valid grouping; xn also against the CPU norm. At 2 tokens also as a graph bucket with 1
// real token (n_real: the padding row takes real token 0's experts). moe_router_norm must refuse steps of more than
// one token with an error that names the limit.
TEST_P(Geometry, MoeRouterNormMatchesNormThenRouter) {
  const int H = c.hidden_size;
  // The geometry's experts, and 128 (gpt-oss-120b: clusters of 16-warp CTAs) at this hidden size too; the model's
  // top-k (moe_router_norm's routing unrolled for top-4) and 7 (its generic top-8 instantiation).
  for (const int K : {c.experts_per_token, 7})
  for (const int E : c.num_experts == 128 ? std::vector<int>{128} : std::vector<int>{c.num_experts, 128})
  for (int n : {1, 2, 3, 4})
  for (const bool padded : {false, true}) {
    if (padded && n != 2) continue;
    SCOPED_TRACE(strfmt("top-%d of %d experts, %d tokens%s", K, E, n, padded ? " (1 real)" : ""));
    Rng rng(700 + n + E + (K == c.experts_per_token ? 0 : 1000));
    const auto x = random_bf16(size_t(n) * H, rng, -3.f, 3.f);
    const auto nw = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    const float ws = 1.0f / std::sqrt(float(H));
    auto rw = random_bf16(size_t(E) * H, rng, -ws, ws);
    auto rb = random_bf16(size_t(E), rng, -0.1f, 0.1f);
    if (E == 128) {  // a tie at the top: experts 9 and 100 have equal logits (the lower id ranks first)
      std::copy_n(rw.begin() + 9 * size_t(H), H, rw.begin() + 100 * size_t(H));
      rb[9] = rb[100] = f32_to_bf16(4.0f);
    }
    DevBuf<bf16> dx(x), dnw(nw), drw(rw), drb(rb), dxn_a(size_t(n) * H), dxn_b(size_t(n) * H);
    struct Out {
      DevBuf<int32_t> idx, off, list, act, num;
      DevBuf<float> wt, logits;
    };
    auto make_out = [&] {
      return Out{DevBuf<int32_t>(size_t(n) * K), DevBuf<int32_t>(size_t(E) + 1), DevBuf<int32_t>(size_t(n) * K),
                 DevBuf<int32_t>(static_cast<size_t>(E)), DevBuf<int32_t>(1), DevBuf<float>(size_t(n) * K),
                 DevBuf<float>(size_t(n) * E)};
    };
    Out a = make_out(), b = make_out(), f = make_out();
    b.idx.poison(), b.wt.poison(), b.list.poison(), b.logits.poison(), dxn_b.poison();
    CUDA_CHECK(cudaMemset(b.act.p, 0x11, size_t(E) * sizeof(int32_t)));  // not -1: a stale tail must show
    DevBuf<unsigned> counter(1);
    CUDA_CHECK(cudaMemset(counter.p, 0, sizeof(unsigned)));
    DevBuf<int32_t> dreal(std::vector<int32_t>{1});
    auto params = [&](Out& o, const void* xn) {
      MoeRouterParams rp;
      rp.xn = xn, rp.w = drw.p, rp.b = drb.p, rp.topk_idx = o.idx.p, rp.topk_w = o.wt.p, rp.logits = o.logits.p;
      rp.done_counter = counter.p, rp.n_tokens = n, rp.hidden = H, rp.n_experts = E, rp.top_k = K;
      if (padded) rp.n_real = dreal.p;
      return rp;
    };
    RmsNormParams np;
    np.x = dx.p, np.weight = dnw.p, np.out = dxn_a.p, np.n_rows = n, np.dim = H, np.eps = c.rms_norm_eps;
    rmsnorm(np, nullptr);
    moe_router(params(a, dxn_a.p), MoeRouteIndex{a.off.p, a.list.p, a.act.p, a.num.p}, nullptr);
    {  // moe_router with the norm folded into its CTAs (x set): the same outputs, any token count
      DevBuf<bf16> dxn_f(size_t(n) * H);
      dxn_f.poison(), f.idx.poison(), f.wt.poison(), f.logits.poison();
      MoeRouterParams fp = params(f, nullptr);
      fp.x = dx.p, fp.norm_w = dnw.p, fp.xn_out = dxn_f.p, fp.eps = c.rms_norm_eps;
      moe_router(fp, MoeRouteIndex{f.off.p, f.list.p, f.act.p, f.num.p}, nullptr);
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(to_f32(dxn_f.download()), to_f32(dxn_a.download())) << "moe_router (norm folded) xn (n = " << n << ")";
      EXPECT_EQ(f.logits.download(), a.logits.download()) << "moe_router (norm folded) logits (n = " << n << ")";
      EXPECT_EQ(f.idx.download(), a.idx.download()) << "moe_router (norm folded) top-k (n = " << n << ")";
      EXPECT_EQ(f.wt.download(), a.wt.download()) << "moe_router (norm folded) weights (n = " << n << ")";
      EXPECT_EQ(f.off.download(), a.off.download()) << "moe_router (norm folded) expert offsets (n = " << n << ")";
      const auto fidx = f.idx.download();
      if (padded) {  // the padding row (token 1) routes as real token 0
        EXPECT_EQ(std::vector<int32_t>(fidx.begin() + K, fidx.end()),
                  std::vector<int32_t>(fidx.begin(), fidx.begin() + K));
      }
    }
    MoeRouterParams rp = params(b, nullptr);
    rp.x = dx.p, rp.norm_w = dnw.p, rp.xn_out = dxn_b.p, rp.eps = c.rms_norm_eps;
    const MoeRouteIndex ixb{b.off.p, b.list.p, b.act.p, b.num.p};
    if (E > kRouterNormMaxExperts || n > 1) {
      EXPECT_THROW(moe_router_norm(rp, ixb, nullptr), Error);
      continue;
    }
    moe_router_norm(rp, ixb, nullptr);
    moe_router_norm(rp, ixb, nullptr);  // twice: nothing carried between launches
    CUDA_CHECK(cudaDeviceSynchronize());
    const auto xn_b = dxn_b.download();
    std::vector<bf16> xn_ref(xn_b.size());
    cpu::rmsnorm(x.data(), nw.data(), n, H, c.rms_norm_eps, xn_ref.data());
    expect_close(to_f32(xn_b), to_f32(xn_ref), kTol, "moe_router_norm xn vs CPU rmsnorm");
    EXPECT_EQ(to_f32(xn_b), to_f32(dxn_a.download())) << "xn differs from the rmsnorm kernel's (n = " << n << ")";
    EXPECT_EQ(b.logits.download(), a.logits.download()) << "router logits (n = " << n << ")";
    const auto idx = b.idx.download();
    EXPECT_EQ(idx, a.idx.download()) << "top-k experts (n = " << n << ")";
    if (E == 128) {
      EXPECT_EQ(idx[0], 9) << "tied logits: the lower expert id first";
      EXPECT_EQ(idx[1], 100);
    }
    EXPECT_EQ(b.wt.download(), a.wt.download()) << "routing weights (n = " << n << ")";
    ASSERT_NO_FATAL_FAILURE(expect_route_index(idx, b.off.download(), b.list.download(), b.act.download(),
                                               b.num.download()[0], n, K, E));
  }
}

// A graph bucket's padding rows (MoeRouterParams::n_real): token t >= n_real takes real token (t - n_real) % n_real's
// experts and weights, the real tokens route as without it, and the active experts are exactly the real tokens'
// (no expert read for padding alone). Random logits: the padding rows' own choices would differ. n_real 3 of 8: the
// copies wrap around.
TEST_P(Geometry, MoeRouterPaddingRowsRouteAsRealTokens) {
  const int H = c.hidden_size, E = c.num_experts, K = c.experts_per_token, n = 8, n_real = 3;
  Rng rng(77);
  const auto xn = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
  const float ws = 1.0f / std::sqrt(float(H));
  const auto rw = random_bf16(size_t(E) * H, rng, -ws, ws);
  const auto rb = random_bf16(size_t(E), rng, -0.1f, 0.1f);
  DevBuf<bf16> dxn(xn), drw(rw), drb(rb);
  DevBuf<int32_t> dreal(std::vector<int32_t>{n_real});
  struct Out {
    std::vector<int32_t> idx, off, list, act;
    std::vector<float> wts;
    int n_active;
  };
  auto route = [&](const int32_t* real) {
    DevBuf<int32_t> didx(size_t(n) * K), doff(size_t(E) + 1), dlist(size_t(n) * K), dact_e{size_t(E)}, dnum(1);
    DevBuf<float> dwt(size_t(n) * K), dlogits(size_t(n) * E);
    DevBuf<unsigned> dcounter(1);
    CUDA_CHECK(cudaMemset(dcounter.p, 0, sizeof(unsigned)));
    didx.poison(), dwt.poison(), dlist.poison();
    MoeRouterParams rp;
    rp.xn = dxn.p, rp.w = drw.p, rp.b = drb.p, rp.topk_idx = didx.p, rp.topk_w = dwt.p, rp.logits = dlogits.p;
    rp.done_counter = dcounter.p, rp.n_tokens = n, rp.hidden = H, rp.n_experts = E, rp.top_k = K, rp.n_real = real;
    moe_router(rp, MoeRouteIndex{doff.p, dlist.p, dact_e.p, dnum.p}, nullptr);
    return Out{didx.download(), doff.download(), dlist.download(), dact_e.download(), dwt.download(),
               dnum.download()[0]};
  };
  const Out all = route(nullptr), pad = route(dreal.p);
  ASSERT_NO_FATAL_FAILURE(expect_route_index(pad.idx, pad.off, pad.list, pad.act, pad.n_active, n, K, E));
  std::set<int32_t> real_experts;
  int differs = 0;  // padding rows whose own top-k is not token 0's
  for (int t = 0; t < n; ++t)
    for (int k = 0; k < K; ++k) {
      const size_t i = size_t(t) * K + k, i0 = size_t(t < n_real ? t : (t - n_real) % n_real) * K + k;
      EXPECT_EQ(pad.idx[i], all.idx[i0]) << "token " << t << " slot " << k;
      EXPECT_EQ(pad.wts[i], all.wts[i0]) << "token " << t << " slot " << k;
      if (t < n_real) real_experts.insert(all.idx[i]);
    }
  for (int t = n_real; t < n; ++t)
    differs += !std::equal(all.idx.begin() + t * K, all.idx.begin() + (t + 1) * K,
                           all.idx.begin() + (t - n_real) % n_real * K);
  EXPECT_GE(differs, 1) << "the test needs padding rows whose own routing differs from the copied token's";
  ASSERT_EQ(pad.n_active, int(real_experts.size()));
  for (int a = 0; a < pad.n_active; ++a)
    EXPECT_TRUE(real_experts.count(pad.act[size_t(a)])) << "expert " << pad.act[size_t(a)];
}

// Router, then the three MXFP4 expert kernels, each checked on the GPU's own inputs of the previous stage.
TEST_P(Geometry, MoeRouterExpertsAndCombine) {
  const int H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, K = c.experts_per_token;
  // 192 tokens: most experts of the tiny geometries get > 8 pairs, i.e. several 8-pair tiles per whole-K CTA (not
  // at 20b's size, whose CPU reference would take ~20 G multiply-adds). 257 tokens x 4 > kMoeGemvMaxPairs: the GEMVs
  // refuse.
  for (int n : {1, 3, 8, 32, 64, 192, 257}) {
    if (n == 192 && H > 64) continue;
    Rng rng(300 + n);
    const auto xn = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const float ws = 1.0f / std::sqrt(float(H));
    const auto rw = random_bf16(size_t(E) * H, rng, -ws, ws);
    const auto rb = random_bf16(size_t(E), rng, -0.1f, 0.1f);
    DevBuf<bf16> dxn(xn), drw(rw), drb(rb);
    DevBuf<int32_t> didx(size_t(n) * K), doff(size_t(E) + 1), dlist(size_t(n) * K), dact_e(static_cast<size_t>(E)), dnum(1);
    DevBuf<float> dwt(static_cast<size_t>(n) * K), dlogits(static_cast<size_t>(n) * E);
    DevBuf<unsigned> dcounter(1);
    CUDA_CHECK(cudaMemset(dcounter.p, 0, sizeof(unsigned)));
    didx.poison(), dwt.poison(), dlist.poison();
    CUDA_CHECK(cudaMemset(dact_e.p, 0x11, size_t(E) * sizeof(int32_t)));  // not -1: a stale tail must show
    MoeRouterParams rp;
    rp.xn = dxn.p, rp.w = drw.p, rp.b = drb.p, rp.topk_idx = didx.p, rp.topk_w = dwt.p, rp.logits = dlogits.p, rp.done_counter = dcounter.p;
    rp.n_tokens = n, rp.hidden = H, rp.n_experts = E, rp.top_k = K;
    const MoeRouteIndex ix{doff.p, dlist.p, dact_e.p, dnum.p};
    moe_router(rp, ix, nullptr);
    moe_router(rp, ix, nullptr);  // twice: the grouping CTA must have reset its counter
    const auto idx = didx.download();
    const auto wts = dwt.download();
    // Router reference.
    std::vector<bf16> logits(size_t(n) * E);
    cpu::linear_bf16(xn.data(), n, H, rw.data(), rb.data(), E, logits.data());
    int token_mismatch = 0;
    for (int t = 0; t < n; ++t) {
      std::vector<int32_t> ri(static_cast<size_t>(K));
      std::vector<float> rwt(static_cast<size_t>(K));
      cpu::router_topk_softmax(&logits[size_t(t) * E], E, K, ri.data(), rwt.data());
      bool same = true;
      for (int k = 0; k < K; ++k) same &= ri[size_t(k)] == idx[size_t(t) * K + k];
      if (!same) {
        ++token_mismatch;
        continue;
      }
      for (int k = 0; k < K; ++k) EXPECT_NEAR(wts[size_t(t) * K + k], rwt[size_t(k)], 1e-6) << "routing weight";
    }
    EXPECT_LE(token_mismatch, n / 16) << "top-k selection differs from the reference";
    // Route index: every pair exactly once, grouped under its expert, active experts ascending.
    const auto off = doff.download(), list = dlist.download(), act_e = dact_e.download();
    const int n_active = dnum.download()[0];
    ASSERT_NO_FATAL_FAILURE(expect_route_index(idx, off, list, act_e, n_active, n, K, E));

    // Experts (random MXFP4: codes uniform, scales 2^-6..2^-4 so activations stay O(1)).
    const auto gub = random_bytes(size_t(E) * 2 * I * H / 2, rng);
    const auto gus = random_bytes(size_t(E) * 2 * I * H / 32, rng, 121, 123);
    const auto gubias = random_bf16(size_t(E) * 2 * I, rng, -0.5f, 0.5f);
    const auto dnb = random_bytes(size_t(E) * H * I / 2, rng);
    const auto dns = random_bytes(size_t(E) * H * I / 32, rng, 121, 123);
    const auto dnbias = random_bf16(size_t(E) * H, rng, -0.5f, 0.5f);
    const auto x = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const auto norm_w = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    // Uploaded in the checkpoint layout and packed in place, as the runner does.
    DevBuf<uint8_t> dgub(gub), dgus(gus), ddnb(dnb), ddns(dns);
    moe_gemm_pack_experts(dgub.p, dgus.p, dgub.p, dgus.p, E, 2 * I, H, nullptr);
    moe_gemm_pack_experts(ddnb.p, ddns.p, ddnb.p, ddns.p, E, H, I, nullptr);
    DevBuf<bf16> dgubias(gubias), ddnbias(dnbias), dx(x), dnorm(norm_w), dxo(size_t(n) * H);
    DevBuf<bf16> dact(size_t(n) * K * I), dyw(size_t(n) * K * H);
    dact.poison(), dyw.poison(), dxo.poison();
    MoeGemvParams mp;
    mp.w = {dgub.p, dgus.p, dgubias.p, ddnb.p, ddns.p, ddnbias.p};
    mp.w.big_scales = false;  // scales 121..123: the fast dequantization (the big_scales one is checked below)
    DevBuf<float> dpart(moe_gemv_partial_floats(H, I, kMoeGemvMaxPairs));
    const size_t n_counters = moe_gemv_counter_count(H, I, E);
    DevBuf<unsigned> dtc(n_counters);
    CUDA_CHECK(cudaMemset(dtc.p, 0, n_counters * sizeof(unsigned)));
    mp.partials = dpart.p, mp.tile_counters = dtc.p;
    mp.index = ix, mp.topk_idx = didx.p, mp.topk_w = dwt.p, mp.xn = dxn.p, mp.act = dact.p, mp.yw = dyw.p;
    mp.x = dx.p, mp.next_norm = dnorm.p, mp.xn_out = dxo.p;
    DevBuf<float> dparts{size_t(n) * 16};
    DevBuf<unsigned> dcounters{size_t(n)};
    CUDA_CHECK(cudaMemset(dcounters.p, 0, size_t(n) * sizeof(unsigned)));
    mp.norm_partials = dparts.p, mp.norm_counters = dcounters.p;
    mp.n_tokens = n, mp.hidden = H, mp.intermediate = I, mp.n_experts = E, mp.top_k = K;
    mp.swiglu_alpha = c.swiglu_alpha, mp.swiglu_limit = c.swiglu_limit, mp.eps = c.rms_norm_eps;
    if (n * K > kMoeGemvMaxPairs) {
      EXPECT_THROW(moe_gemv_mxfp4_gate_up(mp, nullptr), Error) << n * K << " pairs accepted";
      EXPECT_THROW(moe_gemv_mxfp4_down(mp, nullptr), Error) << n * K << " pairs accepted";
      continue;
    }
    moe_gemv_mxfp4_gate_up(mp, nullptr);
    const auto act = dact.download();
    std::vector<float> act_ref(act.size());
    const auto xnf = to_f32(xn);
    for (int pid = 0; pid < n * K; ++pid) {
      const int t = pid / K, e = idx[size_t(pid)];
      std::vector<bf16> gu(size_t(2 * I)), a(static_cast<size_t>(I));
      cpu::linear_mxfp4(&xnf[size_t(t) * H], 1, H, &gub[size_t(e) * 2 * I * H / 2], &gus[size_t(e) * 2 * I * H / 32],
                        2 * I, gu.data());
      for (int j = 0; j < 2 * I; ++j)
        gu[size_t(j)] = f32_to_bf16(bf16_to_f32(gu[size_t(j)]) + bf16_to_f32(gubias[size_t(e) * 2 * I + j]));
      cpu::swiglu_clamped(gu.data(), I, c.swiglu_alpha, c.swiglu_limit, a.data());
      for (int j = 0; j < I; ++j) act_ref[size_t(pid) * I + j] = bf16_to_f32(a[size_t(j)]);
    }
    expect_close(to_f32(act), act_ref, 8e-3, "gate_up + clamped SwiGLU");

    // down on the GPU's own gate_up output.
    auto down_ref = [&](const std::vector<float>& actf) {
      std::vector<float> yw_ref(size_t(n) * K * H);
      for (int pid = 0; pid < n * K; ++pid) {
        const int e = idx[size_t(pid)];
        std::vector<bf16> y(static_cast<size_t>(H));
        cpu::linear_mxfp4(&actf[size_t(pid) * I], 1, I, &dnb[size_t(e) * H * I / 2], &dns[size_t(e) * H * I / 32], H,
                          y.data());
        for (int j = 0; j < H; ++j) {
          const float v = bf(bf16_to_f32(y[size_t(j)]) + bf16_to_f32(dnbias[size_t(e) * H + j]));
          yw_ref[size_t(pid) * H + j] = bf(v * wts[size_t(pid)]);
        }
      }
      return yw_ref;
    };
    moe_gemv_mxfp4_down(mp, nullptr);
    const auto yw = dyw.download();
    expect_close(to_f32(yw), down_ref(to_f32(act)), 8e-3, "down + bias + routing weight");

    // Again (the last CTAs must have reset their counters), bit-identical (fixed piece order).
    moe_gemv_mxfp4_gate_up(mp, nullptr);
    moe_gemv_mxfp4_down(mp, nullptr);
    EXPECT_EQ(to_f32(dact.download()), to_f32(act)) << "gate_up not deterministic";
    EXPECT_EQ(to_f32(dyw.download()), to_f32(yw)) << "down not deterministic";
    EXPECT_EQ(dtc.download(), std::vector<unsigned>(n_counters, 0u)) << "tile counters left zeroed";
    // The dequantization with the second factor for scale bytes > 128 gives the same bits on these scales. (It also
    // compares the whole-K kernels, which run above (gate_up at 1 token, both at 2+), with the split ones, which
    // big_scales takes.)
    mp.w.big_scales = true;
    moe_gemv_mxfp4_gate_up(mp, nullptr);
    moe_gemv_mxfp4_down(mp, nullptr);
    EXPECT_EQ(to_f32(dact.download()), to_f32(act)) << "gate_up, big_scales variant";
    EXPECT_EQ(to_f32(dyw.download()), to_f32(yw)) << "down, big_scales variant";
    mp.w.big_scales = false;

    moe_combine(mp, nullptr);
    const std::vector<bf16> x_ref = combine_reference(x, yw, idx, n, K, H);
    std::vector<bf16> xn_ref(x.size());
    cpu::rmsnorm(x_ref.data(), norm_w.data(), n, H, c.rms_norm_eps, xn_ref.data());
    EXPECT_EQ(to_f32(dx.download()), to_f32(x_ref)) << "residual + sequential bf16 expert sum";
    const auto xn_gpu = to_f32(dxo.download());
    expect_close(xn_gpu, to_f32(xn_ref), kTol, "next rmsnorm");
    // The norm in the token's cluster (the default over 2+ column chunks) and by the last CTA through L2: same bits.
    mp.cluster_combine = false;
    dx.upload(x), dxo.poison();
    moe_combine(mp, nullptr);
    EXPECT_EQ(to_f32(dx.download()), to_f32(x_ref)) << "residual, last-CTA norm";
    EXPECT_EQ(to_f32(dxo.download()), xn_gpu) << "next rmsnorm, last CTA vs cluster";
    EXPECT_EQ(dcounters.download(), std::vector<unsigned>(size_t(n), 0u)) << "norm counters left zeroed";
    mp.cluster_combine = true;
  }
}

// skinny_gemm against a double-precision dot of the same bf16 inputs, summed over its K splits: the model's
// q/k/v and o_proj shapes and a small one, 1 to 64 rows (partial 8-row tiles too); output poisoned first.
TEST(SkinnyGemm, MatchesDotProducts) {
  struct Case {
    int N, K;
    std::vector<int> rows;
  };
  for (const Case& cs : {Case{5120, 2880, {5, 64}}, Case{2880, 4096, {8, 33}}, Case{128, 256, {1, 8, 13, 31, 64}}}) {
    for (int M : cs.rows) {
      const int splits = skinny_gemm_splits(M, cs.K, cs.N);
      ASSERT_GE(splits, 1);
      ASSERT_EQ((cs.K / 64) % splits, 0);
      Rng rng(99 + M + cs.N);
      const auto x = random_bf16(size_t(M) * cs.K, rng, -2.f, 2.f);
      const auto w = random_bf16(size_t(cs.N) * cs.K, rng, -0.05f, 0.05f);
      DevBuf<bf16> dx(x), dw(w);
      DevBuf<float> dy(size_t(splits) * M * cs.N);
      dy.poison();
      ASSERT_EQ(skinny_gemm_bf16_f32(dx.p, dw.p, dy.p, M, cs.K, cs.N, nullptr), splits);
      const auto y = dy.download();
      for (int m = 0; m < M; ++m)
        for (int r = 0; r < cs.N; ++r) {
          double dot = 0, mag = 0;
          for (int k = 0; k < cs.K; ++k) {
            const double p = double(bf16_to_f32(x[size_t(m) * cs.K + k])) * bf16_to_f32(w[size_t(r) * cs.K + k]);
            dot += p, mag += std::fabs(p);
          }
          double got = 0;
          for (int z = 0; z < splits; ++z) got += y[(size_t(z) * M + m) * cs.N + r];
          ASSERT_NEAR(got, dot, 1e-5 * mag + 1e-6) << "N " << cs.N << " K " << cs.K << " M " << M << " row " << m
                                                    << " out " << r;
        }
    }
  }
  DevBuf<bf16> b(size_t(65) * 256);
  DevBuf<float> y(size_t(65) * 256 * 4);
  EXPECT_THROW(skinny_gemm_bf16_f32(b.p, b.p, y.p, 65, 256, 128, nullptr), Error);  // > 64 rows
  EXPECT_THROW(skinny_gemm_bf16_f32(b.p, b.p, y.p, 8, 200, 128, nullptr), Error);   // k % 64
  EXPECT_THROW(skinny_gemm_bf16_f32(b.p, b.p, y.p, 8, 256, 100, nullptr), Error);   // n_out % 64
}

TEST(KernelDispatch, UnsupportedShapesFailLoudly) {
  RmsNormParams p;
  p.n_rows = 1, p.dim = 100;
  try {
    rmsnorm(p, nullptr);
    FAIL() << "dim 100 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("supported: 2880, 64"), std::string::npos) << e.what();
  }
  GemvBf16Params g;
  g.n_rows = 1, g.n_out = 4, g.k = 333;
  EXPECT_THROW(gemv_bf16_lm_head(g, nullptr), Error);
}

INSTANTIATE_TEST_SUITE_P(Cuda, Geometry, ::testing::Values("20b", "tiny", "tiny-128-experts"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';  // test names: letters, digits, underscores
                           return n;
                         });

}  // namespace
}  // namespace mxs::cuda::test
