// `mxserve bench prefill`: time to first token of one prompt on the CudaRunner, per prompt length: the prompt
// runs in chunks of `chunk` tokens (one sequence, fresh KV each repetition), the last chunk samples the first
// output token on the GPU; TTFT = wall time from the first chunk's submission to that token on the host. The
// prompt tokens are random ids; random 20b weights route ~uniformly (the harder case for the grouped GEMM).
#pragma once
#include <string>
#include <vector>

namespace mxs::cuda {

struct BenchPrefillOptions {
  std::string model_dir;  // checkpoint; empty: random weights of `preset` on the device
  std::string preset = "20b";
  std::vector<int> prompts = {512, 2048, 8192, 32768};
  int chunk = 8192;       // tokens per step (the runner's max_tokens)
  int reps = 3;           // timed repetitions per length (median reported), after one warm-up
  int breakdown = 2048;   // prompt length of the per-stage table (CUDA events per kernel family); 0: none
};

// Where one prompt's prefill time goes: device time per kernel family (events around each launch, summed over
// the prompt's steps), the device span of the steps (kernels + gaps), the host's time in step() before its
// synchronize, and wall time outside step() (the bench's own batch building).
struct BenchPrefillBreakdown {
  int prompt = 0;
  std::vector<std::pair<std::string, double>> kernels_ms;  // descending
  double kernel_sum_ms = 0, gpu_span_ms = 0, host_enqueue_ms = 0, step_wall_ms = 0, wall_ms = 0;
};

struct BenchPrefillRow {
  int prompt = 0, steps = 0;
  double ttft_ms = 0, tok_s = 0;
  double tflop_s = 0;  // 2 x active parameters x tokens + attention (causal) / TTFT
};

struct BenchPrefillResult {
  std::string device, model;
  double load_s = 0;
  std::vector<BenchPrefillRow> rows;
  BenchPrefillBreakdown breakdown;  // prompt == 0: not run
};

BenchPrefillResult run_bench_prefill(const BenchPrefillOptions& options);

}  // namespace mxs::cuda
