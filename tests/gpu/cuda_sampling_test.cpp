// GPU sampling against the CPU sampler (src/cpu/sampler.h), token for token, over one batch of rows that
// covers every parameter (greedy, penalties, temperature, top-k, top-p, min-p, seeds, logprobs), on the
// real vocabulary size; and the device copy of sample_uniform against the host one.
#include <algorithm>
#include <span>
#include <vector>

#include "cpu/sampler.h"
#include "cuda/kernels/sampling.h"
#include "engine/sampling_params.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

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

TEST(CudaSampling, MatchesCpuSamplerTokenForToken) {
  const int V = 201088;
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
    add([&](SamplingParams& p) { p.temperature = 0.7f, p.top_k = 50, p.seed = seed; });
    add([&](SamplingParams& p) { p.temperature = 1.2f, p.top_p = 0.9f, p.seed = seed, p.logprobs = true; });
    add([&](SamplingParams& p) { p.temperature = 0.9f, p.min_p = 0.05f, p.seed = seed; });
    add([&](SamplingParams& p) {
      p.temperature = 0.8f, p.top_k = 200, p.top_p = 0.8f, p.min_p = 0.02f, p.seed = seed;
      p.repetition_penalty = 1.1f, p.frequency_penalty = 0.3f, p.presence_penalty = -0.2f, p.top_logprobs = 3;
    });
  }
  const int S = int(cases.size());
  Rng rng(77);
  // Logits with a realistic spread and some exact ties (bf16).
  auto logits = random_bf16(size_t(S) * V, rng, -8.f, 8.f);
  for (int s = 0; s < S; ++s)
    for (int i = 0; i < 64; ++i) logits[size_t(s) * V + rng.below(V)] = f32_to_bf16(7.5f + 0.25f * float(i % 3));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(S)), outputs(static_cast<size_t>(S));
  std::vector<SampleSeqParams> sp(static_cast<size_t>(S));
  std::vector<int32_t> ids, counts;
  for (int s = 0; s < S; ++s) {
    for (int i = 0; i < 40; ++i) prompts[size_t(s)].push_back(rng.below(V));
    for (int i = 0; i < 1 + s % 7; ++i) outputs[size_t(s)].push_back(i % 3 == 0 ? prompts[size_t(s)][0] : rng.below(V));
    const SamplingParams& a = cases[size_t(s)];
    SampleSeqParams& q = sp[size_t(s)];
    q.temperature = a.temperature, q.top_p = a.top_p, q.min_p = a.min_p, q.top_k = a.top_k;
    q.frequency_penalty = a.frequency_penalty, q.presence_penalty = a.presence_penalty;
    q.repetition_penalty = a.repetition_penalty, q.seed = a.seed, q.step = outputs[size_t(s)].size();
    q.want_logprob = a.logprobs, q.top_logprobs = a.top_logprobs;
    // Distinct id lists as the runner builds them.
    q.rep_offset = int(ids.size());
    std::vector<int32_t> seen;
    for (auto* v : {&prompts[size_t(s)], &outputs[size_t(s)]})
      for (int32_t id : *v)
        if (std::find(seen.begin(), seen.end(), id) == seen.end()) seen.push_back(id), ids.push_back(id), counts.push_back(1);
    q.n_rep = int(ids.size()) - q.rep_offset;
    q.out_offset = int(ids.size());
    std::vector<int32_t> distinct;
    for (int32_t id : outputs[size_t(s)])
      if (std::find(distinct.begin(), distinct.end(), id) == distinct.end()) distinct.push_back(id);
    for (int32_t id : distinct) {
      ids.push_back(id);
      counts.push_back(int32_t(std::count(outputs[size_t(s)].begin(), outputs[size_t(s)].end(), id)));
    }
    q.n_out = int(ids.size()) - q.out_offset;
  }
  DevBuf<bf16> dl(logits);
  DevBuf<SampleSeqParams> dsp(sp);
  DevBuf<int32_t> dids(ids), dcounts(counts);
  DevBuf<float> z(size_t(S) * V), zs(size_t(S) * V);
  DevBuf<int32_t> oi(size_t(S) * V), o(size_t(S) * V);
  std::vector<int32_t> offs;
  for (int s = 0; s <= S; ++s) offs.push_back(s * V);
  DevBuf<int32_t> doffs(offs);
  const size_t temp_bytes = sampling_sort_temp_bytes(S, V);
  DevBuf<char> temp(temp_bytes);
  DevBuf<SampleResultDev> res(static_cast<size_t>(S));
  res.poison();
  SamplingParamsDev p;
  p.logits = dl.p, p.seqs = dsp.p, p.ids = dids.p, p.counts = dcounts.p, p.z = z.p, p.z_sorted = zs.p;
  p.order_in = oi.p, p.order = o.p, p.segment_offsets = doffs.p, p.sort_temp = temp.p, p.sort_temp_bytes = temp_bytes;
  p.results = res.p, p.n_seqs = S, p.vocab = V, p.any_random = true;
  sample_tokens(p, nullptr);
  const auto r = res.download();
  const auto lf = to_f32(logits);
  // The sorted rows: z descending, ties in ascending id, and z_sorted[i] == z[order[i]].
  {
    const auto zz = z.download(), zsd = zs.download();
    const auto ord = o.download();
    size_t bad_order = 0, bad_value = 0;
    for (int s = 0; s < S; ++s) {
      if (cases[size_t(s)].greedy()) continue;
      for (int i = 0; i < V; ++i) {
        const size_t k = size_t(s) * V + size_t(i);
        bad_value += zsd[k] != zz[size_t(s) * V + size_t(ord[k])];
        if (i > 0) bad_order += zsd[k - 1] < zsd[k] || (zsd[k - 1] == zsd[k] && ord[k - 1] > ord[k]);
      }
    }
    EXPECT_EQ(bad_order, 0u) << "sorted rows out of order (z descending, ids ascending on ties)";
    EXPECT_EQ(bad_value, 0u) << "z_sorted does not match z[order]";
  }
  for (int s = 0; s < S; ++s) {
    const SamplingParams& a = cases[size_t(s)];
    const cpu::SampleResult ref = cpu::sample_token(std::span<const float>(&lf[size_t(s) * V], size_t(V)), a,
                                                    prompts[size_t(s)], outputs[size_t(s)]);
    ASSERT_EQ(r[size_t(s)].error, 0) << "case " << s;
    EXPECT_EQ(r[size_t(s)].token, ref.token) << "case " << s << " temperature " << a.temperature << " top_k "
                                             << a.top_k << " top_p " << a.top_p << " min_p " << a.min_p;
    if (a.logprobs) {
      EXPECT_NEAR(r[size_t(s)].logprob, ref.logprob, 1e-4) << "case " << s;
    }
    for (int k = 0; k < a.top_logprobs; ++k) {
      EXPECT_EQ(r[size_t(s)].top_ids[k], ref.top[size_t(k)].token) << "case " << s << " top " << k;
      EXPECT_NEAR(r[size_t(s)].top_lp[k], ref.top[size_t(k)].logprob, 1e-4) << "case " << s << " top " << k;
    }
  }
}

}  // namespace
}  // namespace mxs::cuda::test
