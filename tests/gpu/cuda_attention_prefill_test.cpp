// attention_prefill (flash-attention prefill over the paged KV cache) against an fp32 CPU reference written
// here (scores q.k * 0.125, softmax with the sink as an extra denominator column, P.V, all in fp32/fp64 on the
// bf16 inputs) and against the existing attention_decode kernel on the same inputs: odd chunk lengths, chunks
// starting mid-sequence, several sequences (prefill chunks and decode tokens) in one launch, block size 16
// with shuffled non-contiguous block tables, full and 128-window layers, peaky scores, freed blocks below a
// sliding window, every kernel variant (the wgmma kernel; mma.sync: tile_q 16/32, key tile 64/128, softmax
// sub-tile 32/64), outputs poisoned. A last case times 2048- and 8192-token prompts and chunks of long contexts (prints ms and
// TFLOP/s; no timed assertion).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#include "cuda/kernels/attention_decode.h"
#include "cuda/kernels/attention_prefill.h"
#include "attention_test_util.h"
#include "cuda/event_timing.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

constexpr int kD = 64;

// A step: sequence s has context ctx[s] (keys [0, ctx[s]) in the cache) and its last n_new[s] positions are
// this step's query tokens (a chunk starting at ctx - n_new, so the keys before it are "already cached").
struct Step {
  std::vector<int> ctx, n_new, token_offset;
  std::vector<int32_t> positions, token_seq, block_tables;
  int max_blocks = 0, num_blocks = 0, n_tokens = 0;
};

Step make_step(const std::vector<int>& ctx, const std::vector<int>& n_new, int bs, Rng& rng) {
  Step s;
  s.ctx = ctx, s.n_new = n_new;
  int total_blocks = 0;
  for (int c : ctx) {
    s.max_blocks = std::max(s.max_blocks, (c + bs - 1) / bs);
    total_blocks += (c + bs - 1) / bs;
  }
  s.num_blocks = total_blocks + 7;  // a few blocks nobody owns
  std::vector<int32_t> perm(static_cast<size_t>(s.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = s.num_blocks - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
  size_t next = 0;
  s.block_tables.assign(ctx.size() * size_t(s.max_blocks), -1);  // -1 past a context: must never be read
  for (size_t q = 0; q < ctx.size(); ++q) {
    for (int b = 0; b < (ctx[q] + bs - 1) / bs; ++b) s.block_tables[q * size_t(s.max_blocks) + size_t(b)] = perm[next++];
    s.token_offset.push_back(int(s.positions.size()));
    for (int i = 0; i < n_new[q]; ++i) {
      s.positions.push_back(ctx[q] - n_new[q] + i);
      s.token_seq.push_back(int32_t(q));
    }
  }
  s.n_tokens = int(s.positions.size());
  return s;
}

// fp32 reference (fp64 softmax sums) for every (token, head): keys j of the token's sequence with j <= pos and
// j > pos - window (window > 0); scores with the spec's rounding points S_j = bf(bf(q.k_j) * 0.125) (as
// cpu::attention_with_sink and both kernels); softmax over {S_j} and the sink; out = sum_j P_j v_j.
std::vector<float> reference(const Step& s, const std::vector<float>& q, const std::vector<float>& kv,
                             const std::vector<float>& sinks, int n_heads, int n_kv, int bs, int window) {
  std::vector<float> out(size_t(s.n_tokens) * n_heads * kD);
  const int group = n_heads / n_kv;
  auto work = [&](int t0, int t1) {
    std::vector<double> sc;
    for (int t = t0; t < t1; ++t) {
      const int pos = s.positions[size_t(t)], seq = s.token_seq[size_t(t)];
      const int lo = window > 0 ? std::max(0, pos - window + 1) : 0;
      sc.resize(size_t(pos + 1 - lo));
      for (int h = 0; h < n_heads; ++h) {
        const float* qh = &q[(size_t(t) * n_heads + h) * kD];
        const int g = h / group;
        auto row = [&](int j, int which) {
          const int blk = s.block_tables[size_t(seq) * s.max_blocks + size_t(j / bs)];
          return &kv[((size_t(blk) * 2 + which) * n_kv + g) * size_t(bs) * kD + size_t(j % bs) * kD];
        };
        double m = sinks[size_t(h)];
        for (int j = lo; j <= pos; ++j) {
          const float* k = row(j, 0);
          float d = 0.f;
          for (int i = 0; i < kD; ++i) d += qh[i] * k[i];
          sc[size_t(j - lo)] = double(bf16_to_f32(f32_to_bf16(bf16_to_f32(f32_to_bf16(d)) * 0.125f)));
          m = std::max(m, sc[size_t(j - lo)]);
        }
        double den = std::exp(double(sinks[size_t(h)]) - m);
        double acc[kD] = {};
        for (int j = lo; j <= pos; ++j) {
          const double pj = std::exp(sc[size_t(j - lo)] - m);
          den += pj;
          const float* v = row(j, 1);
          for (int i = 0; i < kD; ++i) acc[i] += pj * v[i];
        }
        for (int i = 0; i < kD; ++i) out[(size_t(t) * n_heads + h) * kD + size_t(i)] = float(acc[i] / den);
      }
    }
  };
  const int nt = int(std::max(1u, std::min(32u, std::thread::hardware_concurrency())));
  std::vector<std::thread> th;
  for (int i = 0; i < nt; ++i)
    th.emplace_back(work, s.n_tokens * i / nt, s.n_tokens * (i + 1) / nt);
  for (auto& x : th) x.join();
  return out;
}

// Kernel variants (tile_q, key_tile, sub_tile, impl); key_tile = sub_tile = 0: the kernel's defaults. impl
// (AttentionPrefillParams::Impl): 2 = the wgmma kernel (what kAuto picks with the default tiles), 1 = the
// mma.sync kernel.
struct Variant {
  int tile_q, key_tile, sub_tile, impl;
};
constexpr Variant kVariants[] = {{16, 0, 0, 2},   {32, 0, 0, 2},   {16, 0, 0, 1},   {32, 0, 0, 1},   {32, 64, 64, 1},
                                 {16, 64, 64, 1}, {32, 64, 32, 1}, {16, 64, 32, 1}, {32, 128, 32, 1},
                                 {16, 128, 32, 1}, {32, 128, 64, 1}, {16, 128, 64, 1}};

std::vector<float> run_prefill(const Step& s, DevStep& d, int n_heads, int n_kv, int bs, int window, Variant v) {
  const int tile_q = v.tile_q;
  const auto tiles = make_prefill_tiles(s.token_offset, s.n_new, tile_q);
  EXPECT_LE(int(tiles.size()), max_prefill_tiles(s.n_tokens, int(s.ctx.size()), tile_q));
  DevBuf<PrefillTile> dt(tiles.size());
  CUDA_CHECK(cudaMemcpy(dt.p, tiles.data(), tiles.size() * sizeof(PrefillTile), cudaMemcpyHostToDevice));
  DevBuf<bf16> out(size_t(s.n_tokens) * n_heads * kD);
  out.poison();
  AttentionPrefillParams p;
  p.q = d.q.p, p.kv = {d.kv.p, bs, n_kv}, p.meta = {d.pos.p, d.seq.p, d.tab.p, s.max_blocks};
  p.sinks = d.sinks.p, p.out = out.p, p.tiles = dt.p, p.n_tiles = int(tiles.size()), p.tile_q = tile_q;
  p.n_tokens = s.n_tokens, p.n_heads = n_heads, p.n_kv_heads = n_kv, p.window = window;
  p.key_tile = v.key_tile, p.sub_tile = v.sub_tile, p.impl = v.impl;
  attention_prefill(p, nullptr);
  return to_f32(out.download());
}

std::vector<float> run_decode(const Step& s, DevStep& d, int n_heads, int n_kv, int bs, int window) {
  int max_keys = window;
  if (!window)
    for (int c : s.ctx) max_keys = std::max(max_keys, c);
  return run_attention_decode_split(s, d, n_heads, n_kv, bs, window, max_keys);
}

// bf16 output of an fp32-softmax kernel (P rounded to bf16 for the MMA, out rounded once): rel L2 ~3e-3.
constexpr double kTol = 1e-2;

void check_case(const char* name, const std::vector<int>& ctx, const std::vector<int>& n_new, int n_kv, int bs,
                uint64_t seed, float q_range = 2.f) {
  const int n_heads = n_kv * 8;
  for (int window : {0, 128}) {
    Rng rng(seed * 7 + uint64_t(window));
    const Step s = make_step(ctx, n_new, bs, rng);
    const auto q = random_bf16(size_t(s.n_tokens) * n_heads * kD, rng, -q_range, q_range);
    const auto kv = random_bf16(size_t(s.num_blocks) * 2 * n_kv * bs * kD, rng, -2.f, 2.f);
    const auto sinks = random_bf16(size_t(n_heads), rng, -1.f, 4.f);
    const auto ref = reference(s, to_f32(q), to_f32(kv), to_f32(sinks), n_heads, n_kv, bs, window);
    DevStep d(s, q, kv, sinks);
    const auto dec = run_decode(s, d, n_heads, n_kv, bs, window);
    for (const Variant v : kVariants) {
      const auto out = run_prefill(s, d, n_heads, n_kv, bs, window, v);
      const ErrorStats e = compare(out, ref), ed = compare(out, dec);
      std::printf("%-22s window %3d %s tq %d kt %3d ks %d: %5d tokens  vs ref rel L2 %.2e max abs %.2e | vs "
                  "decode rel L2 %.2e max abs %.2e\n",
                  name, window, v.impl == 2 ? "wgmma" : "mma  ", v.tile_q, v.key_tile, v.sub_tile, s.n_tokens,
                  e.rel_l2, e.max_abs, ed.rel_l2, ed.max_abs);
      const std::string what = strfmt("%s window %d impl %d tile_q %d key_tile %d sub_tile %d", name, window, v.impl,
                                      v.tile_q, v.key_tile, v.sub_tile);
      expect_close(out, ref, kTol, (what + " vs fp32 reference").c_str());
      expect_close(out, dec, kTol, (what + " vs attention_decode").c_str());
    }
    expect_close(dec, ref, kTol, strfmt("%s window %d: attention_decode vs fp32 reference", name, window).c_str());
  }
}

TEST(AttentionPrefill, ChunksFromPositionZero) {
  for (int n : {1, 7, 100, 257, 1000}) check_case(strfmt("chunk %d from 0", n).c_str(), {n}, {n}, 8, 16, 10 + uint64_t(n));
}

TEST(AttentionPrefill, ChunksStartingMidSequence) {
  check_case("chunk 7 at 300", {307}, {7}, 8, 16, 21);
  check_case("chunk 100 at 37", {137}, {100}, 8, 16, 22);
  check_case("chunk 257 at 1200", {1457}, {257}, 8, 16, 23);
  check_case("chunk 1000 at 129", {1129}, {1000}, 8, 16, 24);
  check_case("chunk 64 at 8000", {8064}, {64}, 8, 16, 25);  // many key tiles per query tile
}

TEST(AttentionPrefill, MixedSequencesInOneLaunch) {
  // Two prefill chunks (one mid-sequence) and two decode tokens in one step.
  check_case("2 chunks + 2 decodes", {520, 700, 1000, 90}, {257, 1, 1000, 1}, 8, 16, 31);
  // Other geometry: one kv head, block size 32, chunk not a multiple of anything.
  check_case("1 kv head, bs 32", {333, 77}, {211, 77}, 1, 32, 32);
  // Peaky softmax (scores ~4x larger): the running max jumps often, exercising the lazy O rescale.
  check_case("peaky scores (q x4)", {900, 300}, {333, 300}, 8, 16, 33, 8.f);
}

// Sliding layers with their own KV group free the blocks that lie entirely below every query's window. Here
// those table entries point at an extra block of NaNs: the kernel must neither read it nor let it leak (a NaN
// value times a zero probability is NaN). The reference never touches it.
TEST(AttentionPrefill, SlidingLayerWithReleasedBlocks) {
  const int n_kv = 8, n_heads = 64, bs = 16, window = 128;
  Rng rng(41);
  Step s = make_step({1000, 700, 300, 520}, {300, 1, 300, 77}, bs, rng);
  const int nan_block = s.num_blocks++;
  int released = 0;
  for (size_t q = 0; q < s.ctx.size(); ++q) {
    const int first_visible = std::max(0, s.ctx[q] - s.n_new[q] - window + 1);  // of the first query
    for (int b = 0; (b + 1) * bs <= first_visible; ++b, ++released)
      s.block_tables[q * size_t(s.max_blocks) + size_t(b)] = nan_block;
  }
  ASSERT_GT(released, 40);
  auto kv = random_bf16(size_t(nan_block) * 2 * n_kv * bs * kD, rng, -2.f, 2.f);
  kv.resize(size_t(s.num_blocks) * 2 * n_kv * bs * kD, bf16{0x7FC0});  // quiet NaN
  const auto q = random_bf16(size_t(s.n_tokens) * n_heads * kD, rng, -2.f, 2.f);
  const auto sinks = random_bf16(size_t(n_heads), rng, -1.f, 4.f);
  const auto ref = reference(s, to_f32(q), to_f32(kv), to_f32(sinks), n_heads, n_kv, bs, window);
  DevStep d(s, q, kv, sinks);
  for (const Variant v : kVariants) {
    const auto out = run_prefill(s, d, n_heads, n_kv, bs, window, v);
    expect_close(out, ref, kTol,
                 strfmt("released blocks: impl %d tile_q %d key_tile %d sub_tile %d", v.impl, v.tile_q, v.key_tile,
                        v.sub_tile).c_str());
  }
}

// Timing only (no assertion on speed), 64 q heads / 8 kv heads, block size 16: prompts of 2048 and 8192 tokens
// from position 0, a 2048-token chunk at the end of a 32k context (chunked prefill), and a 64-token chunk at
// the end of an 8k context (few query tiles: no key split, latency-bound). Each row prints ms and the TFLOP/s
// of the attended (query, key) pairs; attention_decode (the path prefill chunks take today) on the same inputs.
TEST(AttentionPrefill, BenchPrompt) {
  const int n_kv = 8, n_heads = 64, bs = 16;
  struct Shape {
    int ctx, n;
  };
  for (const Shape sh : {Shape{2048, 2048}, Shape{8192, 8192}, Shape{32768, 2048}, Shape{8192, 64}}) {
    Rng rng{uint64_t(sh.ctx + sh.n)};
    const Step s = make_step({sh.ctx}, {sh.n}, bs, rng);
    const int n = s.n_tokens;
    const auto q = random_bf16(size_t(n) * n_heads * kD, rng, -2.f, 2.f);
    const auto kv = random_bf16(size_t(s.num_blocks) * 2 * n_kv * bs * kD, rng, -2.f, 2.f);
    const auto sinks = random_bf16(size_t(n_heads), rng, -1.f, 4.f);
    DevStep d(s, q, kv, sinks);
    for (int window : {0, 128}) {
      double keys = 0;  // attended (query, key) pairs per head
      for (int pos : s.positions) keys += window ? std::min(pos + 1, window) : pos + 1;
      const double flop = 4.0 * kD * n_heads * keys;  // QK^T + PV, 2 flop per multiply-add
      auto time_ms = [&](auto&& fn, int warmup, int iters) {
        return mean_ms_per_call(warmup, iters, [&](int) { fn(); });
      };
      DevBuf<bf16> out(size_t(n) * n_heads * kD);
      std::vector<std::vector<float>> outs;
      for (const Variant v : kVariants) {
        const auto tiles = make_prefill_tiles(s.token_offset, s.n_new, v.tile_q);
        DevBuf<PrefillTile> dt(tiles.size());
        CUDA_CHECK(cudaMemcpy(dt.p, tiles.data(), tiles.size() * sizeof(PrefillTile), cudaMemcpyHostToDevice));
        AttentionPrefillParams p;
        p.q = d.q.p, p.kv = {d.kv.p, bs, n_kv}, p.meta = {d.pos.p, d.seq.p, d.tab.p, s.max_blocks};
        p.sinks = d.sinks.p, p.out = out.p, p.tiles = dt.p, p.n_tiles = int(tiles.size()), p.tile_q = v.tile_q;
        p.n_tokens = n, p.n_heads = n_heads, p.n_kv_heads = n_kv, p.window = window;
        p.key_tile = v.key_tile, p.sub_tile = v.sub_tile, p.impl = v.impl;
        out.poison();
        const double ms = time_ms([&] { attention_prefill(p, nullptr); }, 3, 20);
        outs.push_back(to_f32(out.download()));
        std::printf("bench prefill ctx %5d n %4d window %3d %s tq %d kt %3d ks %d: %8.3f ms  %6.1f TFLOP/s\n", sh.ctx,
                    n, window, v.impl == 2 ? "wgmma" : "mma  ", v.tile_q, v.key_tile, v.sub_tile, ms, flop / ms * 1e-9);
      }
      // The current path (attention_decode, split-K: 256 keys per split for short/sliding ranges, else 4 splits).
      const int max_keys = window ? window : sh.ctx;
      const int n_splits = window || n <= 64 ? (max_keys + 255) / 256 : 4;
      const int kps = (max_keys + n_splits - 1) / n_splits;
      DevBuf<float> po(attention_partial_floats(n, n_heads, n_splits)), pml(size_t(n) * n_heads * n_splits * 2);
      AttentionDecodeParams dp;
      dp.q = d.q.p, dp.kv = {d.kv.p, bs, n_kv}, dp.meta = {d.pos.p, d.seq.p, d.tab.p, s.max_blocks};
      dp.sinks = d.sinks.p, dp.part_o = po.p, dp.part_ml = pml.p, dp.out = out.p;
      dp.n_tokens = n, dp.n_heads = n_heads, dp.n_kv_heads = n_kv, dp.window = window;
      dp.n_splits = n_splits, dp.keys_per_split = (kps + 127) / 128 * 128;
      out.poison();
      const double ms = time_ms([&] { attention_decode(dp, nullptr); }, 1, 3);
      std::printf("bench decode  ctx %5d n %4d window %3d (split %d x %d):        %8.3f ms  %6.1f TFLOP/s\n", sh.ctx, n,
                  window, n_splits, dp.keys_per_split, ms, flop / ms * 1e-9);
      const auto dec = to_f32(out.download());
      for (size_t i = 0; i < outs.size(); ++i)
        expect_close(outs[i], dec, kTol, strfmt("bench: prefill variant %zu vs decode", i).c_str());
    }
  }
}

}  // namespace
}  // namespace mxs::cuda::test
