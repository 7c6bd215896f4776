// The MXFP4 grouped GEMMs for prefill (moe_gemm_mxfp4) and their load-time pack (moe_gemm_pack) against a
// CPU reference written here from common/mxfp4.h (decode) and common/bf16.h (rounding points), fp32
// accumulation: skewed routing (one hot expert) with empty experts, ragged token tiles, odd pair counts,
// every token-tile capacity, partial m tiles of the 3-warpgroup tiles, scales above 128 (the second
// dequantization factor) and the 20b shapes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <thread>
#include <vector>

#include "common/bf16.h"
#include "common/mxfp4.h"
#include "cuda/kernels/moe_gemm_mxfp4.h"
#include "cuda/kernels/moe_gemm_pack.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

// One expert matrix set in the checkpoint layout: blocks [E, R, K/32, 16], scales [E, R, K/32], bias [E, R].
struct Experts {
  int E = 0, R = 0, K = 0;
  std::vector<uint8_t> blocks, scales;
  std::vector<bf16> bias;
};

Experts random_experts(int E, int R, int K, Rng& rng, int scale_lo, int scale_hi) {
  Experts x;
  x.E = E, x.R = R, x.K = K;
  x.blocks = random_bytes(size_t(E) * R * K / 2, rng);
  x.scales = random_bytes(size_t(E) * R * K / 32, rng, scale_lo, scale_hi);
  x.bias = random_bf16(size_t(E) * R, rng, -0.5f, 0.5f);
  return x;
}

// Sorted routing of n_pairs pairs: ~60% go to one hot expert, the rest uniformly to experts e % 3 != 2
// (experts 2, 5, ... stay empty); pairs are shuffled inside each expert's range.
struct Routing {
  std::vector<int32_t> offsets, pair_list;
  std::vector<int> expert_of_sorted;
};
Routing skewed_routing(int n_pairs, int E, Rng& rng) {
  const int hot = E > 1 ? 1 : 0;
  std::vector<std::vector<int32_t>> by_e(E);
  for (int pr = 0; pr < n_pairs; ++pr) {
    int e = hot;
    if (rng.below(10) >= 6) {
      do e = rng.below(E); while (E > 2 && e % 3 == 2);
    }
    by_e[e].push_back(pr);
  }
  Routing r;
  r.offsets.push_back(0);
  for (int e = 0; e < E; ++e) {
    auto& v = by_e[e];
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[size_t(rng.below(int(i)))]);
    for (int32_t pr : v) r.pair_list.push_back(pr), r.expert_of_sorted.push_back(e);
    r.offsets.push_back(int32_t(r.pair_list.size()));
  }
  return r;
}

// Sorted routing with exactly counts[e] pairs for expert e (the pair ids 0 .. P - 1 shuffled over them).
Routing counted_routing(const std::vector<int>& counts, Rng& rng) {
  int P = 0;
  for (int c : counts) P += c;
  std::vector<int32_t> ids(P);
  for (int i = 0; i < P; ++i) ids[i] = i;
  for (size_t i = ids.size(); i > 1; --i) std::swap(ids[i - 1], ids[size_t(rng.below(int(i)))]);
  Routing r;
  r.offsets.push_back(0);
  for (size_t e = 0; e < counts.size(); ++e) {
    for (int j = 0; j < counts[e]; ++j) {
      r.pair_list.push_back(ids[r.pair_list.size()]);
      r.expert_of_sorted.push_back(int(e));
    }
    r.offsets.push_back(int32_t(r.pair_list.size()));
  }
  return r;
}

// Runs fn(i) for i in [0, n) on all cores.
template <typename Fn>
void parallel_for(int n, Fn fn) {
  const int nt = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> th;
  for (int t = 0; t < nt; ++t)
    th.emplace_back([&, t] {
      for (int i = t; i < n; i += nt) fn(i);
    });
  for (auto& x : th) x.join();
}

// out[s][row] = bf(bf(in_row(s) . W[e_s, row]) + bias[e_s, row]) in fp32 (rows decoded once per expert).
std::vector<float> ref_linear(const Experts& w, const Routing& rt, const std::vector<float>& in, auto in_row) {
  const int P = int(rt.pair_list.size());
  std::vector<float> out(size_t(P) * w.R);
  parallel_for(w.E * w.R, [&](int er) {
    const int e = er / w.R, row = er % w.R;
    if (rt.offsets[e] == rt.offsets[e + 1]) return;
    std::vector<float> wr(w.K);
    const size_t r = size_t(e) * w.R + row;
    mxfp4_decode_row(&w.blocks[r * w.K / 2], &w.scales[r * w.K / 32], w.K, wr.data());
    for (int s = rt.offsets[e]; s < rt.offsets[e + 1]; ++s) {
      const float* x = &in[size_t(in_row(s)) * w.K];
      float acc = 0.f;
      for (int k = 0; k < w.K; ++k) acc += x[k] * wr[k];
      out[size_t(s) * w.R + row] = bf(bf(acc) + bf16_to_f32(w.bias[r]));
    }
  });
  return out;
}

float ref_swiglu(float g, float u, float alpha, float limit) {
  g = std::fmin(g, limit);
  u = std::fmin(std::fmax(u, -limit), limit);
  const float ga = bf(g * alpha);
  const float sig = bf(1.0f / (1.0f + std::exp(-ga)));
  return bf(bf(u + 1.0f) * bf(g * sig));
}

struct Packed {
  DevBuf<uint8_t> blocks, scales;
  DevBuf<bf16> bias;
  unsigned max_scale = 0;  // largest scale byte, by moe_scales_max_async (as the runner's load does)
  explicit Packed(const Experts& w) : blocks(w.blocks), scales(w.scales), bias(w.bias) {
    moe_gemm_pack_experts(blocks.p, scales.p, blocks.p, scales.p, w.E, w.R, w.K, nullptr);  // in place
    DevBuf<unsigned> d_max(1);
    CUDA_CHECK(cudaMemset(d_max.p, 0, sizeof(unsigned)));
    moe_scales_max_async(scales.p, w.scales.size(), d_max.p, nullptr);
    max_scale = d_max.download()[0];
  }
};

struct Case {
  int H, I, E, P, n_tile, scale_lo, scale_hi;
  std::vector<int> counts = {};  // pairs per expert (sum P), else skewed random routing
  int producer = 0;              // MoeGemmParams::producer (0 = chosen, 1 = copy engine, 2 = cp.async)
};

void report(const char* what, const Case& c, const ErrorStats& e) {
  std::printf("  %-8s H=%d I=%d E=%d P=%d n_tile=%d producer=%d: rel L2 %.2e, max abs %.3g, %zu of %zu differ\n", what,
              c.H, c.I, c.E, c.P, c.n_tile, c.producer, e.rel_l2, e.max_abs, e.n_diff, e.n);
}

// Both GEMMs for one case on shared weights; returns nothing, EXPECTs inside.
void run_case(const Case& c, const Experts& gu, const Experts& dn, const Packed& pgu, const Packed& pdn, Rng& rng) {
  const int top_k = 4, n_tokens = (c.P + top_k - 1) / top_k;
  const Routing rt = c.counts.empty() ? skewed_routing(c.P, c.E, rng) : counted_routing(c.counts, rng);
  const std::vector<bf16> xn = random_bf16(size_t(n_tokens) * c.H, rng, -1.f, 1.f);
  const std::vector<bf16> act_in = random_bf16(size_t(c.P) * c.I, rng, -1.f, 1.f);  // down's own input
  std::vector<float> topk_w(c.P);
  for (auto& w : topk_w) w = bf(rng.uniform(0.05f, 1.f));

  DevBuf<int32_t> d_off(rt.offsets), d_pairs(rt.pair_list);
  DevBuf<float> d_w(topk_w);
  DevBuf<bf16> d_xn(xn), d_act(size_t(c.P) * c.I), d_act_in(act_in), d_yw(size_t(c.P) * c.H);
  MoeGemmParams p;
  p.w = {pgu.blocks.p, pgu.scales.p, pgu.bias.p, pdn.blocks.p, pdn.scales.p, pdn.bias.p};
  const bool big = std::max(pgu.max_scale, pdn.max_scale) > 128;  // the kernels' dequantization variant
  EXPECT_EQ(big, c.scale_hi > 128) << "scale bytes drawn from [" << c.scale_lo << ", " << c.scale_hi << "]";
  p.w.big_scales = big;
  p.index.expert_offsets = d_off.p;
  p.index.pair_list = d_pairs.p;
  p.topk_w = d_w.p;
  p.xn = d_xn.p;
  p.n_pairs = c.P, p.hidden = c.H, p.intermediate = c.I, p.n_experts = c.E, p.top_k = top_k;
  p.n_tile = c.n_tile, p.producer = c.producer;

  // gate_up: act[s] (sorted order) from xn[pair / top_k] (gathered into yw first: its scratch).
  d_act.poison();
  p.act = d_act.p, p.yw = d_yw.p;
  moe_gemm_mxfp4_gate_up(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> xf = to_f32(xn);
  const std::vector<float> gu_ref = ref_linear(gu, rt, xf, [&](int s) { return rt.pair_list[s] / top_k; });
  std::vector<float> act_ref(size_t(c.P) * c.I);
  for (int s = 0; s < c.P; ++s)
    for (int i = 0; i < c.I; ++i)
      act_ref[size_t(s) * c.I + i] = ref_swiglu(gu_ref[size_t(s) * 2 * c.I + 2 * i],
                                                gu_ref[size_t(s) * 2 * c.I + 2 * i + 1], p.swiglu_alpha, p.swiglu_limit);
  const ErrorStats eg = compare(to_f32(d_act.download()), act_ref);
  report("gate_up", c, eg);
  expect_close(to_f32(d_act.download()), act_ref, 1e-2, "gate_up act");

  // down: yw[pair_list[s]] from act_in[s].
  d_yw.poison();
  p.act = d_act_in.p;
  p.yw = d_yw.p;
  moe_gemm_mxfp4_down(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> af = to_f32(act_in);
  const std::vector<float> dn_ref = ref_linear(dn, rt, af, [](int s) { return s; });
  std::vector<float> yw_ref(size_t(c.P) * c.H);
  for (int s = 0; s < c.P; ++s) {
    const int pair = rt.pair_list[s];
    for (int r = 0; r < c.H; ++r) yw_ref[size_t(pair) * c.H + r] = bf(dn_ref[size_t(s) * c.H + r] * topk_w[pair]);
  }
  const ErrorStats ed = compare(to_f32(d_yw.download()), yw_ref);
  report("down", c, ed);
  expect_close(to_f32(d_yw.download()), yw_ref, 1e-2, "down yw");

  // The dynamic tile scheduler computes every tile as the static one does: bit-identical outputs, twice in a
  // row (the last CTA must have zeroed the counters), counters left zero.
  const std::vector<bf16> act_static = d_act.download(), yw_static = d_yw.download();
  DevBuf<unsigned> d_sched(2);
  CUDA_CHECK(cudaMemset(d_sched.p, 0, 2 * sizeof(unsigned)));
  p.sched = d_sched.p;
  for (int rep = 0; rep < 2; ++rep) {
    DevBuf<bf16> d_act2(size_t(c.P) * c.I), d_yw2(size_t(c.P) * c.H);
    d_act2.poison(), d_yw2.poison();
    p.act = d_act2.p, p.yw = d_yw2.p;
    moe_gemm_mxfp4_gate_up(p, nullptr);
    p.act = d_act_in.p;
    moe_gemm_mxfp4_down(p, nullptr);
    EXPECT_EQ(to_f32(d_act2.download()), to_f32(act_static)) << "gate_up, dynamic scheduler, run " << rep;
    EXPECT_EQ(to_f32(d_yw2.download()), to_f32(yw_static)) << "down, dynamic scheduler, run " << rep;
    EXPECT_EQ(d_sched.download(), std::vector<unsigned>(2, 0u)) << "scheduler counters left zeroed";
  }
  // Scales <= 128: the dequantization with the second factor (big_scales) gives the same bits.
  if (!big) {
    p.w.big_scales = true;
    DevBuf<bf16> d_act3(size_t(c.P) * c.I), d_yw3(size_t(c.P) * c.H);
    p.act = d_act3.p, p.yw = d_yw3.p;
    moe_gemm_mxfp4_gate_up(p, nullptr);
    p.act = d_act_in.p;
    moe_gemm_mxfp4_down(p, nullptr);
    EXPECT_EQ(to_f32(d_act3.download()), to_f32(act_static)) << "gate_up, big_scales variant";
    EXPECT_EQ(to_f32(d_yw3.download()), to_f32(yw_static)) << "down, big_scales variant";
  }
}

void run_shape(int H, int I, int E, const std::vector<Case>& cases, uint64_t seed, int scale_lo, int scale_hi) {
  Rng rng(seed);
  const Experts gu = random_experts(E, 2 * I, H, rng, scale_lo, scale_hi);
  const Experts dn = random_experts(E, H, I, rng, scale_lo, scale_hi);
  const Packed pgu(gu), pdn(dn);
  for (const Case& c : cases) run_case(c, gu, dn, pgu, pdn, rng);
}

// The packed nibble layout decodes every byte back to its two e2m1 values (times 2^-126).
TEST(MoeGemmPack, DecodeInvertsPlace) {
  for (int b = 0; b < 256; ++b)
    for (int j = 0; j < 4; ++j) {
      uint32_t r[4];
      moe_e2m1x2_decode(moe_pack_place(uint8_t(b), j), r);
      for (int h = 0; h < 2; ++h) {
        const float v = bf16_to_f32(bf16{uint16_t(r[j] >> (16 * h))});
        const float want = e2m1_to_f32(uint8_t(h ? b >> 4 : b & 15));
        ASSERT_EQ(std::ldexp(v, 126), want) << "byte " << b << " reg " << j << " half " << h;
      }
      for (int o = 0; o < 4; ++o)  // the other registers see none of this byte's bits
        if (o != j) {
          uint32_t ro[4];
          moe_e2m1x2_decode(moe_pack_place(uint8_t(b), j), ro);
          ASSERT_EQ(ro[o], 0u) << "byte " << b << " reg " << j << " leaks into reg " << o;
        }
    }
}

// In place and out of place give the same bytes, and the pack is a permutation (same byte histogram).
TEST(MoeGemmPack, InPlaceEqualsOutOfPlaceAndPermutes) {
  Rng rng(11);
  const int E = 3, R = 192, K = 320;
  const std::vector<uint8_t> q = random_bytes(size_t(E) * R * K / 2, rng), s = random_bytes(size_t(E) * R * K / 32, rng);
  DevBuf<uint8_t> q1(q), s1(s), q2(q), s2(s), qo(q.size()), so(s.size());
  moe_gemm_pack_experts(q1.p, s1.p, qo.p, so.p, E, R, K, nullptr);
  moe_gemm_pack_experts(q2.p, s2.p, q2.p, s2.p, E, R, K, nullptr);
  const auto a = qo.download(), b = q2.download(), sa = so.download(), sb = s2.download();
  EXPECT_EQ(sa, sb);
  EXPECT_EQ(a, b);
  std::vector<int> hs(256), hso(256);
  for (uint8_t x : s) ++hs[x];
  for (uint8_t x : sa) ++hso[x];
  EXPECT_EQ(hs, hso);
  EXPECT_NE(a, q);  // it did permute
}

TEST(MoeGemmPack, ScalesMaxFindsTheLargestByte) {
  Rng rng(77);
  for (size_t n : {size_t(1), size_t(15), size_t(16), size_t(1000), size_t(1 << 20) + 7}) {
    std::vector<uint8_t> s = random_bytes(n, rng, 100, 127);
    const size_t at = n - 1 - size_t(rng.below(int(std::min<size_t>(n, 9))));  // often in the unaligned tail
    s[at] = 131;
    DevBuf<uint8_t> d(s);
    DevBuf<unsigned> d_max(1);
    CUDA_CHECK(cudaMemset(d_max.p, 0, sizeof(unsigned)));
    moe_scales_max_async(d.p, n, d_max.p, nullptr);
    EXPECT_EQ(d_max.download()[0], 131u) << "n = " << n << ", planted at " << at;
    // The bytes before the planted one: their own max, or the earlier result when not zeroed in between.
    moe_scales_max_async(d.p, at, d_max.p, nullptr);
    EXPECT_EQ(d_max.download()[0], 131u) << "accumulates (n = " << n << ")";
    CUDA_CHECK(cudaMemset(d_max.p, 0, sizeof(unsigned)));
    moe_scales_max_async(d.p, at, d_max.p, nullptr);
    const unsigned want = at == 0 ? 0u : *std::max_element(s.begin(), s.begin() + long(at));
    EXPECT_EQ(d_max.download()[0], want) << "prefix of " << at << " bytes";
  }
}

TEST(MoeGemm, SmallShapesSkewedRouting) {
  std::vector<Case> cases;
  for (int P : {1, 7, 32, 512, 1024, 4097}) cases.push_back({64, 64, 8, P, 0, 118, 126});
  run_shape(64, 64, 8, cases, 1, 118, 126);
}

TEST(MoeGemm, OddShapeEveryTokenTile) {
  // gate_up 384 x 128, down 128 x 192 (three k-tiles): ragged tiles of each capacity, 5 experts.
  // The 128 / 192 tiles with each producer (copy engine, cp.async); P = 1500 puts gate_up's 192 tile on the copy
  // engine by default (mean 300 pairs per expert > 288).
  std::vector<Case> cases;
  for (int nt : {32, 48, 64, 128, 192})
    for (int P : {7, 300, 1031, 1500})
      for (int producer : {0, 1, 2})
        if (producer == 0 || nt >= 128) cases.push_back({128, 192, 5, P, nt, 118, 126, {}, producer});
  run_shape(128, 192, 5, cases, 2, 118, 126);
}

TEST(MoeGemm, PartialMTilesOfThreeWarpgroups) {
  // Token tiles 128 and 192 run 3 consumer warpgroups (192 weight rows per tile): gate_up 640 x 256 is 10
  // groups of 64 rows = 3 + 3 + 3 + 1 (two idle warpgroups in the last m tile), down 256 x 320 is 3 + 1.
  std::vector<Case> cases;
  for (int nt : {128, 192})
    for (int P : {5, 450})
      for (int producer : {1, 2}) cases.push_back({256, 320, 3, P, nt, 118, 126, {}, producer});
  run_shape(256, 320, 3, cases, 5, 118, 126);
}

TEST(MoeGemm, TileBoundariesOfEveryCapacity) {
  // Experts with exactly 0, 1, 31, 33, 48, 49, 64, 65, 128, 129, 192 and 193 pairs: every capacity's full tile,
  // one past it (a second, one-token tile) and an empty expert.
  const std::vector<int> counts = {0, 1, 31, 33, 48, 49, 64, 65, 128, 129, 192, 193};
  int P = 0;
  for (int c : counts) P += c;
  std::vector<Case> cases;
  for (int nt : {32, 48, 64, 128, 192})
    for (int producer : {1, 2})
      if (producer == 1 || nt >= 128) cases.push_back({128, 192, int(counts.size()), P, nt, 118, 126, counts, producer});
  run_shape(128, 192, int(counts.size()), cases, 6, 118, 126);
}

TEST(MoeGemm, LargeScalesTakeTheSecondFactor) {
  std::vector<Case> cases = {{64, 128, 4, 33, 0, 110, 140},
                             {64, 128, 4, 600, 192, 110, 140, {}, 1},
                             {64, 128, 4, 600, 192, 110, 140, {}, 2},
                             {64, 128, 4, 600, 128, 110, 140, {}, 2}};
  run_shape(64, 128, 4, cases, 3, 110, 140);
}

TEST(MoeGemm, Gpt20bShapes) {
  std::vector<Case> cases;
  for (int P : {1, 7, 32, 512}) cases.push_back({2880, 2880, 32, P, 0, 117, 123});
  cases.push_back({2880, 2880, 32, 512, 192, 117, 123});
  cases.push_back({2880, 2880, 32, 1100, 128, 117, 123});  // the hot expert takes 6 tiles of 128
  run_shape(2880, 2880, 32, cases, 4, 117, 123);
}

// The automatic token tile by mean pairs per expert (the bands fitted in docs/KERNELS-moe-gemm.md).
TEST(MoeGemm, TilePickFollowsTheFittedBands) {
  const int E = 32;
  auto pick = [&](int mean) { return moe_gemm_pick_n_tile(mean * E, E); };
  for (int m : {1, 16, 20}) EXPECT_EQ(pick(m), 32) << m;
  for (int m : {21, 24, 32, 40}) EXPECT_EQ(pick(m), 48) << m;
  for (int m : {41, 48}) EXPECT_EQ(pick(m), 64) << m;
  for (int m : {49, 64, 112}) EXPECT_EQ(pick(m), 128) << m;
  for (int m : {113, 160, 224}) EXPECT_EQ(pick(m), 192) << m;
  for (int m : {225, 256, 288}) EXPECT_EQ(pick(m), 128) << m;
  for (int m : {289, 512, 2048}) EXPECT_EQ(pick(m), 192) << m;
  EXPECT_EQ(moe_gemm_pick_n_tile(33, 32), 32);  // mean rounds up: 2 pairs per expert
}

TEST(MoeGemm, UnsupportedShapesFailLoudly) {
  MoeGemmParams p;
  p.n_pairs = 4, p.hidden = 2880, p.intermediate = 100, p.n_experts = 32;
  EXPECT_THROW(moe_gemm_mxfp4_gate_up(p, nullptr), Error);
  p.intermediate = 2880, p.n_tile = 40;
  EXPECT_THROW(moe_gemm_mxfp4_down(p, nullptr), Error);
  p.n_tile = 256;
  EXPECT_THROW(moe_gemm_mxfp4_gate_up(p, nullptr), Error);
}

}  // namespace
}  // namespace mxs::cuda::test
