// Prefill on the CudaRunner (tiny preset, random in-memory weights), issue #5's end-to-end checks:
//  - a 600-token prompt prefilled in chunks (tensor-core prefill attention, cuBLAS projections, grouped-GEMM
//    MoE) then decoded, against the same prompt run one token per step (decode kernels only);
//  - a 32,768-token prompt in 2,048-token chunks followed by 64 decoded tokens, against the CPU reference.
// Both compare the logits of every sampled position, teacher-forced with the reference's tokens. The two sides
// run different kernels (bf16 P in the prefill attention, other summation orders), so now and then a near-tied
// bf16 router logit sends a token of one layer to another expert on random weights (one position's logits
// change a lot, the next ones do not): the bounds are on the median error and the top-1 agreement rate.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <numeric>
#include <vector>

#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "cuda/cuda_runner.h"
#include "gpu_test_util.h"

namespace mxs::cuda {
namespace {

using test::compare;

// One sequence driven through a runner: chunked prompt, then teacher-forced decode.
struct Driver {
  ModelRunner* runner;
  std::vector<int32_t> tokens, table, output;
  int computed = 0;
  // Runs the next min(chunk, pending) tokens; returns the logits of the last one when it is the last pending.
  bool step(int chunk, const SamplingParams* sp, std::vector<float>* logits, int32_t* token) {
    const int n = std::min(chunk, int(tokens.size()) - computed);
    StepBatch b;
    SequenceStep q;
    q.seq_id = 1, q.token_offset = 0, q.num_tokens = n, q.context_len = computed + n;
    q.block_table = table;
    q.sample = q.return_logits = computed + n == int(tokens.size());
    q.sampling = sp;
    q.output_tokens = output;
    for (int i = 0; i < n; ++i) b.tokens.push_back(tokens[size_t(computed + i)]), b.positions.push_back(computed + i);
    b.seqs.push_back(q);
    StepOutput out;
    runner->step(b, &out);
    computed += n;
    if (!q.sample) return false;
    EXPECT_EQ(out.samples.size(), 1u);
    EXPECT_TRUE(out.samples[0].ok) << out.samples[0].error;
    *logits = out.samples[0].logits;
    *token = out.samples[0].token;
    return true;
  }
};

struct Agreement {
  std::vector<double> rel;
  int top1 = 0, nan = 0;
  void add(const std::vector<float>& got, const std::vector<float>& ref) {
    const auto e = compare(got, ref);
    rel.push_back(e.rel_l2);
    nan += int(e.n_nan);
    top1 += std::max_element(got.begin(), got.end()) - got.begin() == std::max_element(ref.begin(), ref.end()) - ref.begin();
  }
  void expect(double median_bound, const char* what) {
    std::vector<double> r = rel;
    std::sort(r.begin(), r.end());
    std::printf("%s: %zu positions, top-1 agreement %d, rel RMS median %.2e max %.2e\n", what, r.size(), top1,
                r[r.size() / 2], r.back());
    EXPECT_EQ(nan, 0) << what;
    EXPECT_LE(r[r.size() / 2], median_bound) << what << ": median rel RMS";
    EXPECT_GE(top1, int(r.size()) * 85 / 100) << what << ": top-1 agreement";
  }
};

std::vector<int32_t> prompt_of(int n, uint64_t seed, int vocab) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) p[size_t(i)] = int32_t((uint64_t(i) * 7919 + seed * 104729 + 11) % uint64_t(vocab));
  return p;
}

CudaRunnerOptions options(int max_tokens, int max_len) {
  CudaRunnerOptions o;
  o.max_seqs = 4;
  o.max_tokens = max_tokens;
  o.max_model_len = max_len;
  o.num_kv_blocks = (max_len + 15) / 16 + 4;
  o.progress = false;
  return o;
}

TEST(CudaPrefillTiny, ChunkedPrefillThenDecodeMatchesTokenByToken) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, 41);
  CudaRunner chunked(rw->weights, options(256, 1024)), single(rw->weights, options(256, 1024));
  SamplingParams greedy;
  greedy.temperature = 0;
  Driver a{&chunked, prompt_of(600, 3, cfg.vocab_size), {}, {}}, b{&single, a.tokens, {}, {}};
  a.table.resize(64), b.table.resize(64);
  std::iota(a.table.begin(), a.table.end(), 0), std::iota(b.table.begin(), b.table.end(), 0);
  Agreement agree;
  for (int pos = 0; pos < 24; ++pos) {
    std::vector<float> la, lb;
    int32_t ta = 0, tb = 0;
    while (!a.step(200, &greedy, &la, &ta)) {
    }
    while (!b.step(1, &greedy, &lb, &tb)) {
    }
    agree.add(la, lb);
    for (Driver* d : {&a, &b}) d->tokens.push_back(tb), d->output.push_back(tb);  // both follow token-by-token
  }
  agree.expect(3e-2, "600-token prompt: chunked prefill vs one token per step");
}

TEST(CudaPrefillTiny, Prompt32kChunkedThen64DecodedMatchesCpu) {
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, 43);
  const int n = 32768, decode = 64, max_len = n + decode + 16;
  CudaRunner gpu(rw->weights, options(2048, max_len));
  cpu::CpuRunnerOptions co;
  co.num_blocks = (max_len + 15) / 16 + 4;
  cpu::CpuRunner cpu(rw->weights, co);
  SamplingParams greedy;
  greedy.temperature = 0;
  Driver g{&gpu, prompt_of(n, 5, cfg.vocab_size), {}, {}}, c{&cpu, g.tokens, {}, {}};
  g.table.resize(size_t(co.num_blocks)), c.table.resize(size_t(co.num_blocks));
  std::iota(g.table.begin(), g.table.end(), 0), std::iota(c.table.begin(), c.table.end(), 0);
  Agreement agree;
  for (int i = 0; i <= decode; ++i) {
    std::vector<float> lg, lc;
    int32_t tg = 0, tc = 0;
    while (!g.step(2048, &greedy, &lg, &tg)) {
    }
    while (!c.step(2048, &greedy, &lc, &tc)) {
    }
    agree.add(lg, lc);
    for (Driver* d : {&g, &c}) d->tokens.push_back(tc), d->output.push_back(tc);  // teacher-forced by the CPU
  }
  agree.expect(3e-2, "32k-token prompt + 64 decoded tokens: CUDA vs CPU reference");
}

}  // namespace
}  // namespace mxs::cuda
