// Async scheduling on the CUDA backend (docs/ARCHITECTURE.md "Async scheduling"):
//  - copy_sampled_tokens (the device-side token handoff) against a host reference on fresh random results,
//    odd sizes, out-of-vocabulary tokens (-> 0), untouched rows left as they were;
//  - CudaRunner's two-phase API directly: step N + 1 submitted before N is collected, its decode tokens taken
//    from N's samples on the device, equals the blocking step() with the tokens known (greedy and seeded);
//  - the engine over the CudaRunner (tiny preset, random weights, CUDA graphs) with async scheduling on and off:
//    identical tokens and logprobs for greedy and seeded requests, max_tokens = 1, and stop tokens that end
//    requests mid-batch (their next-step samples discarded). The step shapes are the same in both modes except
//    the discarded rows, which stay inside the same graph bucket, so the kernels see the same launches. Also
//    logit_bias and min_tokens in both modes (min_tokens counts the token still on the device), and token
//    constraints whose masks depend on the token sampled in the step before (async: deferred, supplied after the
//    forward pass was queued; CudaRunner::supply_masks).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "cpu/random_weights.h"
#include "cuda/cuda_runner.h"
#include "cuda/token_handoff.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "engine/token_constraint.h"
#include "gpu_test_util.h"

namespace mxs {
namespace {

using cuda::test::DevBuf;
using cuda::test::Rng;

TEST(CudaAsync, CopySampledTokensMatchesTheHostReference) {
  for (int n : {1, 29, 200}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    Rng rng(uint64_t(n) * 7 + 3);
    const int n_results = n + 11, n_tokens = 3 * n + 5, vocab = 1000;
    std::vector<cuda::SampleResultDev> results(static_cast<size_t>(n_results));
    for (auto& r : results) {
      r = {};
      const uint64_t x = rng.next();
      r.token = x % 10 == 0 ? -int32_t(x % 7) - 1 : x % 10 == 1 ? vocab + int32_t(x % 5) : int32_t(x % vocab);
    }
    std::vector<int32_t> tokens(static_cast<size_t>(n_tokens));
    for (auto& t : tokens) t = int32_t(rng.next() % vocab);
    std::vector<int32_t> dst(static_cast<size_t>(n_tokens));
    for (int i = 0; i < n_tokens; ++i) dst[size_t(i)] = i;
    for (int i = n_tokens - 1; i > 0; --i) std::swap(dst[size_t(i)], dst[size_t(rng.next() % uint64_t(i + 1))]);
    std::vector<int32_t> pairs(static_cast<size_t>(2 * n));
    std::vector<int32_t> ref = tokens;
    for (int i = 0; i < n; ++i) {
      pairs[size_t(2 * i)] = dst[size_t(i)];
      pairs[size_t(2 * i + 1)] = int32_t(rng.next() % uint64_t(n_results));
      const int32_t t = results[size_t(pairs[size_t(2 * i + 1)])].token;
      ref[size_t(dst[size_t(i)])] = t >= 0 && t < vocab ? t : 0;
    }
    DevBuf<cuda::SampleResultDev> d_results(results);
    DevBuf<int32_t> d_tokens(tokens), d_pairs(pairs);
    cuda::copy_sampled_tokens(d_tokens.p, d_results.p, d_pairs.p, n, vocab, nullptr);
    EXPECT_EQ(d_tokens.download(), ref);
  }
}

cuda::CudaRunnerOptions tiny_options() {
  cuda::CudaRunnerOptions opt;
  opt.num_kv_blocks = 128, opt.block_size = 16, opt.max_seqs = 8, opt.max_tokens = 512, opt.max_model_len = 1024;
  opt.progress = false;
  return opt;
}

// Two sequences decode 12 steps through submit()/collect() with input_from_last_sample, one step ahead of the
// host; the blocking step() with the known tokens must give the same samples.
TEST(CudaAsync, TwoPhaseHandoffEqualsBlockingSteps) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/41);
  SamplingParams greedy, seeded;
  greedy.temperature = 0.0f;
  seeded.temperature = 0.9f, seeded.top_p = 0.95f, seeded.seed = 1234, seeded.logprobs = true;
  const std::vector<int32_t> tables[2] = {{0, 1, 2, 3}, {4, 5, 6, 7}};
  std::vector<int32_t> prompts[2];
  for (int i = 0; i < 20; ++i) prompts[0].push_back((i * 37 + 11) % cfg.vocab_size);
  for (int i = 0; i < 9; ++i) prompts[1].push_back((i * 53 + 5) % cfg.vocab_size);
  const int n_steps = 12;
  // Step 0 prefills both prompts; step k >= 1 decodes the token sampled in step k - 1.
  auto run = [&](bool two_phase) {
    cuda::CudaRunner runner(rw->weights, tiny_options());
    std::vector<int32_t> outs[2];
    std::vector<float> lps;
    auto make_batch = [&](int k, bool from_last) {
      StepBatch b;
      for (int s = 0; s < 2; ++s) {
        SequenceStep q;
        q.seq_id = uint64_t(s + 1);
        q.token_offset = int32_t(b.tokens.size());
        q.block_table = tables[s];
        q.sample = true;
        q.sampling = s == 0 ? &greedy : &seeded;
        q.prompt_tokens = prompts[s];
        const int n_prompt = int(prompts[s].size());
        if (k == 0) {
          q.num_tokens = n_prompt, q.context_len = n_prompt;
          for (int i = 0; i < n_prompt; ++i) b.tokens.push_back(prompts[s][size_t(i)]), b.positions.push_back(i);
        } else {
          q.num_tokens = 1, q.context_len = n_prompt + k;
          // Known tokens: outs[s] holds k of them; from_last: k - 1 (the k-th is on the device).
          q.input_from_last_sample = from_last;
          q.output_tokens = std::span<const int32_t>(outs[s]).first(size_t(k - (from_last ? 1 : 0)));
          b.tokens.push_back(from_last ? 0 : outs[s][size_t(k - 1)]);
          b.positions.push_back(n_prompt + k - 1);
        }
        b.seqs.push_back(q);
      }
      return b;
    };
    auto take = [&](const StepOutput& o) {
      EXPECT_EQ(o.samples.size(), 2u);
      for (int s = 0; s < 2; ++s) {
        EXPECT_TRUE(o.samples[size_t(s)].ok) << o.samples[size_t(s)].error;
        outs[s].push_back(o.samples[size_t(s)].token);
      }
      lps.push_back(o.samples[1].logprob);
    };
    StepOutput out;
    if (!two_phase) {
      for (int k = 0; k < n_steps; ++k) {
        runner.step(make_batch(k, false), &out);
        take(out);
      }
    } else {
      runner.submit(make_batch(0, false));
      for (int k = 1; k < n_steps; ++k) {
        runner.submit(make_batch(k, true));  // before step k - 1 is collected
        runner.collect(&out);
        take(out);
      }
      runner.collect(&out);
      take(out);
    }
    return std::make_pair(std::vector<std::vector<int32_t>>{outs[0], outs[1]}, lps);
  };
  const auto blocking = run(false);
  const auto two_phase = run(true);
  EXPECT_EQ(blocking.first, two_phase.first);
  EXPECT_EQ(blocking.second, two_phase.second);
  EXPECT_EQ(blocking.first[0].size(), size_t(n_steps));
}

struct EngineRun {
  std::vector<std::vector<int32_t>> tokens;
  std::vector<FinishReason> finish;
  EngineMetrics metrics;
};

EngineRun run_engine(const cpu::RandomWeights& rw, const std::vector<Request>& requests, bool async,
                     std::vector<std::vector<float>>* logprobs) {
  cuda::CudaRunner runner(rw.weights, tiny_options());
  EngineConfig ec;
  ec.max_num_batched_tokens = 512;
  ec.max_batch_size = 8;
  ec.check_invariants = true;
  ec.async_scheduling = async;
  Engine engine(runner, nullptr, ec);
  std::vector<std::vector<float>> lps(requests.size());
  OfflineOptions opt;
  opt.on_event = [&](size_t i, const TokenEvent& ev) { lps[i].insert(lps[i].end(), ev.logprobs.begin(), ev.logprobs.end()); };
  const OfflineRun run = run_offline(engine, requests, opt);
  EngineRun r;
  for (const auto& res : run.results) {
    r.tokens.push_back(res.tokens);
    r.finish.push_back(res.finish);
    EXPECT_NE(res.finish, FinishReason::kError) << res.error;
  }
  r.metrics = run.metrics;
  if (logprobs) *logprobs = std::move(lps);
  return r;
}

TEST(CudaAsync, EngineAsyncOnEqualsOffGreedySeededPenaltiesAndStops) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/43);
  std::vector<Request> requests(8);
  for (int r = 0; r < 8; ++r) {
    Request& q = requests[size_t(r)];
    for (int i = 0; i < 20 + r * 9; ++i) q.prompt.push_back((r * 97 + i * 31 + 3) % cfg.vocab_size);
    q.max_tokens = r == 5 ? 1 : 40 + r * 7;
    q.stop_token_ids.clear();
    if (r % 2 == 1) {
      q.sampling.temperature = 0.8f, q.sampling.top_p = 0.9f, q.sampling.seed = 500 + uint64_t(r);
      q.sampling.logprobs = true;
    } else {
      q.sampling.temperature = 0.0f;
    }
    // Penalties (their pending token counted on the device: SampleSeqParams::pending_index), sampled and greedy.
    if (r == 3) q.sampling.presence_penalty = 0.8f, q.sampling.repetition_penalty = 1.3f;
    if (r == 4) q.sampling.frequency_penalty = 0.6f;
    if (r == 6) q.sampling.repetition_penalty = 0.7f;
  }
  // Without stops: every step has the same rows in both modes.
  std::vector<std::vector<float>> lp_off, lp_on;
  const EngineRun off = run_engine(*rw, requests, false, &lp_off);
  const EngineRun on = run_engine(*rw, requests, true, &lp_on);
  EXPECT_EQ(off.tokens, on.tokens);
  EXPECT_EQ(lp_off, lp_on);
  EXPECT_EQ(on.tokens[5].size(), 1u);
  EXPECT_EQ(off.metrics.overlapped_steps, 0u);
  EXPECT_GT(on.metrics.overlapped_steps, 30u);

  // Stop tokens: request 2 stops at its 6th token, request 3 at its 9th (the first occurrence of that token),
  // while the others keep decoding; async runs one discarded row for each.
  auto with_stops = requests;
  with_stops[2].stop_token_ids = {off.tokens[2][5]};
  with_stops[3].stop_token_ids = {off.tokens[3][8]};
  const EngineRun soff = run_engine(*rw, with_stops, false, nullptr);
  const EngineRun son = run_engine(*rw, with_stops, true, nullptr);
  EXPECT_EQ(soff.tokens, son.tokens);
  EXPECT_EQ(soff.finish, son.finish);
  EXPECT_EQ(son.finish[2], FinishReason::kStop);
  EXPECT_LE(son.tokens[2].size(), 6u);
  EXPECT_EQ(son.metrics.kv_blocks_used, 0);
}

// logit_bias and min_tokens through the CUDA runner's staging (SampleSeqParams::bias_offset; under async scheduling
// the step count includes the token still on the device): a +100 bias on a stop token ends each request right after
// its min_tokens, greedy and seeded, with penalties on some rows, async on and off alike.
TEST(CudaAsync, EngineLogitBiasAndMinTokensOnEitherMode) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/47);
  std::vector<Request> requests(6);
  for (int r = 0; r < 6; ++r) {
    Request& q = requests[size_t(r)];
    for (int i = 0; i < 12 + r * 5; ++i) q.prompt.push_back((r * 53 + i * 17 + 9) % cfg.vocab_size);
    q.max_tokens = 30;
    const int32_t stop = 1000 + r;
    q.stop_token_ids = {stop};
    q.sampling.logit_bias = {{stop, 100.0f}, {int32_t(2000 + r), -100.0f}};
    q.sampling.min_tokens = 3 * r;  // 0 .. 15
    q.sampling.temperature = r % 2 ? 0.9f : 0.0f, q.sampling.seed = 900 + uint64_t(r);
    if (r == 4) q.sampling.presence_penalty = 0.5f, q.sampling.repetition_penalty = 1.2f;
  }
  const EngineRun off = run_engine(*rw, requests, false, nullptr);
  const EngineRun on = run_engine(*rw, requests, true, nullptr);
  EXPECT_EQ(off.tokens, on.tokens);
  for (int r = 0; r < 6; ++r) {
    const auto& t = on.tokens[size_t(r)];
    EXPECT_EQ(on.finish[size_t(r)], FinishReason::kStop) << r;
    ASSERT_EQ(t.size(), size_t(3 * r + 1)) << r;
    EXPECT_EQ(t.back(), 1000 + r) << r;
    EXPECT_EQ(std::count(t.begin(), t.end(), 1000 + r) + std::count(t.begin(), t.end(), 2000 + r), 1) << r;
  }
  EXPECT_GT(on.metrics.overlapped_steps, 10u);
}

// A constraint whose every mask depends on the last sampled token: token t is allowed when t < 3000 and t % 5 is
// (the last token % 5 + 1) % 5 (0 first). A wrong mask at any step shows up as a refused token (the request fails).
class ChainConstraint : public TokenConstraint {
 public:
  explicit ChainConstraint(int vocab) : words_((vocab + 31) / 32) {}
  bool allowed(std::vector<uint32_t>* mask) override {
    mask->assign(size_t(words_), 0u);
    for (int t = want_; t < 3000; t += 5) (*mask)[size_t(t) / 32] |= 1u << (t % 32);
    return true;
  }
  bool accept(int32_t token) override {
    if (token < 0 || token >= 3000 || token % 5 != want_) return false;
    want_ = (token + 1) % 5;
    return true;
  }

 private:
  int words_;
  int want_ = 0;
};

TEST(CudaAsync, EngineDeferredMasksOnEitherMode) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/53);
  std::vector<Request> requests(7);
  for (int r = 0; r < 7; ++r) {
    Request& q = requests[size_t(r)];
    for (int i = 0; i < 10 + r * 7; ++i) q.prompt.push_back((r * 31 + i * 13 + 5) % cfg.vocab_size);
    q.max_tokens = 24 + r;
    q.sampling.temperature = r % 2 ? 0.8f : 0.0f, q.sampling.seed = 700 + uint64_t(r);
    if (r == 3) q.sampling.top_p = 0.9f, q.sampling.presence_penalty = 0.4f;
    const int vocab = int(cfg.vocab_size);
    if (r < 5) q.constraint = [vocab] { return std::make_unique<ChainConstraint>(vocab); };  // 2 unconstrained
  }
  const EngineRun off = run_engine(*rw, requests, false, nullptr);
  const EngineRun on = run_engine(*rw, requests, true, nullptr);
  EXPECT_EQ(off.tokens, on.tokens);
  for (int r = 0; r < 5; ++r) {
    ASSERT_EQ(on.tokens[size_t(r)].size(), size_t(24 + r)) << r;
    int want = 0;
    for (int32_t t : on.tokens[size_t(r)]) {
      EXPECT_TRUE(t < 3000 && t % 5 == want) << r << ": " << t;
      want = (t + 1) % 5;
    }
  }
  EXPECT_GT(on.metrics.overlapped_steps, 15u);
}

}  // namespace
}  // namespace mxs
