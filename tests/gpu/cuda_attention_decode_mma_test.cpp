// attention_decode_mma (tensor-core decode attention, split-K) against the CPU reference
// (cpu::attention_with_sink: the spec's rounding points, bf16 P) and against the existing split kernel
// (attention_decode) on the same fresh random inputs: batches 1, 3, 8, 64 of decode tokens whose sequences
// have mixed contexts (one at the case's context 1, 7, 64, 129, 1000 or 4097, the others random below it), full
// and 128-window layers, block size 16 with shuffled non-contiguous tables (-1 past each context), several
// split sizes (the automatic one with 2, 3 and 4 cp.async stages, 64 keys with power-of-two over-provisioned
// splits as the runner's graphs use, 256, and one split), outputs and partials poisoned. Also: the counters come back zeroed and a second launch
// is bitwise identical; released sliding blocks (NaN) are never read; 1 kv head with block size 32; peaky
// scores. Tolerance: bf16 output of an fp32 online softmax whose P is rounded to bf16 unnormalized (the
// reference rounds the normalized P): rel L2 <= 1e-2 (measured ~2-4e-3), as for attention_prefill.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "cpu/cpu_ops.h"
#include "cuda/kernels/attention_decode.h"
#include "attention_test_util.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

constexpr int kD = 64;
constexpr double kTol = 1e-2;

// One decode token per sequence: sequence s sees keys [0, ctx[s]) (its own at position ctx[s] - 1).
struct Step {
  std::vector<int> ctx;
  std::vector<int32_t> positions, token_seq, block_tables;
  int max_blocks = 0, num_blocks = 0, n_tokens = 0;
};

Step make_step(const std::vector<int>& ctx, int bs, Rng& rng) {
  Step s;
  s.ctx = ctx;
  int total = 0;
  for (int c : ctx) s.max_blocks = std::max(s.max_blocks, (c + bs - 1) / bs), total += (c + bs - 1) / bs;
  s.num_blocks = total + 5;  // a few blocks nobody owns
  std::vector<int32_t> perm(size_t(s.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  for (int i = s.num_blocks - 1; i > 0; --i) std::swap(perm[size_t(i)], perm[size_t(rng.below(i + 1))]);
  size_t next = 0;
  s.block_tables.assign(ctx.size() * size_t(s.max_blocks), -1);  // -1 past a context: must never be read
  for (size_t q = 0; q < ctx.size(); ++q) {
    for (int b = 0; b < (ctx[q] + bs - 1) / bs; ++b) s.block_tables[q * size_t(s.max_blocks) + size_t(b)] = perm[next++];
    s.positions.push_back(ctx[q] - 1);
    s.token_seq.push_back(int32_t(q));
  }
  s.n_tokens = int(ctx.size());
  return s;
}

// cpu::attention_with_sink per (token, head) over the token's visible keys, threads over tokens.
std::vector<float> reference(const Step& s, const std::vector<bf16>& q, const std::vector<bf16>& kv,
                             const std::vector<bf16>& sinks, int n_heads, int n_kv, int bs, int window) {
  std::vector<bf16> out(size_t(s.n_tokens) * n_heads * kD);
  auto work = [&](int t0, int t1) {
    std::vector<float> scratch;
    std::vector<const bf16*> krows, vrows;
    for (int t = t0; t < t1; ++t) {
      const int pos = s.positions[size_t(t)], seq = s.token_seq[size_t(t)];
      const int first = window > 0 ? std::max(0, pos - window + 1) : 0;
      krows.clear(), vrows.clear();
      for (int j = first; j <= pos; ++j) {
        const int blk = s.block_tables[size_t(seq) * s.max_blocks + size_t(j / bs)];
        krows.push_back(&kv[(size_t(blk) * 2 + 0) * n_kv * bs * kD + size_t(j % bs) * kD]);
        vrows.push_back(&kv[(size_t(blk) * 2 + 1) * n_kv * bs * kD + size_t(j % bs) * kD]);
      }
      scratch.resize(krows.size());
      for (int h = 0; h < n_heads; ++h)
        cpu::attention_with_sink(&q[(size_t(t) * n_heads + h) * kD], krows.data(), vrows.data(),
                                 (h / (n_heads / n_kv)) * bs * kD, int(krows.size()), kD, 0.125f,
                                 bf16_to_f32(sinks[size_t(h)]), &out[(size_t(t) * n_heads + h) * kD], scratch.data());
    }
  };
  const int nt = int(std::max(1u, std::min(32u, std::thread::hardware_concurrency())));
  std::vector<std::thread> th;
  for (int i = 0; i < nt; ++i) th.emplace_back(work, s.n_tokens * i / nt, s.n_tokens * (i + 1) / nt);
  for (auto& x : th) x.join();
  return to_f32(out);
}

int max_keys_seen(const Step& s, int window) {
  int m = 1;
  for (int c : s.ctx) m = std::max(m, window > 0 ? std::min(c, window) : c);
  return m;
}
int next_pow2(int v) {
  int p = 1;
  while (p < v) p *= 2;
  return p;
}

// attention_decode_mma with (keys_per_split, n_splits); checks the counters come back zeroed and that a second
// launch over poisoned outputs is bitwise identical. Returns the output as fp32.
std::vector<float> run_mma(const Step& s, DevStep& d, int n_heads, int n_kv, int bs, int window, int kps,
                           int n_splits, int stages, const std::string& what, bool cluster_merge = true) {
  DevBuf<float> po(attention_partial_floats(s.n_tokens, n_heads, n_splits)),
      pml(size_t(s.n_tokens) * n_heads * n_splits * 2);
  DevBuf<unsigned> counters(size_t(s.n_tokens) * n_kv);
  CUDA_CHECK(cudaMemset(counters.p, 0, counters.n * sizeof(unsigned)));
  DevBuf<bf16> out(size_t(s.n_tokens) * n_heads * kD);
  po.poison(), pml.poison(), out.poison();
  AttentionDecodeParams p;
  p.q = d.q.p, p.kv = {d.kv.p, bs, n_kv}, p.meta = {d.pos.p, d.seq.p, d.tab.p, s.max_blocks}, p.sinks = d.sinks.p;
  p.part_o = po.p, p.part_ml = pml.p, p.out = out.p, p.counters = counters.p;
  p.n_tokens = s.n_tokens, p.n_heads = n_heads, p.n_kv_heads = n_kv, p.window = window;
  p.n_splits = n_splits, p.keys_per_split = kps, p.cluster_merge = cluster_merge;
  auto launch = [&] { stages ? attention_decode_mma_stages(p, stages, nullptr) : attention_decode_mma(p, nullptr); };
  launch();
  const auto first = out.download();
  for (unsigned c : counters.download()) EXPECT_EQ(c, 0u) << what << ": counter not reset";
  out.poison();
  launch();
  const auto second = out.download();
  EXPECT_EQ(0, std::memcmp(first.data(), second.data(), first.size() * sizeof(bf16))) << what << ": not deterministic";
  return to_f32(first);
}

// Split configurations for a launch whose tokens see at most `keys` keys.
struct SplitCfg {
  int kps, n_splits;
  const char* name;
  int stages;  // 0: attention_decode_mma (the default ring depth), else attention_decode_mma_stages
};
std::vector<SplitCfg> split_configs(int n_tokens, int n_kv, int keys) {
  std::vector<SplitCfg> v;
  const int auto_kps = attention_decode_mma_keys_per_split(n_tokens, n_kv, keys, 132);
  v.push_back({auto_kps, (keys + auto_kps - 1) / auto_kps, "auto", 0});
  v.push_back({auto_kps, (keys + auto_kps - 1) / auto_kps, "auto, 2 stages", 2});
  v.push_back({auto_kps, (keys + auto_kps - 1) / auto_kps, "auto, 4 stages", 4});
  v.push_back({64, next_pow2((keys + 63) / 64), "64 x pow2", 0});
  v.push_back({256, (keys + 255) / 256, "256", 0});
  const int one = (keys + 15) / 16 * 16;
  if (one <= 4096) v.push_back({one, 1, "one split", 0});
  return v;
}

void check_case(const std::vector<int>& ctx, int n_kv, int bs, uint64_t seed, float q_range = 2.f,
                std::vector<int> windows = {0, 128}) {
  const int n_heads = n_kv * 8;
  for (int window : windows) {
    Rng rng(seed * 7 + uint64_t(window));
    const Step s = make_step(ctx, bs, rng);
    const auto q = random_bf16(size_t(s.n_tokens) * n_heads * kD, rng, -q_range, q_range);
    const auto kv = random_bf16(size_t(s.num_blocks) * 2 * n_kv * bs * kD, rng, -2.f, 2.f);
    const auto sinks = random_bf16(size_t(n_heads), rng, -1.f, 4.f);
    const auto ref = reference(s, q, kv, sinks, n_heads, n_kv, bs, window);
    DevStep d(s, q, kv, sinks);
    const auto old = run_attention_decode_split(s, d, n_heads, n_kv, bs, window, max_keys_seen(s, window));
    const int keys = max_keys_seen(s, window);
    const int max_ctx = *std::max_element(ctx.begin(), ctx.end());
    for (const SplitCfg& c : split_configs(s.n_tokens, n_kv, keys)) {
      const std::string what = strfmt("batch %d ctx %d window %d n_kv %d bs %d, %s (%d x %d keys)", s.n_tokens,
                                      max_ctx, window, n_kv, bs, c.name, c.n_splits, c.kps);
      const auto out = run_mma(s, d, n_heads, n_kv, bs, window, c.kps, c.n_splits, c.stages, what);
      // The cluster merge (4-16 splits) and the last CTA's merge through L2 run the same operations.
      const auto global = run_mma(s, d, n_heads, n_kv, bs, window, c.kps, c.n_splits, c.stages, what, false);
      EXPECT_EQ(0, std::memcmp(out.data(), global.data(), out.size() * sizeof(float)))
          << what << ": cluster and global merges differ";
      const ErrorStats e = compare(out, ref), eo = compare(out, old);
      std::printf("%-72s vs cpu rel L2 %.2e max abs %.2e | vs attention_decode rel L2 %.2e\n", what.c_str(), e.rel_l2,
                  e.max_abs, eo.rel_l2);
      expect_close(out, ref, kTol, (what + " vs cpu::attention_with_sink").c_str());
      expect_close(out, old, kTol, (what + " vs attention_decode").c_str());
    }
  }
}

// Contexts: sequence 0 at `ctx`, the others uniform in [1, ctx].
std::vector<int> mixed_contexts(int batch, int ctx, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> v(static_cast<size_t>(batch), 0);
  for (int i = 0; i < batch; ++i) v[size_t(i)] = i == 0 ? ctx : 1 + rng.below(ctx);
  return v;
}

TEST(AttentionDecodeMma, BatchesAndContexts) {
  for (int batch : {1, 3, 8, 64})
    for (int ctx : {1, 7, 64, 129, 1000, 4097})
      check_case(mixed_contexts(batch, ctx, uint64_t(batch * 10007 + ctx)), 8, 16, uint64_t(batch * 131 + ctx));
}

TEST(AttentionDecodeMma, EqualLongContexts) {
  check_case(std::vector<int>(8, 4097), 8, 16, 7);
  check_case(std::vector<int>(64, 1024), 8, 16, 8);
}

TEST(AttentionDecodeMma, OneKvHeadBlockSize32) { check_case(mixed_contexts(5, 777, 3), 1, 32, 9); }

// Block size 8: a 16-key chunk spans two blocks, and the one-split launch (4112 keys = 515 table entries) reads
// the block table from global memory instead of staging it in smem.
TEST(AttentionDecodeMma, BlockSize8AndUnstagedTable) { check_case(mixed_contexts(3, 4097, 5), 8, 8, 11); }

TEST(AttentionDecodeMma, PeakyScores) {
  // Scores ~4x larger: the running max moves often (the O rescale path) and P is far from uniform.
  check_case(mixed_contexts(8, 2000, 4), 8, 16, 10, 8.f);
}

// Sliding layers with their own KV group release the blocks below the window; here those entries point at a
// block of NaNs: the kernel must neither read it nor let it leak (NaN x 0 = NaN).
TEST(AttentionDecodeMma, SlidingLayerWithReleasedBlocks) {
  const int n_kv = 8, n_heads = 64, bs = 16, window = 128;
  Rng rng(41);
  Step s = make_step({1000, 700, 130, 4097, 129, 2000}, bs, rng);
  const int nan_block = s.num_blocks++;
  int released = 0;
  for (size_t q = 0; q < s.ctx.size(); ++q) {
    const int first_visible = std::max(0, s.ctx[q] - window);
    for (int b = 0; (b + 1) * bs <= first_visible; ++b, ++released)
      s.block_tables[q * size_t(s.max_blocks) + size_t(b)] = nan_block;
  }
  ASSERT_GT(released, 100);
  auto kv = random_bf16(size_t(nan_block) * 2 * n_kv * bs * kD, rng, -2.f, 2.f);
  kv.resize(size_t(s.num_blocks) * 2 * n_kv * bs * kD, bf16{0x7FC0});  // quiet NaN
  const auto q = random_bf16(size_t(s.n_tokens) * n_heads * kD, rng, -2.f, 2.f);
  const auto sinks = random_bf16(size_t(n_heads), rng, -1.f, 4.f);
  const auto ref = reference(s, q, kv, sinks, n_heads, n_kv, bs, window);
  DevStep d(s, q, kv, sinks);
  for (const SplitCfg& c : split_configs(s.n_tokens, n_kv, window)) {
    const std::string what = strfmt("released blocks, %s (%d x %d keys)", c.name, c.n_splits, c.kps);
    expect_close(run_mma(s, d, n_heads, n_kv, bs, window, c.kps, c.n_splits, c.stages, what), ref, kTol, what.c_str());
  }
}

TEST(AttentionDecodeMma, RejectsUnsupportedShapes) {
  AttentionDecodeParams p;
  p.n_tokens = 1, p.n_heads = 64, p.n_kv_heads = 8, p.kv = {nullptr, 16, 8}, p.n_splits = 1, p.keys_per_split = 40;
  EXPECT_THROW(attention_decode_mma(p, nullptr), Error);  // not a multiple of 16
  p.keys_per_split = 64, p.kv.block_size = 24;
  EXPECT_THROW(attention_decode_mma(p, nullptr), Error);  // block size not a power of two
  p.kv.block_size = 16;
  p.keys_per_split = 64, p.n_heads = 32;
  EXPECT_THROW(attention_decode_mma(p, nullptr), Error);  // GQA group 4
  p.n_heads = 64, p.n_splits = 2;
  EXPECT_THROW(attention_decode_mma(p, nullptr), Error);  // splits without counters
  p.n_splits = 1;
  EXPECT_THROW(attention_decode_mma_stages(p, 5, nullptr), Error);  // ring depth
}

}  // namespace
}  // namespace mxs::cuda::test
