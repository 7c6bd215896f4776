// Decode benchmark (see bench_decode.h).
#include "cuda/bench_decode.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/bench_runner.h"
#include "cuda/cta_trace.h"
#include "cuda/cuda_runner.h"
#include "cuda/kernels/dense_gemm.h"
#include "cuda/kernels/lm_head_screen.h"

namespace mxs::cuda {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

double decode_step_bytes(const ModelConfig& c, int batch, int context, const std::string& bf12, bool lm_screen) {
  const double H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, L = c.num_layers;
  // bf12 (CudaRunnerOptions::bf12_dense, the packed subset): 1.5 bytes per weight + a 16-byte header per row, read
  // by the q/k/v GEMV at one token, o_proj at one or two and the LM head below kLmHeadGemmMinRows rows.
  auto has = [&](const char* m) { return ("," + bf12 + ",").find(std::string(",") + m + ",") != std::string::npos; };
  auto dense = [&](double rows, double cols, bool packed) { return packed ? rows * (cols * 1.5 + 16) : rows * cols * 2; };
  const double attn = dense(c.qkv_dim(), H, has("qkv") && batch == 1) + dense(H, c.q_dim(), has("o_proj") && batch <= 2);
  const double router = E * H * 2.0;
  const double expert = (2 * I * H + H * I) * (0.5 + 1.0 / 32.0);  // nibbles + e8m0 scales
  // Expected distinct experts per layer with uniform top-k routing of `batch` tokens.
  const double p_miss = std::pow(1.0 - double(c.experts_per_token) / E, batch);
  const double experts_touched = E * (1.0 - p_miss);
  // (from kLmHeadGemmMinRows rows the LM head is a cuBLAS GEMM on the bf16 matrix)
  const bool lm_gemv = batch < kLmHeadGemmMinRows;
  const double lm_head = lm_screen && batch <= kLmScreenMaxRows ? c.vocab_size * (H + 16.0)
                                                                : dense(c.vocab_size, H, has("lm_head") && lm_gemv);
  double kv = 0;
  for (int l = 0; l < c.num_layers; ++l) {
    const double keys = c.is_sliding(l) ? std::min(context, c.sliding_window) : context;
    kv += keys * c.kv_dim() * 2.0 * 2.0;
  }
  return L * (attn + router + experts_touched * expert) + lm_head + batch * kv;
}

BenchDecodeResult run_bench_decode(const BenchDecodeOptions& o) {
  MXS_CHECK(!o.batches.empty() && o.context >= 1 && o.steps >= 1, "bench decode: --batch, --context, --steps must be positive");
  int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  // (the breakdowns' batch sizes need sequences and KV too)
  for (int b : o.breakdown_batches.value_or(std::vector<int>{})) max_batch = std::max(max_batch, b);
  BenchDecodeResult r;
  r.copy_gb_s = measure_copy_gb_s();

  CudaRunnerOptions ro;
  ro.max_seqs = std::max(max_batch, 1);
  ro.max_tokens = std::max(ro.max_seqs, 256);
  ro.max_model_len = o.context + o.warmup + o.steps + 16;
  ro.use_graphs = o.use_graphs;
  if (o.moe_gemm_min_pairs > 0) ro.moe_gemm_min_pairs = o.moe_gemm_min_pairs;
  ro.bf12_dense = o.bf12_dense;
  ro.lm_head_screen = o.lm_head_screen;
  ro.exact_attention = o.exact_attention;
  const int blocks_per_seq = (ro.max_model_len + ro.block_size - 1) / ro.block_size;
  ro.num_kv_blocks = blocks_per_seq * max_batch;
  Stopwatch load;
  const std::unique_ptr<CudaRunner> runner = make_bench_runner(o.model_dir, o.preset, ro, &r.model);
  r.load_s = load.seconds();
  r.device = runner->device_name();
  r.bf12_dense = runner->bf12_dense();
  r.lm_head_screen = runner->lm_head_screen();
  r.exact_attention = runner->exact_attention();
  runner->fill_kv_random(99);
  const ModelConfig& c = runner->config();

  // Every sequence greedy (the default), or sampled at o.temperature (top-p o.top_p) with its own seed.
  std::vector<SamplingParams> sampling(static_cast<size_t>(std::max(max_batch, 1)));
  for (size_t s = 0; s < sampling.size(); ++s) {
    sampling[s].temperature = o.temperature, sampling[s].top_p = o.top_p, sampling[s].seed = 1000 + s;
    sampling[s].presence_penalty = o.presence_penalty, sampling[s].logprobs = o.logprobs;
  }
  // With a penalty: every sequence's output history, 256 ids spread over the vocabulary (what the penalty reads).
  std::vector<std::vector<int32_t>> histories(o.presence_penalty != 0.0f ? sampling.size() : 0);
  for (size_t s = 0; s < histories.size(); ++s)
    for (size_t k = 0; k < 256; ++k) histories[s].push_back(int32_t((s * 7919 + k * 104729) % size_t(c.vocab_size)));
  std::vector<std::vector<int32_t>> tables;  // sequence s owns blocks s * blocks_per_seq ...
  auto step_batch = [&](int batch, int pos, const std::vector<int32_t>& tokens, bool from_last_sample) {
    if (int(tables.size()) < batch) {
      tables.resize(size_t(batch));
      for (int s = 0; s < batch; ++s) {
        tables[size_t(s)].resize(size_t(blocks_per_seq));
        std::iota(tables[size_t(s)].begin(), tables[size_t(s)].end(), s * blocks_per_seq);
      }
    }
    StepBatch b;
    for (int s = 0; s < batch; ++s) {
      SequenceStep q;
      q.seq_id = uint64_t(s);
      q.token_offset = s;
      q.num_tokens = 1;
      q.context_len = pos + 1;
      q.block_table = tables[size_t(s)];
      q.sample = true;
      q.sampling = &sampling[size_t(s)];
      if (!histories.empty()) q.output_tokens = histories[size_t(s)];
      q.input_from_last_sample = from_last_sample;
      b.tokens.push_back(from_last_sample ? 0 : tokens[size_t(s)]);
      b.positions.push_back(pos);
      b.seqs.push_back(q);
    }
    return b;
  };
  auto check_ok = [&](const StepOutput& out, int batch, std::vector<int32_t>* last) {
    for (int s = 0; s < batch; ++s) {
      MXS_CHECK(out.samples[size_t(s)].ok, "bench decode: a step failed: " + out.samples[size_t(s)].error);
      if (last) (*last)[size_t(s)] = out.samples[size_t(s)].token;
    }
  };
  // Synchronous steps: each one's token ids come back before the next is built (what `step()` measures).
  auto run_steps = [&](int batch, int n_steps, int first_pos, std::vector<double>* ms) {
    std::vector<int32_t> last(static_cast<size_t>(batch), 1000);
    for (int i = 0; i < n_steps; ++i) {
      const StepBatch b = step_batch(batch, first_pos + i, last, false);
      StepOutput out;
      Stopwatch sw;
      runner->step(b, &out);
      if (ms) ms->push_back(sw.ms());
      check_ok(out, batch, &last);
    }
  };
  // Pipelined steps, as the engine runs them with async scheduling: step i + 1 is submitted (its tokens copied on
  // the device from step i's samples) before step i is collected. Returns ms per step over n_steps.
  auto run_pipelined = [&](int batch, int n_steps, int first_pos) {
    const std::vector<int32_t> first(static_cast<size_t>(batch), 1000);
    Stopwatch sw;
    runner->submit(step_batch(batch, first_pos, first, false));
    StepOutput out;
    for (int i = 1; i < n_steps; ++i) {
      runner->submit(step_batch(batch, first_pos + i, first, true));
      runner->collect(&out);
      check_ok(out, batch, nullptr);
    }
    runner->collect(&out);
    check_ok(out, batch, nullptr);
    return sw.ms() / n_steps;
  };

  for (int batch : o.batches) {
    run_steps(batch, o.warmup, o.context - 1, nullptr);
    std::vector<double> ms;
    run_steps(batch, o.steps, o.context - 1 + o.warmup, &ms);
    BenchDecodeRow row;
    row.batch = batch;
    row.step_ms = median(ms);
    row.tok_s = batch / (row.step_ms * 1e-3);
    row.bytes_per_step =
        decode_step_bytes(c, batch, o.context, runner->bf12_dense(), r.lm_head_screen && o.plain_greedy());
    row.gb_s = row.bytes_per_step / (row.step_ms * 1e-3) / 1e9;
    row.roofline_frac = row.gb_s / r.copy_gb_s;
    row.pipelined_step_ms = run_pipelined(batch, o.steps, o.context - 1 + o.warmup);
    row.pipelined_tok_s = batch / (row.pipelined_step_ms * 1e-3);
    row.graph_ms = runner->time_last_graph_ms(o.steps);
    r.rows.push_back(row);
    MXS_LOG_INFO("bench decode: batch %d: %.3f ms/step, %.0f tok/s, %.0f GB/s", batch, row.step_ms, row.tok_s, row.gb_s);
  }

  // MXS_CTA_TRACE_OUT=FILE (a build configured with -DMXS_CTA_TRACE=ON): two batch-1 steps with a record per CTA of
  // the decode kernels (cuda/cta_trace.h), as CSV for scripts/cta_trace.py.
  if (const char* path = std::getenv("MXS_CTA_TRACE_OUT")) {
    CtaTraceCapture capture(size_t(1) << 20);
    run_steps(1, 2, o.context - 1 + o.warmup, nullptr);
    const size_t n = capture.write_csv(path);
    MXS_LOG_INFO("bench decode: %zu CTA records of two batch-1 steps in %s", n, path);
  }

  // Per-kernel breakdown (events around every launch, graphs off while timing).
  auto breakdown = [&](int batch) {
    KernelBreakdown b;
    b.batch = batch;
    runner->enable_kernel_timing(true);
    run_steps(batch, 8, o.context - 1, nullptr);
    const KernelTimes kt = runner->kernel_times();
    runner->enable_kernel_timing(false);
    for (const auto& [name, total] : kt.ms) {
      const double us = total * 1e3 / std::max(kt.steps, 1);
      b.kernels_us.push_back({name, us});
      b.sum_us += us;
    }
    std::sort(b.kernels_us.begin(), b.kernels_us.end(),
              [](const auto& x, const auto& y) { return x.second > y.second; });
    r.breakdowns.push_back(std::move(b));
  };
  std::vector<int> bd = {1};
  if (std::find(o.batches.begin(), o.batches.end(), 64) != o.batches.end()) bd.push_back(64);
  for (int b : o.breakdown_batches.value_or(bd)) breakdown(b);
  return r;
}

}  // namespace mxs::cuda
