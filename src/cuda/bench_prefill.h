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
};

BenchPrefillResult run_bench_prefill(const BenchPrefillOptions& options);

}  // namespace mxs::cuda
