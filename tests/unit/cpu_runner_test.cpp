// CpuRunner on random in-memory weights: results are bit-identical however tokens are grouped (chunks,
// prefill + decode, multi-sequence batches) and with one KV pool or two (sliding layers apart), the sliding
// window is exactly 128 keys, per-sequence failures stay per-sequence, and the tiny-model geometry runs 300
// tokens without NaN.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"

namespace mxs::cpu {
namespace {

struct Model {
  std::unique_ptr<RandomWeights> rw;
  std::unique_ptr<CpuRunner> runner;
  explicit Model(const ModelConfig& c, int num_blocks = 64, ExpertCombine combine = ExpertCombine::kSequentialBf16,
                 uint64_t seed = 42) {
    rw = make_random_weights(c, seed);
    CpuRunnerOptions o;
    o.num_blocks = num_blocks;
    o.combine = combine;
    runner = std::make_unique<CpuRunner>(rw->weights, o);
  }
};

std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t s = seed;
  for (auto& x : t) {
    s = s * 1664525u + 1013904223u;
    x = int32_t((s >> 8) % uint32_t(vocab));
  }
  return t;
}

std::vector<int32_t> iota_table(int n_blocks, int first) {
  std::vector<int32_t> t(static_cast<size_t>(n_blocks));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Runs `tokens` of one sequence in consecutive chunks (sizes cycle through `chunks`); returns the logits of
// every token, [n, vocab].
std::vector<float> run_in_chunks(CpuRunner& r, const std::vector<int32_t>& tokens, const std::vector<int>& chunks,
                                 const std::vector<int32_t>& table) {
  const int V = r.config().vocab_size, n = int(tokens.size());
  std::vector<float> all(size_t(n) * size_t(V));
  int done = 0;
  for (size_t ci = 0; done < n; ++ci) {
    const int m = std::min(chunks[ci % chunks.size()], n - done);
    StepBatch b;
    for (int i = 0; i < m; ++i) {
      b.tokens.push_back(tokens[size_t(done + i)]);
      b.positions.push_back(done + i);
    }
    SequenceStep s;
    s.seq_id = 1;
    s.num_tokens = m;
    s.context_len = done + m;
    s.block_table = table;
    b.seqs.push_back(s);
    StepOutput out;
    std::vector<float> logits;
    r.step_all_logits(b, &out, &logits);
    std::copy(logits.begin(), logits.end(), all.begin() + std::ptrdiff_t(size_t(done) * size_t(V)));
    done += m;
  }
  return all;
}

void expect_bit_identical(const std::vector<float>& a, const std::vector<float>& b, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  size_t mismatches = 0;
  for (size_t i = 0; i < a.size(); ++i) mismatches += (a[i] != b[i]);
  EXPECT_EQ(mismatches, 0u) << what;
}

TEST(CpuRunner, ChunkedPrefillEqualsOneChunk) {
  const ModelConfig c = small_test_config();
  const auto tokens = random_tokens(150, c.vocab_size, 7);  // > 128: sliding layers drop keys
  const auto table = iota_table(10, 0);
  Model m(c);
  const auto one = run_in_chunks(*m.runner, tokens, {150}, table);
  for (auto chunks : std::vector<std::vector<int>>{{1}, {7}, {64}, {3, 50, 1, 96}}) {
    Model fresh(c);
    expect_bit_identical(run_in_chunks(*fresh.runner, tokens, chunks, table), one, "chunked prefill");
  }
  for (float v : one) ASSERT_TRUE(std::isfinite(v));
}

TEST(CpuRunner, PrefillThenDecodeEqualsSingleChunkAndGreedyIsArgmax) {
  const ModelConfig c = small_test_config();
  const int V = c.vocab_size, n_prompt = 100, n_decode = 20;
  const auto table = iota_table(8, 0);
  SamplingParams greedy;
  greedy.temperature = 0.0f;

  Model m(c);
  std::vector<int32_t> seq = random_tokens(n_prompt, V, 3);
  std::vector<std::vector<float>> step_logits;
  int32_t next = -1;
  for (int step = 0; step <= n_decode; ++step) {
    StepBatch b;
    const int first = step == 0 ? 0 : int(seq.size()) - 1;
    for (int p = first; p < int(seq.size()); ++p) {
      b.tokens.push_back(seq[size_t(p)]);
      b.positions.push_back(p);
    }
    SequenceStep s;
    s.seq_id = 9;
    s.num_tokens = int(b.tokens.size());
    s.context_len = int(seq.size());
    s.block_table = table;
    s.sample = true;
    s.return_logits = true;
    s.sampling = &greedy;
    b.seqs.push_back(s);
    StepOutput out;
    m.runner->step(b, &out);
    ASSERT_EQ(out.samples.size(), 1u);
    ASSERT_TRUE(out.samples[0].ok) << out.samples[0].error;
    const auto& lg = out.samples[0].logits;
    next = out.samples[0].token;
    EXPECT_EQ(next, int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin()));
    step_logits.push_back(lg);
    if (step < n_decode) seq.push_back(next);
  }
  Model ref(c);
  const auto all = run_in_chunks(*ref.runner, seq, {int(seq.size())}, table);
  for (int step = 0; step <= n_decode; ++step) {
    const size_t row = size_t(n_prompt - 1 + step);
    std::vector<float> expect(all.begin() + std::ptrdiff_t(row * V), all.begin() + std::ptrdiff_t((row + 1) * V));
    expect_bit_identical(step_logits[size_t(step)], expect, "decode step vs single chunk");
  }
}

TEST(CpuRunner, MultiSequenceBatchEqualsEachSequenceAlone) {
  const ModelConfig c = small_test_config();
  const int V = c.vocab_size;
  const auto a = random_tokens(40, V, 11), b = random_tokens(31, V, 12), d = random_tokens(30, V, 13);
  const auto ta = iota_table(3, 0), tb = iota_table(2, 10), td = iota_table(2, 20);
  // Alone: each sequence in its own fresh runner, one chunk.
  auto alone = [&](const std::vector<int32_t>& toks, const std::vector<int32_t>& table) {
    Model m(c);
    return run_in_chunks(*m.runner, toks, {int(toks.size())}, table);
  };
  const auto la = alone(a, ta), lb = alone(b, tb), ld = alone(d, td);

  // Batched: b has 30 tokens cached and decodes its 31st; d has 20 cached and prefills 10 more; a prefills 40.
  Model m(c);
  run_in_chunks(*m.runner, std::vector<int32_t>(b.begin(), b.begin() + 30), {30}, tb);
  run_in_chunks(*m.runner, std::vector<int32_t>(d.begin(), d.begin() + 20), {20}, td);
  StepBatch batch;
  auto add = [&](uint64_t id, const std::vector<int32_t>& toks, int from, const std::vector<int32_t>& table) {
    SequenceStep s;
    s.seq_id = id;
    s.token_offset = int(batch.tokens.size());
    for (int p = from; p < int(toks.size()); ++p) {
      batch.tokens.push_back(toks[size_t(p)]);
      batch.positions.push_back(p);
    }
    s.num_tokens = int(toks.size()) - from;
    s.context_len = int(toks.size());
    s.block_table = table;
    s.return_logits = true;
    batch.seqs.push_back(s);
  };
  add(1, a, 0, ta);
  add(2, b, 30, tb);
  add(3, d, 20, td);
  StepOutput out;
  m.runner->step(batch, &out);
  ASSERT_EQ(out.samples.size(), 3u);
  auto last_row = [&](const std::vector<float>& all, int n) {
    const auto row = all.begin() + std::ptrdiff_t(size_t(n - 1) * V);
    return std::vector<float>(row, row + V);
  };
  expect_bit_identical(out.samples[0].logits, last_row(la, 40), "seq a");
  expect_bit_identical(out.samples[1].logits, last_row(lb, 31), "seq b");
  expect_bit_identical(out.samples[2].logits, last_row(ld, 30), "seq d");
}

// With one layer, the logits at position p depend on token j only through attention. A sliding layer
// sees j from p = j .. j + 127 (128 keys including itself) and no further.
TEST(CpuRunner, SlidingWindowIsTheTokenItselfPlus127Previous) {
  for (bool sliding : {true, false}) {
    ModelConfig c = small_test_config(256, 64, 1);
    c.layer_sliding = {sliding};
    const auto table = iota_table(12, 0);
    auto tokens = random_tokens(180, c.vocab_size, 5);
    Model m1(c), m2(c);
    const auto base = run_in_chunks(*m1.runner, tokens, {180}, table);
    const int j = 20;
    tokens[size_t(j)] = (tokens[size_t(j)] + 1) % c.vocab_size;
    const auto changed = run_in_chunks(*m2.runner, tokens, {180}, table);
    auto row_differs = [&](int p) {
      for (int v = 0; v < c.vocab_size; ++v)
        if (base[size_t(p) * size_t(c.vocab_size) + size_t(v)] != changed[size_t(p) * size_t(c.vocab_size) + size_t(v)])
          return true;
      return false;
    };
    EXPECT_FALSE(row_differs(j - 1));
    EXPECT_TRUE(row_differs(j));
    EXPECT_TRUE(row_differs(j + 126));
    EXPECT_TRUE(row_differs(j + 127)) << "127 back is inside the window";
    EXPECT_EQ(row_differs(j + 128), !sliding) << "128 back is outside the window on sliding layers only";
    EXPECT_EQ(row_differs(j + 129), !sliding);
  }
}

TEST(CpuRunner, FailuresStayWithTheirSequence) {
  const ModelConfig c = small_test_config();
  const int V = c.vocab_size;
  const auto good = random_tokens(12, V, 21);
  const auto table_good = iota_table(1, 0);
  Model alone_m(c);
  const auto alone = run_in_chunks(*alone_m.runner, good, {12}, table_good);

  Model m(c);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  SamplingParams bad_params;
  bad_params.top_p = 0.0f;  // out of range: the sampler refuses it
  const std::vector<int32_t> table_bad = {999};
  StepBatch batch;
  std::vector<SequenceStep> seqs(4);
  auto add = [&](SequenceStep& s, uint64_t id, const std::vector<int32_t>& toks, std::span<const int32_t> table) {
    s.seq_id = id;
    s.token_offset = int(batch.tokens.size());
    for (size_t p = 0; p < toks.size(); ++p) {
      batch.tokens.push_back(toks[p]);
      batch.positions.push_back(int32_t(p));
    }
    s.num_tokens = int(toks.size());
    s.context_len = int(toks.size());
    s.block_table = table;
    s.sample = true;
    s.sampling = &greedy;
    batch.seqs.push_back(s);
  };
  const std::vector<int32_t> table2 = {1}, table3 = {2};
  add(seqs[0], 100, random_tokens(5, V, 1), table_bad);                // block id outside the pool
  add(seqs[1], 101, good, table_good);                                  // fine
  add(seqs[2], 102, {3, V + 5, 4}, table2);                             // token id outside the vocabulary
  add(seqs[3], 103, random_tokens(4, V, 2), table3);                    // sampler error
  batch.seqs[3].sampling = &bad_params;
  batch.seqs[1].return_logits = true;
  StepOutput out;
  m.runner->step(batch, &out);
  ASSERT_EQ(out.samples.size(), 4u);
  EXPECT_FALSE(out.samples[0].ok);
  EXPECT_NE(out.samples[0].error.find("block_table[0] = 999"), std::string::npos) << out.samples[0].error;
  EXPECT_TRUE(out.samples[1].ok);
  EXPECT_FALSE(out.samples[2].ok);
  EXPECT_NE(out.samples[2].error.find("outside the vocabulary"), std::string::npos) << out.samples[2].error;
  EXPECT_FALSE(out.samples[3].ok);
  EXPECT_NE(out.samples[3].error.find("top_p"), std::string::npos) << out.samples[3].error;
  expect_bit_identical(out.samples[1].logits,
                       std::vector<float>(alone.end() - V, alone.end()), "good sequence beside failing ones");

  // A failing sequence without `sample` has no output slot (model_runner.h: one per sampled sequence).
  StepBatch quiet = batch;
  quiet.seqs[0].sample = false;
  m.runner->step(quiet, &out);
  ASSERT_EQ(out.samples.size(), 3u);
  EXPECT_EQ(out.samples[0].seq_id, 101u);
  EXPECT_TRUE(out.samples[0].ok);

  // A batch the runner cannot run at all is a caller bug: it throws.
  StepBatch broken = batch;
  broken.seqs[1].num_tokens = 1000;
  EXPECT_THROW(m.runner->step(broken, &out), Error);
}

TEST(CpuRunner, ExpertCombineVariantsAgreeClosely) {
  const ModelConfig c = small_test_config();
  const auto tokens = random_tokens(20, c.vocab_size, 31);
  const auto table = iota_table(2, 0);
  Model seq(c, 8, ExpertCombine::kSequentialBf16), dense(c, 8, ExpertCombine::kDenseFp32);
  const auto a = run_in_chunks(*seq.runner, tokens, {20}, table);
  const auto b = run_in_chunks(*dense.runner, tokens, {20}, table);
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    max_abs = std::max(max_abs, double(std::fabs(a[i])));
  }
  EXPECT_LT(max_diff, 0.05 * max_abs);
}

TEST(CpuRunner, KvBudgetSizing) {
  const ModelConfig c = small_test_config();
  const size_t per = PagedKvCache::bytes_per_block(c.num_layers, c.num_kv_heads, c.head_dim, 16);
  EXPECT_EQ(per, size_t(2 * 2 * 16 * 2 * 64 * 2));
  EXPECT_EQ(kv_blocks_for_budget(c, 16, 10 * per + 1), 10);
  auto rw = make_random_weights(c, 1);
  CpuRunnerOptions o;
  o.kv_budget_bytes = 5 * per;
  CpuRunner r(rw->weights, o);
  EXPECT_EQ(r.kv_layout().num_blocks, 5);
  EXPECT_EQ(r.kv_layout().block_size, 16);
  o.kv_budget_bytes = per - 1;
  EXPECT_THROW(CpuRunner(rw->weights, o), Error);
}

// Two KV groups (the sliding layer in its own 12-block pool) give bit-identical logits to one shared pool,
// for a 400-token sequence run in mixed chunks. The sliding table maps logical block b to physical b % 12
// (a ring: a block is overwritten once the window has passed it) and holds kNoBlock below the window, so a
// read outside the window would see another position's K/V or fail.
TEST(CpuRunner, TwoKvGroupsEqualOneGroup) {
  const ModelConfig c = small_test_config();  // layer 0 slides (window 128), layer 1 is full attention
  const int V = c.vocab_size, n = 400, bs = 16, ring = 12;
  const auto tokens = random_tokens(n, V, 11);
  const auto table = iota_table(25, 0);
  Model one(c);
  const auto ref = run_in_chunks(*one.runner, tokens, {1, 7, 40, 3, 33}, table);

  auto rw = make_random_weights(c, 42);
  CpuRunnerOptions o;
  o.num_blocks = 25;
  o.num_sliding_blocks = ring;
  CpuRunner two(rw->weights, o);
  EXPECT_EQ(two.kv_layout().num_blocks, 25);
  EXPECT_EQ(two.kv_layout().num_sliding_blocks, ring);
  ASSERT_NE(two.sliding_kv_cache(), nullptr);
  EXPECT_EQ(two.kv_cache().bytes(), 25 * PagedKvCache::bytes_per_block(1, c.num_kv_heads, c.head_dim, bs));
  EXPECT_EQ(two.sliding_kv_cache()->bytes(), ring * PagedKvCache::bytes_per_block(1, c.num_kv_heads, c.head_dim, bs));

  std::vector<float> got(size_t(n) * size_t(V));
  const std::vector<int> chunks = {1, 7, 40, 3, 33};
  int done = 0;
  for (size_t ci = 0; done < n; ++ci) {
    const int m = std::min(chunks[ci % chunks.size()], n - done);
    StepBatch b;
    for (int i = 0; i < m; ++i) {
      b.tokens.push_back(tokens[size_t(done + i)]);
      b.positions.push_back(done + i);
    }
    std::vector<int32_t> sliding((size_t(done + m) + bs - 1) / bs, kNoBlock);
    const int first = sliding_window_start(done, c.sliding_window) / bs;
    for (int blk = first; blk < int(sliding.size()); ++blk) sliding[size_t(blk)] = blk % ring;
    ASSERT_LE(int(sliding.size()) - first, ring);
    SequenceStep s;
    s.seq_id = 1;
    s.num_tokens = m;
    s.context_len = done + m;
    s.block_table = table;
    s.sliding_block_table = sliding;
    b.seqs.push_back(s);
    StepOutput out;
    std::vector<float> logits;
    two.step_all_logits(b, &out, &logits);
    std::copy(logits.begin(), logits.end(), got.begin() + std::ptrdiff_t(size_t(done) * size_t(V)));
    done += m;
  }
  expect_bit_identical(got, ref, "two KV groups vs one");

  // A window entry that is kNoBlock (or outside the sliding pool) fails the sequence, not the runner.
  StepBatch b;
  b.tokens = {5};
  b.positions = {200};
  std::vector<int32_t> sliding(13, kNoBlock);
  sliding[12] = 0;  // the window of position 200 is (72, 200]: blocks 4..12 are read
  SequenceStep s;
  s.seq_id = 2;
  s.num_tokens = 1;
  s.context_len = 201;
  s.block_table = table;
  s.sliding_block_table = sliding;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  s.sample = true;
  s.sampling = &greedy;
  b.seqs.push_back(s);
  StepOutput out;
  two.step(b, &out);
  ASSERT_EQ(out.samples.size(), 1u);
  EXPECT_FALSE(out.samples[0].ok);
  EXPECT_NE(out.samples[0].error.find("sliding_block_table[4] = -1"), std::string::npos) << out.samples[0].error;

  // A sliding pool for a model without sliding layers is refused.
  ModelConfig full_only = c;
  full_only.layer_sliding.assign(size_t(c.num_layers), false);
  auto rw_full = make_random_weights(full_only, 1);
  EXPECT_THROW(CpuRunner(rw_full->weights, o), Error);

  // Budget sizing with two groups: the sliding pool comes first, the rest is full-layer blocks.
  const size_t per_layer = PagedKvCache::bytes_per_block(1, c.num_kv_heads, c.head_dim, bs);
  CpuRunnerOptions ob;
  ob.num_sliding_blocks = ring;
  ob.kv_budget_bytes = ring * per_layer + 7 * per_layer + 1;
  EXPECT_EQ(CpuRunner(rw->weights, ob).kv_layout().num_blocks, 7);
}

// The tiny preset's geometry (real vocabulary, hidden 64, 16 heads / 2 kv heads, 8 experts, 4 layers).
TEST(CpuRunner, TinyGeometryRuns300TokensWithoutNaN) {
  ModelConfig c = small_test_config(201088, 64, 4, 16, 2, 8, 4, 64);
  Model m(c, 32);
  bool finite = true;
  m.runner->set_layer_hook([&](int, const bf16* x, int n) {
    for (int i = 0; i < n * c.hidden_size; ++i) finite = finite && std::isfinite(bf16_to_f32(x[i]));
  });
  const auto table = iota_table(20, 0);
  std::vector<int32_t> seq = random_tokens(290, c.vocab_size, 77);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  for (int step = 0; step < 11; ++step) {
    StepBatch b;
    const int first = step == 0 ? 0 : int(seq.size()) - 1;
    for (int p = first; p < int(seq.size()); ++p) {
      b.tokens.push_back(seq[size_t(p)]);
      b.positions.push_back(p);
    }
    SequenceStep s;
    s.num_tokens = int(b.tokens.size());
    s.context_len = int(seq.size());
    s.block_table = table;
    s.sample = true;
    s.return_logits = true;
    s.sampling = &greedy;
    b.seqs.push_back(s);
    StepOutput out;
    m.runner->step(b, &out);
    ASSERT_TRUE(out.samples[0].ok) << out.samples[0].error;
    for (float v : out.samples[0].logits) ASSERT_TRUE(std::isfinite(v));
    seq.push_back(out.samples[0].token);
  }
  EXPECT_EQ(seq.size(), 301u);
  EXPECT_TRUE(finite);
}

}  // namespace
}  // namespace mxs::cpu
