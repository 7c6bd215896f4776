// `mxserve bench decode`: decode throughput of the CudaRunner at several batch sizes and one context length
// (KV pre-filled with random values, every sequence decodes one token per step, greedy or sampled on the GPU), the
// card's copy bandwidth measured in the same run, achieved GB/s per step, and per-kernel breakdowns (CUDA
// events) at batch 1 and 64 or the batch sizes asked for. Random weights route ~uniformly over the experts (the
// harder case for batching).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/runner_factory.h"
#include "model/config.h"

namespace mxs::cuda {

struct BenchDecodeOptions {
  std::string model_dir;        // checkpoint to load; empty: random weights of `preset` on the device
  std::string preset = "20b";
  std::vector<int> batches = {1, 8, 32, 64, 128, 256};
  int context = 1024;
  int steps = 32;               // timed decode steps per batch (after warm-up)
  int warmup = 4;
  bool use_graphs = true;
  int moe_gemm_min_pairs = 0;  // > 0: MoE steps with at least this many (token, expert) pairs use the grouped GEMM
  std::string bf12_dense = kBf12DenseDefault;  // CudaRunnerOptions::bf12_dense
  bool lm_head_screen = true;                  // CudaRunnerOptions::lm_head_screen
  bool exact_attention = false;                // CudaRunnerOptions::exact_attention
  float temperature = 0.0f;  // 0: greedy steps (the LM-head screen applies to plain ones); > 0: every sequence samples
  float top_p = 1.0f;        // with temperature > 0: every sequence's top-p (1: no cut, the OpenAI default)
  float presence_penalty = 0.0f;  // every sequence's presence penalty, over a history of 256 output ids
  bool logprobs = false;          // every sequence returns its token's logprob
  // Plain greedy steps (the screen's argmax is every token); else every step reads the full LM head's logits.
  bool plain_greedy() const { return temperature == 0.0f && presence_penalty == 0.0f && !logprobs; }
  // Batch sizes with a per-kernel breakdown (any of 1..256, in `batches` or not; empty: none); unset: batch 1, and
  // 64 when `batches` has it.
  std::optional<std::vector<int>> breakdown_batches;
};

struct BenchDecodeRow {
  int batch = 0;
  double step_ms = 0;           // median wall time of one step (host prep + GPU + token ids back)
  double tok_s = 0;
  double bytes_per_step = 0;    // weights (+ experts expected to be touched) + KV read
  double gb_s = 0;
  double roofline_frac = 0;     // gb_s / copy bandwidth
  // The same steps pipelined as the engine's async scheduling runs them (step i + 1 submitted before step i is
  // collected, its tokens handed over on the device): mean ms per step and tok/s.
  double pipelined_step_ms = 0, pipelined_tok_s = 0;
  // GPU time of the step's CUDA graph alone, replayed back to back (CudaRunner::time_last_graph_ms): the forward
  // pass without the input copy, token handoff, sampling and results copy around it. 0 without graphs.
  double graph_ms = 0;
};

struct KernelBreakdown {
  int batch = 0;
  std::vector<std::pair<std::string, double>> kernels_us;  // us per step, descending
  double sum_us = 0;
};

struct BenchDecodeResult {
  std::string device, model, command;
  std::string bf12_dense;       // the runner's bf12-packed dense weights (CudaRunner::bf12_dense), "" = none
  bool lm_head_screen = false;  // greedy steps of 1-8 rows screen the LM head (CudaRunner::lm_head_screen)
  bool exact_attention = false;  // short steps on the exact attention path (CudaRunner::exact_attention)
  double copy_gb_s = 0;         // device-to-device copy, read + write counted
  double load_s = 0;
  std::vector<BenchDecodeRow> rows;
  // Per-kernel device time per step (CUDA events, graphs off), one per BenchDecodeOptions::breakdown_batches entry.
  std::vector<KernelBreakdown> breakdowns;
};

BenchDecodeResult run_bench_decode(const BenchDecodeOptions& options);

// Bytes a decode step must read at `batch` (weights incl. expected distinct experts, KV at `context`), with the
// dense weights' bf12 copies where the runner reads them (bf12: CudaRunner::bf12_dense()'s list) or all in bf16, and
// the LM head's int8 screening copy at 1-8 greedy rows (lm_screen; the few exactly recomputed rows not counted).
double decode_step_bytes(const ModelConfig& c, int batch, int context, const std::string& bf12 = "",
                         bool lm_screen = false);

}  // namespace mxs::cuda
