// GPU sampling against the CPU sampler (src/cpu/sampler.h), token for token, over batches of rows that cover
// every parameter (greedy, penalties, temperature, top-k, top-p, min-p, seeds, logprobs) on the real vocabulary
// size; the three ways to find the kept set (none, top-k select, sort) against each other bit for bit, the per-row
// sorts against the segmented sort, and the spread path (rows without penalties or logprobs, with and without cuts)
// against the one-CTA path; the draw's distribution against the softmax; the device copy of sample_uniform against
// the host one; and the time of one sample_tokens call at the real vocabulary (printed, not checked).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "cpu/sampler.h"
#include "cuda/kernels/dense_gemm.h"
#include "cuda/kernels/sampling.h"
#include "engine/sampling_params.h"
#include "cuda/event_timing.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

constexpr int kVocab = 201088;  // gpt-oss

TEST(CudaSampling, SampleUniformMatchesHost) {
  std::vector<uint64_t> seeds, steps;
  Rng rng(5);
  for (int i = 0; i < 4096; ++i) seeds.push_back(rng.next()), steps.push_back(uint64_t(i % 300));
  DevBuf<uint64_t> ds(seeds), dt(steps);
  DevBuf<float> out(seeds.size());
  sample_uniform_device(ds.p, dt.p, out.p, int(seeds.size()), nullptr);
  const auto u = out.download();
  for (size_t i = 0; i < u.size(); ++i) ASSERT_EQ(u[i], sample_uniform(seeds[i], steps[i])) << i;
}

// One batch as the runner builds it: per-row SampleSeqParams and the distinct penalty id lists. step =
// outputs[s].size() (the CPU sampler's RNG counter).
struct HostBatch {
  std::vector<SamplingParams> cases;
  std::vector<std::vector<int32_t>> prompts, outputs;
  std::vector<SampleSeqParams> sp;
  std::vector<int32_t> ids, counts;
};

HostBatch make_batch(const std::vector<SamplingParams>& cases, std::vector<std::vector<int32_t>> prompts,
                     std::vector<std::vector<int32_t>> outputs) {
  HostBatch hb;
  hb.cases = cases;
  hb.prompts = std::move(prompts);
  hb.outputs = std::move(outputs);
  for (size_t s = 0; s < cases.size(); ++s) {
    const SamplingParams& a = cases[s];
    SampleSeqParams q;
    q.temperature = a.temperature, q.top_p = a.top_p, q.min_p = a.min_p, q.top_k = a.top_k;
    q.frequency_penalty = a.frequency_penalty, q.presence_penalty = a.presence_penalty;
    q.repetition_penalty = a.repetition_penalty, q.seed = a.seed, q.step = hb.outputs[s].size();
    q.want_logprob = a.logprobs, q.top_logprobs = a.top_logprobs;
    q.rep_offset = int(hb.ids.size());
    std::vector<int32_t> seen;
    for (auto* v : {&hb.prompts[s], &hb.outputs[s]})
      for (int32_t id : *v)
        if (std::find(seen.begin(), seen.end(), id) == seen.end())
          seen.push_back(id), hb.ids.push_back(id), hb.counts.push_back(1);
    q.n_rep = int(hb.ids.size()) - q.rep_offset;
    q.out_offset = int(hb.ids.size());
    std::vector<int32_t> distinct;
    for (int32_t id : hb.outputs[s])
      if (std::find(distinct.begin(), distinct.end(), id) == distinct.end()) distinct.push_back(id);
    for (int32_t id : distinct) {
      hb.ids.push_back(id);
      hb.counts.push_back(int32_t(std::count(hb.outputs[s].begin(), hb.outputs[s].end(), id)));
    }
    q.n_out = int(hb.ids.size()) - q.out_offset;
    hb.sp.push_back(q);
  }
  return hb;
}

// The rows `pick` selects, listed as the runner lists them (SamplingParamsDev::sort_rows, cut_rows): their count, or
// -1 past kRowSortMax (sample_tokens then takes its other way).
template <typename Pick>
int list_rows(const HostBatch& hb, Pick pick, int* rows) {
  int n = 0;
  for (size_t r = 0; r < hb.sp.size(); ++r)
    if (pick(hb.sp[r])) {
      if (n < kRowSortMax) rows[n] = int(r);
      ++n;
    }
  return n <= kRowSortMax ? n : -1;
}

// Workspaces for up to max_rows rows of V (as the runner allocates them) and one sample_tokens call.
struct DeviceSampler {
  int max_rows, V;
  DevBuf<float> z, zs;
  DevBuf<int32_t> oi, o, offs;
  size_t temp_bytes;
  DevBuf<char> temp;
  DevBuf<SampleResultDev> res;
  DevBuf<char> spread;  // the spread path's workspace (zeroed; the kernels leave its zeroed parts zeroed)
  static std::vector<int32_t> offsets(int rows, int V) {
    std::vector<int32_t> v;
    for (int s = 0; s <= rows; ++s) v.push_back(s * V);
    return v;
  }
  DeviceSampler(int rows, int vocab)
      : max_rows(rows), V(vocab), z(size_t(rows) * vocab), zs(size_t(rows) * vocab), oi(size_t(rows) * vocab),
        o(size_t(rows) * vocab), offs(offsets(rows, vocab)), temp_bytes(sampling_sort_temp_bytes(rows, vocab)),
        temp(temp_bytes), res(size_t(rows)), spread(std::vector<char>(spread_workspace_bytes(rows), 0)) {}
  SamplingParamsDev params(const bf16* logits, const SampleSeqParams* seqs, const int32_t* ids,
                           const int32_t* counts, int n, bool any_random, bool any_sort, bool spread_path = false) {
    SamplingParamsDev p;
    p.all_spread = spread_path, p.n_cut_rows = spread_path ? 0 : -1;  // (rows with cuts: set_cut_rows)
    p.spread = spread_workspace_at(spread.p, max_rows);
    p.logits = logits, p.seqs = seqs, p.ids = ids, p.counts = counts, p.z = z.p, p.z_sorted = zs.p;
    p.order_in = oi.p, p.order = o.p, p.segment_offsets = offs.p, p.sort_temp = temp.p, p.sort_temp_bytes = temp_bytes;
    p.results = res.p, p.n_seqs = n, p.vocab = V, p.any_random = any_random, p.any_sort = any_sort;
    return p;
  }
  // Uploads the batch, samples, returns the results (poisoned first: a row the kernels skip shows up). per_row_sort:
  // name the rows that need the sort, as the runner does (each sorted on its own); false: the segmented sort.
  std::vector<SampleResultDev> run(const DevBuf<bf16>& logits, const HostBatch& hb, bool any_sort,
                                   bool per_row_sort = true) {
    EXPECT_LE(int(hb.sp.size()), max_rows);
    DevBuf<SampleSeqParams> dsp(hb.sp);
    std::vector<int32_t> ids = hb.ids, counts = hb.counts;  // never empty: no zero-byte copies
    if (ids.empty()) ids.push_back(0), counts.push_back(0);
    DevBuf<int32_t> dids(ids), dcounts(counts);
    bool any_random = false;
    for (const auto& q : hb.sp) any_random |= q.temperature != 0.0f;
    res.poison();
    SamplingParamsDev p = params(logits.p, dsp.p, dids.p, dcounts.p, int(hb.sp.size()), any_random, any_sort);
    if (per_row_sort)  // as the runner: more than kRowSortMax rows take the segmented sort
      p.n_sort_rows = list_rows(hb, [&](const SampleSeqParams& q) { return sampling_needs_sort(q, V); }, p.sort_rows);
    sample_tokens(p, nullptr);
    auto r = res.download();
    r.resize(hb.sp.size());
    return r;
  }
};

bool any_needs_sort(const HostBatch& hb, int V) {
  for (const auto& q : hb.sp)
    if (sampling_needs_sort(q, V)) return true;
  return false;
}

// Every row of the batch against cpu::sample_token: token (exact), logprob and top logprobs (1e-4).
void expect_matches_cpu(const HostBatch& hb, const std::vector<float>& lf, int V,
                        const std::vector<SampleResultDev>& r, const char* what) {
  for (size_t s = 0; s < hb.sp.size(); ++s) {
    const SamplingParams& a = hb.cases[s];
    const cpu::SampleResult ref =
        cpu::sample_token(std::span<const float>(&lf[s * size_t(V)], size_t(V)), a, hb.prompts[s], hb.outputs[s]);
    ASSERT_EQ(r[s].error, 0) << what << " row " << s;
    EXPECT_EQ(r[s].token, ref.token) << what << " row " << s << " temperature " << a.temperature << " top_k "
                                     << a.top_k << " top_p " << a.top_p << " min_p " << a.min_p << " seed " << a.seed;
    if (a.logprobs) {
      EXPECT_NEAR(r[s].logprob, ref.logprob, 1e-4) << what << " row " << s;
    }
    for (int k = 0; k < a.top_logprobs; ++k) {
      EXPECT_EQ(r[s].top_ids[k], ref.top[size_t(k)].token) << what << " row " << s << " top " << k;
      EXPECT_NEAR(r[s].top_lp[k], ref.top[size_t(k)].logprob, 1e-4) << what << " row " << s << " top " << k;
    }
  }
}

// Rows that went through the sort: z descending, ties in ascending id, and z_sorted[i] == z[order[i]].
void expect_sorted_rows(const HostBatch& hb, DeviceSampler& ds, int V) {
  const auto zz = ds.z.download(), zsd = ds.zs.download();
  const auto ord = ds.o.download();
  size_t bad_order = 0, bad_value = 0, rows = 0;
  for (size_t s = 0; s < hb.sp.size(); ++s) {
    if (!sampling_needs_sort(hb.sp[s], V)) continue;
    ++rows;
    for (int i = 0; i < V; ++i) {
      const size_t k = s * size_t(V) + size_t(i);
      bad_value += ord[k] < 0 || ord[k] >= V || zsd[k] != zz[s * size_t(V) + size_t(ord[k])];
      if (i > 0) bad_order += zsd[k - 1] < zsd[k] || (zsd[k - 1] == zsd[k] && ord[k - 1] > ord[k]);
    }
  }
  EXPECT_GT(rows, 0u);
  EXPECT_EQ(bad_order, 0u) << "sorted rows out of order (z descending, ids ascending on ties)";
  EXPECT_EQ(bad_value, 0u) << "z_sorted does not match z[order]";
}

// Random prompt (40 ids) and output (1 + s % 7 ids, some repeated) histories.
void random_histories(int S, int V, Rng& rng, std::vector<std::vector<int32_t>>& prompts,
                      std::vector<std::vector<int32_t>>& outputs) {
  prompts.assign(size_t(S), {});
  outputs.assign(size_t(S), {});
  for (int s = 0; s < S; ++s) {
    for (int i = 0; i < 40; ++i) prompts[size_t(s)].push_back(rng.below(V));
    for (int i = 0; i < 1 + s % 7; ++i) outputs[size_t(s)].push_back(i % 3 == 0 ? prompts[size_t(s)][0] : rng.below(V));
  }
}

// Logits with a realistic spread and some exact ties (bf16) at the top.
std::vector<bf16> spread_logits(int S, int V, Rng& rng) {
  auto logits = random_bf16(size_t(S) * V, rng, -8.f, 8.f);
  for (int s = 0; s < S; ++s)
    for (int i = 0; i < 64; ++i) logits[size_t(s) * V + rng.below(V)] = f32_to_bf16(7.5f + 0.25f * float(i % 3));
  return logits;
}

TEST(CudaSampling, MatchesCpuSamplerTokenForToken) {
  const int V = kVocab;
  std::vector<SamplingParams> cases;
  auto add = [&](auto f) {
    SamplingParams p;
    f(p);
    cases.push_back(p);
  };
  add([](SamplingParams& p) { p.temperature = 0; });
  add([](SamplingParams& p) { p.temperature = 0, p.repetition_penalty = 1.3f, p.frequency_penalty = 0.5f, p.presence_penalty = 0.7f; });
  add([](SamplingParams& p) { p.temperature = 0, p.logprobs = true, p.top_logprobs = 5; });
  for (uint64_t seed : {1ull, 2ull, 3ull, 12345ull}) {
    add([&](SamplingParams& p) { p.temperature = 1.0f, p.seed = seed; });
    add([&](SamplingParams& p) { p.temperature = 1.0f, p.seed = seed, p.logprobs = true, p.top_logprobs = 4; });
    add([&](SamplingParams& p) { p.temperature = 0.9f, p.top_k = V, p.seed = seed, p.presence_penalty = 0.4f; });
    add([&](SamplingParams& p) { p.temperature = 0.7f, p.top_k = 50, p.seed = seed; });
    add([&](SamplingParams& p) { p.temperature = 1.1f, p.top_k = 1, p.seed = seed, p.logprobs = true; });
    add([&](SamplingParams& p) { p.temperature = 0.8f, p.top_k = V - 1, p.seed = seed, p.repetition_penalty = 1.2f; });
    add([&](SamplingParams& p) { p.temperature = 1.2f, p.top_p = 0.9f, p.seed = seed, p.logprobs = true; });
    add([&](SamplingParams& p) { p.temperature = 0.9f, p.min_p = 0.05f, p.seed = seed; });
    add([&](SamplingParams& p) {
      p.temperature = 0.8f, p.top_k = 200, p.top_p = 0.8f, p.min_p = 0.02f, p.seed = seed;
      p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f, p.presence_penalty = -0.2f, p.top_logprobs = 3;
    });
  }
  const int S = int(cases.size());
  Rng rng(77);
  const auto logits = spread_logits(S, V, rng);
  std::vector<std::vector<int32_t>> prompts, outputs;
  random_histories(S, V, rng, prompts, outputs);
  const HostBatch hb = make_batch(cases, prompts, outputs);
  ASSERT_TRUE(any_needs_sort(hb, V));
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  // The rows that need the sort sorted one by one (the runner's way at up to kRowSortMax of them), then by the
  // segmented sort: both match the CPU and each other bit for bit.
  const auto r = ds.run(dl, hb, true);
  expect_sorted_rows(hb, ds, V);
  expect_matches_cpu(hb, to_f32(logits), V, r, "mixed batch");
  const auto seg = ds.run(dl, hb, true, false);
  expect_sorted_rows(hb, ds, V);
  expect_matches_cpu(hb, to_f32(logits), V, seg, "mixed batch, segmented sort");
  for (int i = 0; i < S; ++i) {
    EXPECT_EQ(seg[size_t(i)].token, r[size_t(i)].token) << "row " << i;
    if (hb.sp[size_t(i)].want_logprob) EXPECT_EQ(seg[size_t(i)].logprob, r[size_t(i)].logprob) << "row " << i;
  }
}

// The greedy fast path takes its token from the LM head's argmax key and consumes the keys: every row below
// n_argmax_rows (the LM head's rows, padding included) is zero afterwards, so that the next step's LM head can
// atomicMax into them without a memset. Greedy and sampled rows both match the CPU.
TEST(CudaSampling, GreedyRowsConsumeTheArgmaxKeys) {
  const int V = 5003, pad = 3;
  std::vector<SamplingParams> cases(5);
  for (auto& p : cases) p.temperature = 0;
  cases[2].temperature = 0.8f, cases[2].seed = 7;  // a sampled row between greedy ones
  const int S = int(cases.size());
  Rng rng(321);
  const auto logits = spread_logits(S, V, rng);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(S)), outputs(static_cast<size_t>(S));
  const HostBatch hb = make_batch(cases, prompts, outputs);
  DevBuf<bf16> dl(logits);
  DevBuf<unsigned long long> keys(size_t(S + pad));
  std::vector<unsigned long long> junk(size_t(S + pad), 0x1234567800000001ull);  // stale keys of padding rows
  keys.upload(junk);
  row_argmax_bf16(dl.p, keys.p, S, V, nullptr);  // rows < S: this step's keys
  DeviceSampler ds(S, V);
  DevBuf<SampleSeqParams> dsp(hb.sp);
  DevBuf<int32_t> dids(std::vector<int32_t>{0}), dcounts(std::vector<int32_t>{0});
  SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true, false);
  p.row_argmax = keys.p, p.n_argmax_rows = S + pad;
  ds.res.poison();
  sample_tokens(p, nullptr);
  auto r = ds.res.download();
  r.resize(size_t(S));
  expect_matches_cpu(hb, to_f32(logits), V, r, "greedy rows from the argmax keys");
  for (unsigned long long k : keys.download()) EXPECT_EQ(k, 0ull);
}

// A batch mixing greedy, plain temperature, top-k and top-p rows (and the sort of only the top-p rows): every
// row token for token against the CPU; then the same rows without the top-p ones with any_sort = false (no
// sort launched) give the same tokens.
TEST(CudaSampling, MixedBatchSortsOnlyTheRowsThatNeedIt) {
  const int V = kVocab;
  std::vector<SamplingParams> cases;
  for (int i = 0; i < 24; ++i) {
    SamplingParams p;
    p.seed = 1000 + uint64_t(i) * 7919;
    switch (i % 4) {
      case 0: p.temperature = 0; break;
      case 1: p.temperature = 0.6f + 0.1f * float(i % 5); break;
      case 2: p.temperature = 1.0f, p.top_k = 5 + 37 * i; break;
      case 3: p.temperature = 1.0f, p.top_p = 0.5f + 0.02f * float(i); break;
    }
    p.logprobs = i % 3 == 0;
    cases.push_back(p);
  }
  const int S = int(cases.size());
  Rng rng(91);
  const auto logits = spread_logits(S, V, rng);
  std::vector<std::vector<int32_t>> prompts, outputs;
  random_histories(S, V, rng, prompts, outputs);
  const HostBatch hb = make_batch(cases, prompts, outputs);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  const auto r = ds.run(dl, hb, true);
  expect_sorted_rows(hb, ds, V);
  const auto lf = to_f32(logits);
  expect_matches_cpu(hb, lf, V, r, "greedy/plain/top-k/top-p batch");

  // Drop the top-p rows: nothing needs the sort, so any_sort = false is allowed and must not change a token.
  std::vector<SamplingParams> kept_cases;
  std::vector<std::vector<int32_t>> kp, ko;
  std::vector<bf16> kl;
  std::vector<size_t> src;
  for (size_t s = 0; s < cases.size(); ++s) {
    if (s % 4 == 3) continue;
    kept_cases.push_back(cases[s]), kp.push_back(prompts[s]), ko.push_back(outputs[s]), src.push_back(s);
    const auto row = logits.begin() + std::ptrdiff_t(s * size_t(V));
    kl.insert(kl.end(), row, row + V);
  }
  const HostBatch hb2 = make_batch(kept_cases, kp, ko);
  ASSERT_FALSE(any_needs_sort(hb2, V));
  DevBuf<bf16> dl2(kl);
  const auto r2 = ds.run(dl2, hb2, false);
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(r2[i].error, 0) << i;
    EXPECT_EQ(r2[i].token, r[src[i]].token) << "row " << src[i] << " without the sort";
    if (kept_cases[i].logprobs) {
      EXPECT_EQ(r2[i].logprob, r[src[i]].logprob) << "row " << src[i];
    }
  }
}

// The no-cut path and the top-k select against the sort path on the same rows and seeds: each row has a twin
// with min_p = 1e-30, which goes through the sort but cuts nothing (every w >= e^-27 here), so both must
// keep the same set and draw the same token bit for bit. Logits on a coarse grid give large groups of exact
// ties at the top-k boundary. Both also against the CPU.
void expect_paths_agree(int V, uint64_t seed, const std::vector<int>& top_ks) {
  std::vector<SamplingParams> cases;
  std::vector<int> twin_of;  // -1 for a fast row, else the fast row it copies
  const int n_pairs = 40;
  Rng rng(seed);
  for (int j = 0; j < n_pairs; ++j) {
    SamplingParams p;
    p.temperature = (j % 3 == 0) ? 0.6f : (j % 3 == 1 ? 1.0f : 1.3f);
    p.seed = rng.next();
    p.top_k = (j % 2 == 0) ? 0 : top_ks[size_t(j / 2) % top_ks.size()];
    p.logprobs = j % 5 == 0;
    cases.push_back(p);
    twin_of.push_back(-1);
    p.min_p = 1e-30f;
    cases.push_back(p);
    twin_of.push_back(int(cases.size()) - 2);
  }
  const int S = int(cases.size());
  std::vector<bf16> logits(size_t(S) * V);
  for (int s = 0; s < S; s += 2) {
    const bool grid = (s / 2) % 2 == 1;  // half the pairs: 17 values only (-8..8), the other half a spread
    for (int i = 0; i < V; ++i) {
      const float v = grid ? float(rng.below(17) - 8) : rng.uniform(-8.f, 8.f);
      logits[size_t(s) * V + i] = logits[size_t(s + 1) * V + i] = f32_to_bf16(v);
    }
  }
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(S)), outputs(static_cast<size_t>(S));
  for (int s = 0; s < S; s += 2) {  // the step counter = outputs.size(); no penalties
    const int n = rng.below(50);
    outputs[size_t(s)].assign(size_t(n), 0);
    outputs[size_t(s) + 1] = outputs[size_t(s)];
  }
  const HostBatch hb = make_batch(cases, prompts, outputs);
  int n_select = 0, n_none = 0;
  for (int s = 0; s < S; ++s) {
    if (twin_of[size_t(s)] >= 0) {
      ASSERT_TRUE(sampling_needs_sort(hb.sp[size_t(s)], V));
    } else {
      ASSERT_FALSE(sampling_needs_sort(hb.sp[size_t(s)], V));
      n_select += sampling_top_k_select(hb.sp[size_t(s)], V);
      n_none += !sampling_top_k_select(hb.sp[size_t(s)], V);
    }
  }
  EXPECT_GT(n_select, 0);
  EXPECT_GT(n_none, 0);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  const auto r = ds.run(dl, hb, true);
  int distinct = 0;
  for (int s = 0; s < S; ++s) {
    const int t = twin_of[size_t(s)];
    if (t < 0) continue;
    ASSERT_EQ(r[size_t(s)].error, 0);
    ASSERT_EQ(r[size_t(t)].error, 0);
    EXPECT_EQ(r[size_t(t)].token, r[size_t(s)].token)
        << "V " << V << " row " << t << " (top_k " << cases[size_t(t)].top_k << ") differs from its sorted twin";
    if (cases[size_t(t)].logprobs) {
      EXPECT_EQ(r[size_t(t)].logprob, r[size_t(s)].logprob) << "row " << t;
    }
    distinct += s >= 3 && r[size_t(s)].token != r[size_t(s) - 2].token;
  }
  EXPECT_GT(distinct, n_pairs / 2) << "the draws should differ from row to row";
  expect_matches_cpu(hb, to_f32(logits), V, r, "paths");
}

// Rows with a cut listed as the runner lists them for the spread path (SamplingParamsDev::cut_rows).
void set_cut_rows(SamplingParamsDev& p, const HostBatch& hb, int V) {
  p.n_cut_rows = list_rows(hb, [&](const SampleSeqParams& q) { return sampling_has_cut(q, V); }, p.cut_rows);
}

// The spread path (spread rows: no penalties, no logprobs; passes over many CTAs, cut rows on their own sort) against
// sampling_prepare's one CTA per row (+ the segmented sort and sampling_draw) on the same rows: the same token bit for
// bit, for the real vocabulary and odd ones (37: most of the draw's 1,024 chunks empty), 1 / 3 / 8 / 64 rows, every
// third row with a cut (top-k, top-p, min-p or all three), every fifth greedy (its token from the LM head's argmax key,
// as the runner's rows), several temperatures (0.02: most weights underflow to 0)
// and RNG counters, logits spread, on a coarse grid (exact ties) or sparse (three ids carry all the weight: long runs
// of zero weights, flat prefix sums around the target); a NaN row (error 1) and a row whose tempered max overflows
// (error 2) report the same errors; the zeroed workspace is left zeroed.
TEST(CudaSampling, SpreadPathMatchesOneCtaPathBitForBit) {
  Rng rng(71);
  int compared = 0, distinct = 0, cut_rows = 0;
  for (int V : {kVocab, 1001, 37}) {
    for (int S : {1, 3, 8, 64}) {
      for (int round = 0; round < (S == 64 ? 2 : 6); ++round) {
        std::vector<SamplingParams> cases(static_cast<size_t>(S));
        std::vector<std::vector<int32_t>> none(static_cast<size_t>(S)), outputs(static_cast<size_t>(S));
        std::vector<bf16> logits(size_t(S) * V);
        for (int r = 0; r < S; ++r) {
          SamplingParams& a = cases[size_t(r)];
          static constexpr float kTemps[4] = {0.6f, 1.0f, 1.3f, 0.02f};
          a.temperature = r % 5 == 4 ? 0.0f : kTemps[(r + round) % 4];  // greedy rows: their argmax keys
          a.seed = rng.next();
          if (r % 3 == 0 && (S == 1 ? round % 2 == 1 : true)) {  // a cut (at most 22 of 64 rows: <= kRowSortMax)
            const int cut = (r / 3 + round) % 4;
            if (cut == 0 || cut == 3) a.top_k = 1 + rng.below(V - 1);
            if (cut == 1 || cut == 3) a.top_p = rng.uniform(0.05f, 0.97f);
            if (cut == 2 || cut == 3) a.min_p = rng.uniform(0.001f, 0.3f);
          }
          outputs[size_t(r)].assign(size_t(rng.below(40)), 0);  // the RNG counter
          const int kind = (r + 2 * round) % 3;  // 0 spread, 1 coarse grid, 2 sparse
          for (int i = 0; i < V; ++i)
            logits[size_t(r) * V + i] = f32_to_bf16(kind == 1 ? float(rng.below(17) - 8)
                                                    : kind == 0 ? rng.uniform(-8.f, 8.f) : -120.f);
          if (kind == 2)  // exp(-120) underflows fp32: the three ids below hold every nonzero weight
            for (int i : {rng.below(V), V / 2, V - 1 - rng.below(3)})
              logits[size_t(r) * V + i] = f32_to_bf16(rng.uniform(-1.f, 1.f));
        }
        if (round == 3 && S >= 3) {
          logits[size_t(1) * V + size_t(V / 2)] = f32_to_bf16(std::nanf(""));  // row 1: NaN
          for (int i = 0; i < V; ++i) logits[size_t(2) * V + i] = f32_to_bf16(3e38f);  // row 2: inf after T
          cases[2].temperature = 0.01f;
        }
        const HostBatch hb = make_batch(cases, none, outputs);
        for (const auto& q : hb.sp) ASSERT_TRUE(sampling_is_spread(q));
        DevBuf<bf16> dl(logits);
        DevBuf<SampleSeqParams> dsp(hb.sp);
        DevBuf<int32_t> dids(1), dcounts(1);
        DeviceSampler ds(S, V);
        DevBuf<unsigned long long> keys(static_cast<size_t>(S));  // the LM head's argmax keys (consumed by each call)
        ds.res.poison();
        const bool any_sort = any_needs_sort(hb, V);
        SamplingParamsDev op = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true, any_sort, false);
        op.row_argmax = keys.p, op.n_argmax_rows = S;
        row_argmax_bf16(dl.p, keys.p, S, V, nullptr);
        sample_tokens(op, nullptr);
        const auto one = ds.res.download();
        ds.res.poison();
        SamplingParamsDev sp = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true, any_sort, true);
        sp.row_argmax = keys.p, sp.n_argmax_rows = S;
        row_argmax_bf16(dl.p, keys.p, S, V, nullptr);
        set_cut_rows(sp, hb, V);
        ASSERT_GE(sp.n_cut_rows, 0);
        cut_rows += sp.n_cut_rows;
        sample_tokens(sp, nullptr);
        const auto spread = ds.res.download();
        for (int r = 0; r < S; ++r) {
          EXPECT_EQ(spread[size_t(r)].error, one[size_t(r)].error) << "V " << V << " S " << S << " row " << r;
          EXPECT_EQ(spread[size_t(r)].token, one[size_t(r)].token) << "V " << V << " S " << S << " row " << r;
          ++compared;
          distinct += r > 0 && one[size_t(r)].error == 0 && one[size_t(r)].token != one[size_t(r) - 1].token;
        }
        if (round == 3 && S >= 3) {
          EXPECT_EQ(one[1].error, 1);
          EXPECT_EQ(one[2].error, 2);
        }
        auto host = ds.spread.download();  // the zeroed parts, through the same carving on the host copy
        const SpreadWorkspace w = spread_workspace_at(host.data(), S);
        for (int r = 0; r < S; ++r)
          EXPECT_TRUE(w.row_max[2 * r] == 0u && w.row_max[2 * r + 1] == 0u && w.row_last[r] == 0) << "dirty row " << r;
        for (unsigned long long k : keys.download()) EXPECT_EQ(k, 0ull) << "argmax keys left";
      }
    }
  }
  EXPECT_GT(distinct, compared / 3) << "the draws should differ from row to row";
  EXPECT_GT(cut_rows, compared / 4) << "rows with cuts";
}

TEST(CudaSampling, NoCutAndTopKMatchSortedPathBitForBit) {
  expect_paths_agree(kVocab, 3, {1, 2, 40, 1000, 50000, kVocab - 1});
  expect_paths_agree(1001, 4, {1, 3, 200, 500, 999, 1000});
  expect_paths_agree(37, 5, {1, 2, 5, 36});
}

// Many draws (2048 rows x 16 steps, distinct seeds) from one small row against its softmax, with and without
// top-k: chi-square over the kept ids below the 1e-6 quantile of its distribution (a wrong temperature, id
// offset or kept set gives values in the thousands).
TEST(CudaSampling, DrawFollowsTheSoftmax) {
  const int V = 37, rows = 2048, steps = 16;
  const float T = 0.7f;
  Rng rng(11);
  std::vector<bf16> row(static_cast<size_t>(V));
  for (auto& x : row) x = f32_to_bf16(rng.uniform(-1.5f, 1.5f));
  std::vector<bf16> logits;
  for (int s = 0; s < rows; ++s) logits.insert(logits.end(), row.begin(), row.end());
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(rows, V);
  const auto lf = to_f32(row);
  for (int top_k : {0, 8}) {
    // Expected: p_i = exp(z_i - z_max) / sum over the kept ids, z = fp32 logit / T; kept = the top_k best
    // (ties -> lower id).
    std::vector<int> order(static_cast<size_t>(V));
    for (int i = 0; i < V; ++i) order[size_t(i)] = i;
    std::vector<float> z(static_cast<size_t>(V));
    for (int i = 0; i < V; ++i) z[size_t(i)] = lf[size_t(i)] / T;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[size_t(a)] > z[size_t(b)]; });
    const int n_kept = top_k > 0 ? top_k : V;
    std::vector<double> p(static_cast<size_t>(V), 0.0);
    double total = 0.0;
    for (int k = 0; k < n_kept; ++k) {
      const size_t id = size_t(order[size_t(k)]);
      total += p[id] = std::exp(double(z[id] - z[size_t(order[0])]));
    }
    for (auto& x : p) x /= total;
    std::vector<long> hist(static_cast<size_t>(V), 0);
    for (int step = 0; step < steps; ++step) {
      std::vector<SamplingParams> cases(static_cast<size_t>(rows));
      std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(rows));
      std::vector<std::vector<int32_t>> outputs(static_cast<size_t>(rows), std::vector<int32_t>(size_t(step), 0));
      for (int s = 0; s < rows; ++s) {
        SamplingParams& a = cases[size_t(s)];
        a.temperature = T, a.top_k = top_k, a.seed = 5000 + uint64_t(s);
      }
      const HostBatch hb = make_batch(cases, prompts, outputs);
      const auto r = ds.run(dl, hb, false);
      for (int s = 0; s < rows; ++s) {
        ASSERT_EQ(r[size_t(s)].error, 0);
        ASSERT_TRUE(r[size_t(s)].token >= 0 && r[size_t(s)].token < V) << r[size_t(s)].token;
        ++hist[size_t(r[size_t(s)].token)];
      }
    }
    const double n = double(rows) * steps;
    double chi2 = 0.0, max_err = 0.0;
    for (int i = 0; i < V; ++i) {
      if (p[size_t(i)] == 0.0) {
        EXPECT_EQ(hist[size_t(i)], 0) << "id " << i << " is outside the top " << top_k;
        continue;
      }
      const double e = n * p[size_t(i)];
      chi2 += (double(hist[size_t(i)]) - e) * (double(hist[size_t(i)]) - e) / e;
      max_err = std::max(max_err, std::fabs(double(hist[size_t(i)]) / n - p[size_t(i)]));
    }
    const double bound = top_k == 8 ? 40.52 : 91.50;  // chi-square 1e-6 quantiles, 7 and 36 degrees of freedom
    std::printf("draws vs softmax (V %d, top_k %d, %.0f draws): chi2 %.1f (bound %.1f), max |freq - p| %.4f\n", V,
                top_k, n, chi2, bound, max_err);
    EXPECT_LT(chi2, bound) << "top_k " << top_k;
  }
}

// Time of one sample_tokens call at the real vocabulary, 1 and 64 rows (printed; the CUDA events bracket 20
// calls after a warm-up). "plain" is the OpenAI default (temperature 1, top_p 1) in one CTA per row, "spread" the
// spread path (the runner's choice for rows without penalties or logprobs, up to kRowSortMax of them with a cut);
// "plain, any_sort" with the sort launched on empty segments (a caller that does not set any_sort); "top_p 0.9" sorts
// each row on its own (the runner's choice up to kRowSortMax rows), "segmented" all rows in one segmented sort;
// "logprobs" / "penalty" take the one-CTA path.
TEST(CudaSampling, TimingAtRealVocab) {
  const int V = kVocab;
  Rng rng(21);
  const auto logits = spread_logits(64, V, rng);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(64, V);
  struct Config {
    const char* name;
    int top_k;
    float top_p;
    bool any_sort;
    bool logprobs = false;
    float presence_penalty = 0.0f;
  };
  const char* rows_only = std::getenv("MXS_SAMPLING_TIMING_ROWS");  // 1 or 64: those rows alone
  for (int S : {1, 64}) {
    if (rows_only && std::atoi(rows_only) != S) continue;
    for (const Config& c : {Config{"plain, spread", 0, 1.0f, false}, Config{"plain", 0, 1.0f, false},
                            Config{"plain, any_sort", 0, 1.0f, true}, Config{"top_k 50, spread", 50, 1.0f, false},
                            Config{"top_k 50", 50, 1.0f, false}, Config{"top_p 0.9, spread", 0, 0.9f, true},
                            Config{"top_p 0.9", 0, 0.9f, true}, Config{"top_p 0.9, segmented", 0, 0.9f, true},
                            Config{"logprobs", 0, 1.0f, false, true}, Config{"penalty", 0, 1.0f, false, false, 0.5f}}) {
      // MXS_SAMPLING_TIMING_ONLY=NAME: that configuration alone (to profile or sanitize its kernels).
      const char* only = std::getenv("MXS_SAMPLING_TIMING_ONLY");
      if (only && std::string(only) != c.name) continue;
      std::vector<SamplingParams> cases(static_cast<size_t>(S));
      for (int s = 0; s < S; ++s) {
        SamplingParams& a = cases[size_t(s)];
        a.temperature = 1.0f, a.top_k = c.top_k, a.top_p = c.top_p, a.seed = uint64_t(s);
        a.logprobs = c.logprobs, a.presence_penalty = c.presence_penalty;
      }
      const std::vector<std::vector<int32_t>> none(static_cast<size_t>(S));
      const HostBatch hb = make_batch(cases, none, none);
      DevBuf<SampleSeqParams> dsp(hb.sp);
      DevBuf<int32_t> dids(1), dcounts(1);
      const std::string name = c.name;
      const bool spread = name.find("spread") != std::string::npos;
      SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true, c.any_sort, spread);
      if (spread) set_cut_rows(p, hb, V);  // (more than kRowSortMax rows with a cut: the one-CTA path)
      if (name == "top_p 0.9" && S <= kRowSortMax) {
        p.n_sort_rows = S;
        for (int s = 0; s < S; ++s) p.sort_rows[s] = s;
      }
      const double ms = mean_ms_per_call(3, 20, [&](int) { sample_tokens(p, nullptr); });
      std::printf("sample_tokens V %d rows %2d %-22s %8.1f us/call\n", V, S, c.name, 1000.0 * ms);
      const auto r = ds.res.download();
      for (int s = 0; s < S; ++s) EXPECT_EQ(r[size_t(s)].error, 0) << c.name << " row " << s;
    }
  }
}

}  // namespace
}  // namespace mxs::cuda::test
