// Prefill benchmark (see bench_prefill.h).
#include "cuda/bench_prefill.h"

#include <algorithm>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "common/timer.h"
#include "cuda/bench_runner.h"
#include "cuda/cuda_runner.h"
#include "engine/sampling_params.h"

namespace mxs::cuda {
namespace {

// Multiply-adds per token at context position `pos` (dense projections, active experts, router, LM head only
// for the last token is left out) and attention scores + P.V over the keys the token sees.
double flops_per_token(const ModelConfig& c, int pos) {
  const double H = c.hidden_size, I = c.intermediate_size;
  const double dense = double(c.qkv_dim()) * H + H * c.q_dim() + double(c.num_experts) * H;
  const double experts = c.experts_per_token * (2 * I * H + H * I);
  double attn = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    const double keys = c.is_sliding(l) ? std::min(pos + 1, c.sliding_window) : pos + 1;
    attn += 2.0 * keys * c.head_dim * c.num_heads;
  }
  return 2.0 * (c.num_layers * (dense + experts) + attn);
}

}  // namespace

BenchPrefillResult run_bench_prefill(const BenchPrefillOptions& o) {
  MXS_CHECK(!o.prompts.empty() && o.chunk >= 16 && o.reps >= 1, "bench prefill: --prompt, --chunk >= 16, --reps >= 1");
  const int max_prompt = *std::max_element(o.prompts.begin(), o.prompts.end());
  CudaRunnerOptions ro;
  ro.max_seqs = 1;
  ro.max_tokens = std::min(o.chunk, max_prompt);
  ro.max_model_len = max_prompt + 16;
  ro.num_kv_blocks = (ro.max_model_len + ro.block_size - 1) / ro.block_size;
  BenchPrefillResult r;
  Stopwatch load;
  const std::unique_ptr<CudaRunner> runner = make_bench_runner(o.model_dir, o.preset, ro, &r.model);
  r.load_s = load.seconds();
  r.device = runner->device_name();
  const ModelConfig& c = runner->config();
  std::vector<int32_t> table(size_t(ro.num_kv_blocks));
  std::iota(table.begin(), table.end(), 0);
  SamplingParams greedy;
  greedy.temperature = 0;

  // One prompt of n tokens, chunked; returns the wall ms to the first sampled token.
  auto run_prompt = [&](int n, uint64_t seed, int* steps) {
    std::vector<int32_t> prompt(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) prompt[size_t(i)] = int32_t((uint64_t(i) * 2654435761u + seed * 97) % uint64_t(c.vocab_size));
    Stopwatch sw;
    *steps = 0;
    for (int done = 0; done < n; ++*steps) {
      const int m = std::min(ro.max_tokens, n - done);
      StepBatch b;
      SequenceStep q;
      q.seq_id = seed;
      q.token_offset = 0;
      q.num_tokens = m;
      q.context_len = done + m;
      q.block_table = table;
      q.sample = done + m == n;
      q.sampling = &greedy;
      q.prompt_tokens = prompt;
      for (int i = 0; i < m; ++i) b.tokens.push_back(prompt[size_t(done + i)]), b.positions.push_back(done + i);
      b.seqs.push_back(q);
      StepOutput out;
      runner->step(b, &out);
      if (q.sample) MXS_CHECK(!out.samples.empty() && out.samples[0].ok, "bench prefill: the first token failed");
      done += m;
    }
    return sw.ms();
  };

  for (int n : o.prompts) {
    MXS_CHECK(n >= 1, "bench prefill: prompt lengths must be >= 1");
    int steps = 0;
    run_prompt(n, 1, &steps);  // warm-up (cuBLAS heuristics, first-touch)
    std::vector<double> ms;
    for (int i = 0; i < o.reps; ++i) ms.push_back(run_prompt(n, uint64_t(i + 2), &steps));
    std::sort(ms.begin(), ms.end());
    BenchPrefillRow row;
    row.prompt = n, row.steps = steps, row.ttft_ms = ms[ms.size() / 2];
    row.tok_s = n / (row.ttft_ms * 1e-3);
    double flops = 0;
    for (int p = 0; p < n; ++p) flops += flops_per_token(c, p);
    row.tflop_s = flops / (row.ttft_ms * 1e-3) / 1e12;
    r.rows.push_back(row);
  }

  if (o.breakdown > 0) {
    MXS_CHECK(o.breakdown <= max_prompt, "bench prefill: --breakdown must be <= the longest --prompt");
    int steps = 0;
    run_prompt(o.breakdown, 1, &steps);  // warm-up at this length (it may not be in --prompt)
    runner->enable_kernel_timing(true);
    BenchPrefillBreakdown& b = r.breakdown;
    b.prompt = o.breakdown;
    b.wall_ms = run_prompt(o.breakdown, 99, &steps);
    const KernelTimes kt = runner->kernel_times();
    runner->enable_kernel_timing(false);
    for (const auto& [name, ms] : kt.ms) b.kernels_ms.push_back({name, ms}), b.kernel_sum_ms += ms;
    std::sort(b.kernels_ms.begin(), b.kernels_ms.end(), [](const auto& x, const auto& y) { return x.second > y.second; });
    b.gpu_span_ms = kt.gpu_span_ms, b.host_enqueue_ms = kt.host_enqueue_ms, b.step_wall_ms = kt.step_wall_ms;
  }
  return r;
}

}  // namespace mxs::cuda
