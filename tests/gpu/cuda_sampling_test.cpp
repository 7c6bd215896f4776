// GPU sampling against the CPU sampler (src/cpu/sampler.h), token for token, over batches of rows that cover
// every parameter (greedy, logit bias, min_tokens, penalties, temperature, top-k, top-p, min-p, seeds, logprobs) on
// the real vocabulary size; the cut and no-cut draws against each other bit for bit; the spread path's cuts (top-k,
// top-p by radix select) against a host sort, and its tokens against the one-CTA path bit for bit; the draw's
// distribution against the softmax; the device copy of sample_uniform against the host one; and the time of one
// sample_tokens call at the real vocabulary (printed, not checked).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
// outputs[s].size() (the CPU sampler's RNG counter). With pending_last, a penalized row's last output token is left
// out of its lists and passed as its pending token (tokens[pending_index]), as async scheduling's runner does.
struct HostBatch {
  std::vector<SamplingParams> cases;
  std::vector<std::vector<int32_t>> prompts, outputs;
  std::vector<SampleSeqParams> sp;
  std::vector<int32_t> ids, counts;
  std::vector<int32_t> bias_ids;  // the step's logit bias entries (step_logit_bias), as the runner stages them
  std::vector<float> bias_values;
  std::vector<std::vector<uint32_t>> masks;  // per row: its allowed-token mask (empty: none)
  std::vector<uint32_t> mask_words;          // the masks of the rows that have one, staged as the runner does
  std::vector<int32_t> tokens{0};  // the step's input tokens (never empty: no zero-byte copies)
  int n_pending = 0;
};

HostBatch make_batch(const std::vector<SamplingParams>& cases, std::vector<std::vector<int32_t>> prompts,
                     std::vector<std::vector<int32_t>> outputs, bool pending_last = false,
                     std::vector<std::vector<uint32_t>> masks = {}) {
  HostBatch hb;
  hb.cases = cases;
  hb.masks = std::move(masks);
  hb.masks.resize(cases.size());
  hb.prompts = std::move(prompts);
  hb.outputs = std::move(outputs);
  for (size_t s = 0; s < cases.size(); ++s) {
    const SamplingParams& a = cases[s];
    SampleSeqParams q;
    q.temperature = a.temperature, q.top_p = a.top_p, q.min_p = a.min_p, q.top_k = a.top_k;
    q.frequency_penalty = a.frequency_penalty, q.presence_penalty = a.presence_penalty;
    q.repetition_penalty = a.repetition_penalty, q.seed = a.seed, q.step = hb.outputs[s].size();
    q.want_logprob = a.logprobs, q.top_logprobs = a.top_logprobs;
    q.bias_offset = int(hb.bias_ids.size());
    for (const LogitBias& e : step_logit_bias(a, q.step))
      hb.bias_ids.push_back(e.token), hb.bias_values.push_back(e.bias);
    q.n_bias = int(hb.bias_ids.size()) - q.bias_offset;
    if (!hb.masks[s].empty()) {
      q.mask_offset = int(hb.mask_words.size());
      hb.mask_words.insert(hb.mask_words.end(), hb.masks[s].begin(), hb.masks[s].end());
    }
    std::vector<int32_t> listed = hb.outputs[s];  // the output ids the lists hold
    if (pending_last && sampling_edits_logits(q) && !listed.empty()) {
      q.pending_index = int(hb.tokens.size());
      hb.tokens.push_back(listed.back());
      listed.pop_back();
      ++hb.n_pending;
    }
    q.rep_offset = int(hb.ids.size());
    std::vector<int32_t> seen;
    for (auto* v : {&hb.prompts[s], &listed})
      for (int32_t id : *v)
        if (std::find(seen.begin(), seen.end(), id) == seen.end())
          seen.push_back(id), hb.ids.push_back(id), hb.counts.push_back(1);
    q.n_rep = int(hb.ids.size()) - q.rep_offset;
    q.out_offset = int(hb.ids.size());
    std::vector<int32_t> distinct;
    for (int32_t id : listed)
      if (std::find(distinct.begin(), distinct.end(), id) == distinct.end()) distinct.push_back(id);
    for (int32_t id : distinct) {
      hb.ids.push_back(id);
      hb.counts.push_back(int32_t(std::count(listed.begin(), listed.end(), id)));
    }
    q.n_out = int(hb.ids.size()) - q.out_offset;
    hb.sp.push_back(q);
  }
  return hb;
}

// SamplingParamsDev::spread_selects as the runner sets it: the selects some row of the batch needs.
int spread_selects_of(const HostBatch& hb, int V) {
  int bits = 0;
  for (const auto& q : hb.sp)
    bits |= (sampling_has_top_k(q, V) ? 1 : 0) | (sampling_has_top_p(q) ? 2 : 0) | (q.top_logprobs > 0 ? 4 : 0);
  return bits;
}

// The batch's logit bias entries and allowed-token masks on the device (never empty: no zero-byte copies).
struct DeviceBias {
  DevBuf<int32_t> ids;
  DevBuf<float> values;
  DevBuf<uint32_t> allowed;
  explicit DeviceBias(const HostBatch& hb)
      : ids(hb.bias_ids.empty() ? std::vector<int32_t>{0} : hb.bias_ids),
        values(hb.bias_values.empty() ? std::vector<float>{0.f} : hb.bias_values),
        allowed(hb.mask_words.empty() ? std::vector<uint32_t>{0u} : hb.mask_words) {}
  void set(SamplingParamsDev& p) const { p.bias_ids = ids.p, p.bias_values = values.p, p.allowed = allowed.p; }
};

// Workspaces for up to max_rows rows of V (as the runner allocates them) and one sample_tokens call.
struct DeviceSampler {
  int max_rows, V;
  DevBuf<float> z;
  DevBuf<SampleResultDev> res;
  DevBuf<char> spread;  // the spread path's workspace (zeroed; the kernels leave its zeroed parts zeroed)
  DeviceSampler(int rows, int vocab)
      : max_rows(rows), V(vocab), z(size_t(rows) * vocab), res(size_t(rows)),
        spread(std::vector<char>(spread_workspace_bytes(rows, vocab), 0)) {}
  // sampling_prepare's one CTA per row, or (spread_path) the spread path.
  SamplingParamsDev params(const bf16* logits, const SampleSeqParams* seqs, const int32_t* ids,
                           const int32_t* counts, int n, bool spread_path = false) {
    SamplingParamsDev p;
    p.spread_wanted = spread_path;
    p.spread = spread_workspace_at(spread.p, max_rows, V);
    p.logits = logits, p.seqs = seqs, p.ids = ids, p.counts = counts, p.z = z.p;
    p.results = res.p, p.n_seqs = n, p.vocab = V;
    return p;
  }
  // Uploads the batch, samples on the one-CTA path, returns the results (poisoned first: a row the kernels skip shows
  // up).
  std::vector<SampleResultDev> run(const DevBuf<bf16>& logits, const HostBatch& hb) {
    EXPECT_LE(int(hb.sp.size()), max_rows);
    DevBuf<SampleSeqParams> dsp(hb.sp);
    std::vector<int32_t> ids = hb.ids, counts = hb.counts;  // never empty: no zero-byte copies
    if (ids.empty()) ids.push_back(0), counts.push_back(0);
    DevBuf<int32_t> dids(ids), dcounts(counts), dtok(hb.tokens);
    res.poison();
    SamplingParamsDev p = params(logits.p, dsp.p, dids.p, dcounts.p, int(hb.sp.size()));
    p.tokens = dtok.p;
    const DeviceBias bias(hb);
    bias.set(p);
    sample_tokens(p, nullptr);
    auto r = res.download();
    r.resize(hb.sp.size());
    return r;
  }
};

// The batch in one sample_tokens call on the spread path, as the runner runs a step that is not all plain greedy rows:
// with the LM head's argmax keys (plain greedy rows take their token from them; the call must consume them), or
// without (keys_in = false: every greedy row's argmax from the logits).
std::vector<SampleResultDev> run_spread(DeviceSampler& ds, const DevBuf<bf16>& dl, const HostBatch& hb, int V,
                                        bool keys_in = true) {
  const int S = int(hb.sp.size());
  DevBuf<SampleSeqParams> dsp(hb.sp);
  std::vector<int32_t> ids = hb.ids, counts = hb.counts;  // never empty: no zero-byte copies
  if (ids.empty()) ids.push_back(0), counts.push_back(0);
  DevBuf<int32_t> dids(ids), dcounts(counts), dtok(hb.tokens);
  DevBuf<unsigned long long> keys(static_cast<size_t>(S));
  row_argmax_bf16(dl.p, keys.p, S, V, nullptr);
  SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true);
  p.tokens = dtok.p;
  const DeviceBias bias(hb);
  bias.set(p);
  if (keys_in) p.row_argmax = keys.p, p.n_argmax_rows = S;
  p.spread_selects = spread_selects_of(hb, V);
  ds.res.poison();
  sample_tokens(p, nullptr);
  auto r = ds.res.download();
  r.resize(size_t(S));
  if (keys_in) {
    for (unsigned long long k : keys.download()) EXPECT_EQ(k, 0ull) << "argmax keys left";
  }
  return r;
}

// Every row of the batch against cpu::sample_token: token (exact), logprob and top logprobs (1e-4).
void expect_matches_cpu(const HostBatch& hb, const std::vector<float>& lf, int V,
                        const std::vector<SampleResultDev>& r, const char* what) {
  for (size_t s = 0; s < hb.sp.size(); ++s) {
    const SamplingParams& a = hb.cases[s];
    const cpu::SampleResult ref =
        cpu::sample_token(std::span<const float>(&lf[s * size_t(V)], size_t(V)), a, hb.prompts[s], hb.outputs[s],
                          hb.masks[s]);
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
    // logit_bias and min_tokens (every history is shorter than 100 tokens: min_tokens holds its ids back), with the
    // penalties on the same ids in some rows.
    const int32_t a = int32_t(seed * 7919 % uint64_t(V)), b = int32_t(seed * 104729 % uint64_t(V));
    add([&](SamplingParams& p) { p.temperature = 0, p.logit_bias = {{a, 20.0f}}; });
    add([&](SamplingParams& p) {
      p.temperature = 0, p.logit_bias = {{a, 50.0f}, {b, 30.0f}}, p.min_tokens = 100, p.min_tokens_ids = {a, 3};
      p.logprobs = true;
    });
    add([&](SamplingParams& p) {
      p.temperature = 1.0f, p.top_k = 50, p.seed = seed, p.logit_bias = {{a, 9.5f}, {b, -100.0f}};
      p.min_tokens = 100, p.min_tokens_ids = {b, int32_t(V - 1)};
    });
    add([&](SamplingParams& p) {
      p.temperature = 0.9f, p.top_p = 0.9f, p.seed = seed, p.repetition_penalty = 1.3f, p.presence_penalty = 0.5f;
      for (int i = 0; i < 40; ++i)
        p.logit_bias.push_back({int32_t((seed + uint64_t(i) * 5003) % uint64_t(V)), -10.0f + 0.5f * float(i)});
    });
  }
  const int S = int(cases.size());
  Rng rng(77);
  const auto logits = spread_logits(S, V, rng);
  std::vector<std::vector<int32_t>> prompts, outputs;
  random_histories(S, V, rng, prompts, outputs);
  // Rows with a bias and a penalty also bias ids of their history (the first output id is the first prompt id), which
  // the penalties then rewrite: the order of the edits shows.
  for (int s = 0; s < S; ++s) {
    SamplingParams& c = cases[size_t(s)];
    if (c.logit_bias.empty() || c.repetition_penalty == 1.0f) continue;
    for (int32_t id : {prompts[size_t(s)][0], prompts[size_t(s)][1]})
      if (std::none_of(c.logit_bias.begin(), c.logit_bias.end(), [id](const LogitBias& e) { return e.token == id; }))
        c.logit_bias.push_back({id, 12.0f});
  }
  const HostBatch hb = make_batch(cases, prompts, outputs);
  ASSERT_EQ(spread_selects_of(hb, V), 7);  // top-k, top-p and top logprobs rows
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  const auto r = ds.run(dl, hb);
  expect_matches_cpu(hb, to_f32(logits), V, r, "mixed batch");
  // The same batch on the spread path (greedy rows with penalties or top logprobs too).
  expect_matches_cpu(hb, to_f32(logits), V, run_spread(ds, dl, hb, V), "mixed batch, spread path");
  // Each penalized row's last output token pending (async scheduling: not in its lists; the kernels add it to the
  // repetition set and the output counts): the CPU's tokens over the whole history, on both paths.
  const HostBatch hp = make_batch(cases, prompts, outputs, true);
  ASSERT_GT(hp.n_pending, 10);
  expect_matches_cpu(hp, to_f32(logits), V, ds.run(dl, hp), "pending tokens, one CTA");
  expect_matches_cpu(hp, to_f32(logits), V, run_spread(ds, dl, hp, V), "pending tokens, spread path");
}

// Allowed-token masks (structured outputs) on rows of every kind, sparse (a few dozen ids, some of them the row's tied
// top logits) and dense (half the vocabulary), with penalties and bias on some: token for token the CPU sampler, on
// the one-CTA path and the spread path, with the argmax keys in (a masked greedy row must not take its key).
TEST(CudaSampling, AllowedMasksMatchCpuOnEitherPath) {
  const int V = kVocab, W = (V + 31) / 32;
  std::vector<SamplingParams> cases;
  std::vector<std::vector<uint32_t>> masks;
  Rng rng(2024);
  const int S = 12;
  const auto logits = spread_logits(S, V, rng);
  for (int i = 0; i < S; ++i) {
    SamplingParams p;
    p.seed = 77 + uint64_t(i);
    switch (i % 6) {
      case 0: p.temperature = 0; break;
      case 1: p.temperature = 0, p.logprobs = true, p.top_logprobs = 3; break;
      case 2: p.temperature = 1.0f; break;
      case 3: p.temperature = 0.8f, p.top_k = 20; break;
      case 4: p.temperature = 1.0f, p.top_p = 0.9f, p.presence_penalty = 0.5f; break;
      case 5: p.temperature = 0.7f, p.min_p = 0.1f, p.logit_bias = {{int32_t(i * 1000), 5.0f}}; break;
    }
    cases.push_back(p);
    std::vector<uint32_t> m(static_cast<size_t>(W), 0u);
    if (i < 6) {  // sparse: 40 random ids and 3 of the row's top ones
      for (int k = 0; k < 40; ++k) {
        const int t = rng.below(V);
        m[size_t(t) / 32] |= 1u << (t % 32);
      }
      int added = 0;
      for (int t = 0; t < V && added < 3; ++t)
        if (bf16_to_f32(logits[size_t(i) * V + t]) >= 7.5f) m[size_t(t) / 32] |= 1u << (t % 32), ++added;
    } else {  // dense: every other id
      for (int t = 0; t < V; t += 2) m[size_t(t) / 32] |= 1u << (t % 32);
    }
    masks.push_back(std::move(m));
  }
  masks[11].clear();  // one row without a mask in the same batch
  std::vector<std::vector<int32_t>> prompts, outputs;
  random_histories(S, V, rng, prompts, outputs);
  const HostBatch hb = make_batch(cases, prompts, outputs, false, masks);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  expect_matches_cpu(hb, to_f32(logits), V, ds.run(dl, hb), "masks, one CTA");
  expect_matches_cpu(hb, to_f32(logits), V, run_spread(ds, dl, hb, V), "masks, spread path");
}

// The greedy fast path takes its token from the LM head's argmax key and consumes the keys: every row below
// n_argmax_rows (the LM head's rows, padding included) is zero afterwards, so that the next step's LM head can
// atomicMax into them without a memset. Greedy and sampled rows both match the CPU, on either path.
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
  DeviceSampler ds(S, V);
  DevBuf<SampleSeqParams> dsp(hb.sp);
  DevBuf<int32_t> dids(std::vector<int32_t>{0}), dcounts(std::vector<int32_t>{0});
  for (bool spread_path : {false, true}) {
    DevBuf<unsigned long long> keys(size_t(S + pad));
    std::vector<unsigned long long> junk(size_t(S + pad), 0x1234567800000001ull);  // stale keys of padding rows
    keys.upload(junk);
    row_argmax_bf16(dl.p, keys.p, S, V, nullptr);  // rows < S: this step's keys
    SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, spread_path);
    p.row_argmax = keys.p, p.n_argmax_rows = S + pad;
    ds.res.poison();
    sample_tokens(p, nullptr);
    auto r = ds.res.download();
    r.resize(size_t(S));
    expect_matches_cpu(hb, to_f32(logits), V, r, spread_path ? "spread path" : "one CTA per row");
    for (unsigned long long k : keys.download()) EXPECT_EQ(k, 0ull) << (spread_path ? "spread path" : "one CTA");
  }
}

// A batch mixing greedy, plain temperature, top-k and top-p rows, some with logprobs: every row token for token
// against the CPU on the one-CTA path; the same tokens and logprobs bit for bit on the spread path, with the LM head's
// argmax keys (the runner's step: plain greedy rows take them) and without (every greedy row's argmax from the logits).
TEST(CudaSampling, MixedBatchMatchesCpuOnEitherPath) {
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
  int n_plain = 0;
  for (const auto& q : hb.sp) n_plain += sampling_is_plain_greedy(q);
  EXPECT_GT(n_plain, 0);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  const auto r = ds.run(dl, hb);
  const auto lf = to_f32(logits);
  expect_matches_cpu(hb, lf, V, r, "greedy/plain/top-k/top-p batch");
  for (bool keys_in : {true, false}) {
    const auto sp = run_spread(ds, dl, hb, V, keys_in);
    for (int i = 0; i < S; ++i) {
      EXPECT_EQ(sp[size_t(i)].error, 0) << i;
      EXPECT_EQ(sp[size_t(i)].token, r[size_t(i)].token) << "row " << i << " on the spread path, keys " << keys_in;
      if (cases[size_t(i)].logprobs) {
        EXPECT_EQ(sp[size_t(i)].logprob, r[size_t(i)].logprob) << "row " << i << ", keys " << keys_in;
      }
    }
  }
}

// The no-cut draw and the top-k select against the cut path's draw (KeptCut) on the same rows and seeds: each row
// has a twin with min_p = 1e-30, which tests every id's w but cuts nothing (every w >= e^-27 here), so both must keep
// the same set and draw the same token bit for bit. Logits on a coarse grid give large groups of exact ties at the
// top-k boundary. Both also against the CPU.
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
      ASSERT_TRUE(sampling_has_cut(hb.sp[size_t(s)], V));
    } else {
      n_select += sampling_has_top_k(hb.sp[size_t(s)], V);
      n_none += !sampling_has_cut(hb.sp[size_t(s)], V);
    }
  }
  EXPECT_GT(n_select, 0);
  EXPECT_GT(n_none, 0);
  DevBuf<bf16> dl(logits);
  DeviceSampler ds(S, V);
  const auto r = ds.run(dl, hb);
  int distinct = 0;
  for (int s = 0; s < S; ++s) {
    const int t = twin_of[size_t(s)];
    if (t < 0) continue;
    ASSERT_EQ(r[size_t(s)].error, 0);
    ASSERT_EQ(r[size_t(t)].error, 0);
    EXPECT_EQ(r[size_t(t)].token, r[size_t(s)].token)
        << "V " << V << " row " << t << " (top_k " << cases[size_t(t)].top_k << ") differs from its min-p twin";
    if (cases[size_t(t)].logprobs) {
      EXPECT_EQ(r[size_t(t)].logprob, r[size_t(s)].logprob) << "row " << t;
    }
    distinct += s >= 3 && r[size_t(s)].token != r[size_t(s) - 2].token;
  }
  EXPECT_GT(distinct, n_pairs / 2) << "the draws should differ from row to row";
  expect_matches_cpu(hb, to_f32(logits), V, r, "paths");
}

// The spread path (passes and selects over many CTAs) against sampling_prepare's one CTA per row on the same rows: the
// same token bit for bit, for the real vocabulary and odd ones (37: most of the draw's 1,024 chunks empty), 1 / 3 / 8 /
// 64 rows, every third row with a cut (top-k, top-p, min-p or top-k + top-p + min-p), every fourth row with
// repetition, frequency and presence penalties (its prompt holds the row's best id, so that the max of z and a greedy
// row's argmax move; in odd rounds its last output token pending, as async scheduling passes it), every seventh row with its logprob and every sixth with 1-20 top logprobs (the same ids and
// logprobs: sampling_prepare sums the normalizer in the spread path's order), every fifth greedy (plain ones take
// their token from the LM head's argmax key, as the runner's rows; the others an argmax over their penalized logits),
// several temperatures (0.02: most weights underflow to 0)
// and RNG counters, logits spread, on a coarse grid (exact ties) or sparse (three ids carry all the weight: long runs
// of zero weights, flat prefix sums around the target); a NaN row (error 1) and a row whose tempered max overflows
// (error 2) report the same errors; the zeroed workspace is left zeroed.
TEST(CudaSampling, SpreadPathMatchesOneCtaPathBitForBit) {
  Rng rng(71);
  int compared = 0, distinct = 0, cut_rows = 0, penalty_rows = 0, logprob_rows = 0, top_rows = 0;
  int greedy_extra_rows = 0;  // greedy rows with penalties or logprobs
  for (int V : {kVocab, 1001, 37}) {
    for (int S : {1, 3, 8, 64}) {
      for (int round = 0; round < (S == 64 ? 2 : 6); ++round) {
        std::vector<SamplingParams> cases(static_cast<size_t>(S));
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(S)), outputs(static_cast<size_t>(S));
        std::vector<bf16> logits(size_t(S) * V);
        for (int r = 0; r < S; ++r) {
          SamplingParams& a = cases[size_t(r)];
          static constexpr float kTemps[4] = {0.6f, 1.0f, 1.3f, 0.02f};
          a.temperature = r % 5 == 4 ? 0.0f : kTemps[(r + round) % 4];  // greedy rows: their argmax keys
          a.seed = rng.next();
          if (r % 3 == 0 && (S == 1 ? round % 2 == 1 : true)) {  // a cut
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
          a.logprobs = r % 7 == 2 || r % 35 == 9;  // the token's raw logprob (r = 9, 44: greedy)
          a.top_logprobs = r % 6 == 5 ? 1 + (r + round) % 20 : 0;  // and the N best (r = 29: greedy)
          if (r % 4 == 1) {  // penalties: prompt and output ids, the best id among them (r = 9, 29, 49: greedy)
            a.repetition_penalty = r % 8 == 1 ? 1.3f : 0.8f;
            a.frequency_penalty = 0.4f, a.presence_penalty = r % 8 == 1 ? 0.5f : -0.3f;
            int best = 0;
            for (int i = 1; i < V; ++i)
              if (bf16_to_f32(logits[size_t(r) * V + i]) > bf16_to_f32(logits[size_t(r) * V + best])) best = i;
            prompts[size_t(r)] = {best, rng.below(V), rng.below(V)};
            for (auto& id : outputs[size_t(r)]) id = rng.below(4) == 0 ? best : rng.below(V);
          }
        }
        if (round == 3 && S >= 3) {
          logits[size_t(1) * V + size_t(V / 2)] = f32_to_bf16(std::nanf(""));  // row 1: NaN
          for (int i = 0; i < V; ++i) logits[size_t(2) * V + i] = f32_to_bf16(3e38f);  // row 2: inf after T
          cases[2].temperature = 0.01f;
        }
        const HostBatch hb = make_batch(cases, prompts, outputs, round % 2 == 1);  // (odd rounds: pending tokens)
        for (const auto& q : hb.sp) greedy_extra_rows += q.temperature == 0.0f && !sampling_is_plain_greedy(q);
        DevBuf<bf16> dl(logits);
        DevBuf<SampleSeqParams> dsp(hb.sp);
        std::vector<int32_t> ids = hb.ids, counts = hb.counts;
        if (ids.empty()) ids.push_back(0), counts.push_back(0);
        DevBuf<int32_t> dids(ids), dcounts(counts), dtok(hb.tokens);
        DeviceSampler ds(S, V);
        DevBuf<unsigned long long> keys(static_cast<size_t>(S));  // the LM head's argmax keys (consumed by each call)
        ds.res.poison();
        SamplingParamsDev op = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, false);
        op.row_argmax = keys.p, op.n_argmax_rows = S, op.tokens = dtok.p;
        row_argmax_bf16(dl.p, keys.p, S, V, nullptr);
        sample_tokens(op, nullptr);
        const auto one = ds.res.download();
        ds.res.poison();
        SamplingParamsDev sp = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true);
        sp.row_argmax = keys.p, sp.n_argmax_rows = S, sp.tokens = dtok.p;
        row_argmax_bf16(dl.p, keys.p, S, V, nullptr);
        sp.spread_selects = spread_selects_of(hb, V);
        for (const auto& q : hb.sp) cut_rows += sampling_has_cut(q, V), penalty_rows += sampling_edits_logits(q);
        sample_tokens(sp, nullptr);
        const auto spread = ds.res.download();
        for (int r = 0; r < S; ++r) {
          EXPECT_EQ(spread[size_t(r)].error, one[size_t(r)].error) << "V " << V << " S " << S << " row " << r;
          EXPECT_EQ(spread[size_t(r)].token, one[size_t(r)].token) << "V " << V << " S " << S << " row " << r;
          if (cases[size_t(r)].logprobs && one[size_t(r)].error == 0) {
            EXPECT_EQ(spread[size_t(r)].logprob, one[size_t(r)].logprob) << "V " << V << " row " << r;
            logprob_rows += 1;
          }
          for (int k = 0; k < std::min(cases[size_t(r)].top_logprobs, V) && one[size_t(r)].error == 0; ++k) {
            EXPECT_EQ(spread[size_t(r)].top_ids[k], one[size_t(r)].top_ids[k]) << "V " << V << " row " << r << " " << k;
            EXPECT_EQ(spread[size_t(r)].top_lp[k], one[size_t(r)].top_lp[k]) << "V " << V << " row " << r;
            top_rows += k == 0;
          }
          ++compared;
          distinct += r > 0 && one[size_t(r)].error == 0 && one[size_t(r)].token != one[size_t(r) - 1].token;
        }
        if (round == 3 && S >= 3) {
          EXPECT_EQ(one[1].error, 1);
          EXPECT_EQ(one[2].error, 2);
        }
        auto host = ds.spread.download();  // the zeroed parts, through the same carving on the host copy
        const SpreadWorkspace w = spread_workspace_at(host.data(), S, V);
        for (int r = 0; r < S; ++r) {
          EXPECT_TRUE(w.row_max[2 * r] == 0u && w.row_max[2 * r + 1] == 0u && w.row_last[r] == 0) << "dirty row " << r;
          EXPECT_EQ(w.select_arrivals[r], 0u) << "row " << r;
          EXPECT_EQ(w.raw_max[r], 0u) << "row " << r;
          EXPECT_EQ(w.row_best[r], 0ull) << "row " << r;
          EXPECT_EQ(w.top_count[r], 0) << "row " << r;
          for (int k = 0; k < (V + 31) / 32; ++k) EXPECT_EQ(w.penalized[r * ((V + 31) / 32) + k], 0u) << "row " << r;
          for (int d = 0; d < 256; ++d) EXPECT_EQ(w.select_hist[r * 256 + d], 0ull) << "row " << r << " digit " << d;
        }
        for (unsigned long long k : keys.download()) EXPECT_EQ(k, 0ull) << "argmax keys left";
      }
    }
  }
  EXPECT_GT(distinct, compared / 3) << "the draws should differ from row to row";
  EXPECT_GT(cut_rows, compared / 4) << "rows with cuts";
  EXPECT_GT(penalty_rows, compared / 8) << "rows with penalties";
  EXPECT_GT(logprob_rows, compared / 20) << "rows with a logprob";
  EXPECT_GT(top_rows, compared / 20) << "rows with top logprobs";
  EXPECT_GT(greedy_extra_rows, 20) << "greedy rows with penalties or logprobs";
}

TEST(CudaSampling, NoCutAndTopKMatchTheCutDrawBitForBit) {
  expect_paths_agree(kVocab, 3, {1, 2, 40, 1000, 50000, kVocab - 1});
  expect_paths_agree(1001, 4, {1, 3, 200, 500, 999, 1000});
  expect_paths_agree(37, 5, {1, 2, 5, 36});
}

// Many draws (2048 rows x 16 steps, distinct seeds) from one small row against its softmax, without a cut, with
// top-k and with top-p: chi-square over the kept ids below the 1e-6 quantile of its distribution (a wrong
// temperature, id offset or kept set gives values in the thousands).
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
  struct Cut {
    int top_k;
    float top_p;
  };
  for (const Cut cut : {Cut{0, 1.0f}, Cut{8, 1.0f}, Cut{0, 0.6f}}) {
    const int top_k = cut.top_k;
    // Expected: p_i = exp(z_i - z_max) / sum over the kept ids, z = fp32 logit / T; kept = the top_k best
    // (ties -> lower id), or top-p's prefix (the shortest whose units reach the target).
    std::vector<int> order(static_cast<size_t>(V));
    for (int i = 0; i < V; ++i) order[size_t(i)] = i;
    std::vector<float> z(static_cast<size_t>(V));
    for (int i = 0; i < V; ++i) z[size_t(i)] = lf[size_t(i)] / T;
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[size_t(a)] > z[size_t(b)]; });
    int n_kept = top_k > 0 ? top_k : V;
    if (cut.top_p < 1.0f) {
      auto units = [&](int id) { return top_p_units(float(std::exp(double(z[size_t(id)] - z[size_t(order[0])])))); };
      uint64_t all = 0, cum = 0;
      for (int k = 0; k < V; ++k) all += units(order[size_t(k)]);
      const uint64_t target = top_p_target(cut.top_p, all);
      n_kept = 0;
      while (cum < target) cum += units(order[size_t(n_kept++)]);
      ASSERT_GT(n_kept, 3);
      ASSERT_LT(n_kept, V - 3);
    }
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
        a.temperature = T, a.top_k = top_k, a.top_p = cut.top_p, a.seed = 5000 + uint64_t(s);
      }
      const HostBatch hb = make_batch(cases, prompts, outputs);
      const auto r = ds.run(dl, hb);
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
        EXPECT_EQ(hist[size_t(i)], 0) << "id " << i << " is outside the kept set (top_k " << top_k << ")";
        continue;
      }
      const double e = n * p[size_t(i)];
      chi2 += (double(hist[size_t(i)]) - e) * (double(hist[size_t(i)]) - e) / e;
      max_err = std::max(max_err, std::fabs(double(hist[size_t(i)]) / n - p[size_t(i)]));
    }
    // The chi-square 1e-6 upper quantile for n_kept - 1 degrees of freedom (Wilson-Hilferty; 40.5 at 7, 91.5 at
    // 36: within 3% of the exact values).
    const double df = n_kept - 1, h = 2.0 / (9.0 * df);
    const double bound = df * std::pow(1.0 - h + 4.7534 * std::sqrt(h), 3.0);
    std::printf("draws vs softmax (V %d, top_k %d, top_p %.2f: %d kept, %.0f draws): chi2 %.1f (bound %.1f), "
                "max |freq - p| %.4f\n", V, top_k, double(cut.top_p), n_kept, n, chi2, bound, max_err);
    EXPECT_LT(chi2, bound) << "top_k " << top_k << " top_p " << cut.top_p;
  }
}

// The spread path's cuts against the order sorted on the host: after sample_tokens, row_cut holds the last element
// (z bits, id) of top-k's prefix (the k-th of the order: z descending, ties -> lower id) and of top-p's (the first
// where the units, within top-k's prefix, reach top_p_target). Logits on a coarse grid put hundreds of exact ties at
// each boundary; spread rows too, and a top_p that keeps a single id. The real vocabulary and odd ones.
TEST(CudaSampling, SpreadCutsAreTheSortedOrdersElements) {
  Rng rng(404);
  int checked = 0;
  for (int V : {kVocab, 1001, 37}) {
    const int S = 12;
    std::vector<SamplingParams> cases(static_cast<size_t>(S));
    std::vector<bf16> logits(size_t(S) * V);
    for (int r = 0; r < S; ++r) {
      SamplingParams& a = cases[size_t(r)];
      a.temperature = r % 4 == 3 ? 0.3f : 1.0f;
      a.seed = rng.next();
      if (r % 3 != 1) a.top_k = 1 + rng.below(std::min(V - 1, r % 2 == 0 ? 60 : V - 1));
      if (r % 3 != 0) a.top_p = r == 4 ? 1e-6f : rng.uniform(0.05f, 0.99f);
      for (int i = 0; i < V; ++i)
        logits[size_t(r) * V + i] = f32_to_bf16(r % 2 == 0 ? float(rng.below(9) - 4) : rng.uniform(-6.f, 6.f));
    }
    const std::vector<std::vector<int32_t>> none(static_cast<size_t>(S));
    const HostBatch hb = make_batch(cases, none, none);
    DevBuf<bf16> dl(logits);
    DevBuf<SampleSeqParams> dsp(hb.sp);
    DevBuf<int32_t> dids(1), dcounts(1);
    DeviceSampler ds(S, V);
    SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, true);
    p.spread_selects = spread_selects_of(hb, V);
    ASSERT_EQ(p.spread_selects, 3);  // (no top logprobs here)
    ds.res.poison();
    sample_tokens(p, nullptr);
    auto host = ds.spread.download();
    const SpreadWorkspace w = spread_workspace_at(host.data(), S, V);
    const auto res = ds.res.download();
    const auto lf = to_f32(logits);
    for (int r = 0; r < S; ++r) {
      const SampleSeqParams& q = hb.sp[size_t(r)];
      ASSERT_EQ(res[size_t(r)].error, 0) << "row " << r;
      std::vector<float> z(static_cast<size_t>(V));
      for (int i = 0; i < V; ++i) z[size_t(i)] = lf[size_t(r) * V + i] / q.temperature;
      std::vector<int> order(static_cast<size_t>(V));
      for (int i = 0; i < V; ++i) order[size_t(i)] = i;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return z[size_t(a)] > z[size_t(b)]; });
      int kept = V;
      auto expect_cut = [&](int cut, int last) {
        const int id = order[size_t(last)];
        EXPECT_EQ(w.row_cut[6 * r + 2 * cut + 1], id) << "V " << V << " row " << r << " cut " << cut << " at " << last;
        float zb;
        std::memcpy(&zb, &w.row_cut[6 * r + 2 * cut], 4);
        EXPECT_EQ(zb, z[size_t(id)]) << "V " << V << " row " << r << " cut " << cut;
        ++checked;
      };
      if (sampling_has_top_k(q, V)) {
        kept = q.top_k;
        expect_cut(0, kept - 1);
      }
      if (sampling_has_top_p(q)) {
        const float z_max = z[size_t(order[0])];
        auto units = [&](int k) { return top_p_units(float(std::exp(double(z[size_t(order[size_t(k)])] - z_max)))); };
        uint64_t total = 0, cum = 0;
        for (int k = 0; k < kept; ++k) total += units(k);
        const uint64_t target = top_p_target(q.top_p, total);
        int n = 0;
        while (cum < target) cum += units(n++);
        expect_cut(1, n - 1);
        if (r == 4) {
          EXPECT_EQ(n, 1) << "top_p 1e-6 keeps the best id alone";
        }
      }
      const int token = res[size_t(r)].token;  // drawn from the kept prefix
      const auto pos = std::find(order.begin(), order.end(), token) - order.begin();
      int end = kept;
      if (sampling_has_top_p(q))
        end = int(std::find(order.begin(), order.end(), w.row_cut[6 * r + 3]) - order.begin()) + 1;
      EXPECT_LT(pos, end) << "V " << V << " row " << r << ": token " << token << " outside the kept prefix";
    }
  }
  EXPECT_GT(checked, 40);
}

// Time of one sample_tokens call at the real vocabulary, 1 and 64 rows (printed; the CUDA events bracket 20
// calls after a warm-up). "spread" configurations run the spread path (the runner's choice for any step that is not
// all plain greedy rows), the others one CTA per row (sampling_prepare; MXS_NO_SPREAD_SAMPLING=1); "plain" is the
// OpenAI default (temperature 1, top_p 1); "greedy" rows are at temperature 0 without the LM head's argmax keys.
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
    bool logprobs = false;
    float presence_penalty = 0.0f;
    int top_logprobs = 0;
    float temperature = 1.0f;
  };
  const char* rows_only = std::getenv("MXS_SAMPLING_TIMING_ROWS");  // 1 or 64: those rows alone
  for (int S : {1, 64}) {
    if (rows_only && std::atoi(rows_only) != S) continue;
    for (const Config& c : {Config{"plain, spread", 0, 1.0f}, Config{"plain", 0, 1.0f},
                            Config{"top_k 50, spread", 50, 1.0f}, Config{"top_k 50", 50, 1.0f},
                            Config{"top_p 0.9, spread", 0, 0.9f}, Config{"top_p 0.9", 0, 0.9f},
                            Config{"top_k 50 top_p 0.9, spread", 50, 0.9f}, Config{"logprobs, spread", 0, 1.0f, true},
                            Config{"logprobs", 0, 1.0f, true}, Config{"top logprobs 5, spread", 0, 1.0f, true, 0.f, 5},
                            Config{"top logprobs 5", 0, 1.0f, true, 0.f, 5},
                            Config{"penalty, spread", 0, 1.0f, false, 0.5f}, Config{"penalty", 0, 1.0f, false, 0.5f},
                            Config{"greedy logprobs, spread", 0, 1.0f, true, 0.f, 0, 0.f},
                            Config{"greedy logprobs", 0, 1.0f, true, 0.f, 0, 0.f},
                            Config{"greedy penalty, spread", 0, 1.0f, false, 0.5f, 0, 0.f},
                            Config{"greedy penalty", 0, 1.0f, false, 0.5f, 0, 0.f}}) {
      // MXS_SAMPLING_TIMING_ONLY=NAME: that configuration alone (to profile or sanitize its kernels).
      const char* only = std::getenv("MXS_SAMPLING_TIMING_ONLY");
      if (only && std::string(only) != c.name) continue;
      std::vector<SamplingParams> cases(static_cast<size_t>(S));
      for (int s = 0; s < S; ++s) {
        SamplingParams& a = cases[size_t(s)];
        a.temperature = c.temperature, a.top_k = c.top_k, a.top_p = c.top_p, a.seed = uint64_t(s);
        a.logprobs = c.logprobs, a.presence_penalty = c.presence_penalty, a.top_logprobs = c.top_logprobs;
      }
      const std::vector<std::vector<int32_t>> none(static_cast<size_t>(S));
      const HostBatch hb = make_batch(cases, none, none);
      DevBuf<SampleSeqParams> dsp(hb.sp);
      DevBuf<int32_t> dids(1), dcounts(1);
      const bool spread = std::string(c.name).find("spread") != std::string::npos;
      SamplingParamsDev p = ds.params(dl.p, dsp.p, dids.p, dcounts.p, S, spread);
      p.spread_selects = spread_selects_of(hb, V), p.spread_penalties = c.presence_penalty != 0.0f;
      const double ms = mean_ms_per_call(3, 20, [&](int) { sample_tokens(p, nullptr); });
      std::printf("sample_tokens V %d rows %2d %-26s %8.1f us/call\n", V, S, c.name, 1000.0 * ms);
      const auto r = ds.res.download();
      for (int s = 0; s < S; ++s) EXPECT_EQ(r[size_t(s)].error, 0) << c.name << " row " << s;
    }
  }
}

}  // namespace
}  // namespace mxs::cuda::test
