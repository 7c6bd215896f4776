// CudaRunner: the ModelRunner of the CUDA backend (SM90). Weights are uploaded once into one device arena,
// the paged KV pool is a second arena sized by --device-memory-utilization, and the step workspaces a third;
// nothing is allocated on the hot path. A step runs the fused kernels of src/cuda/kernels; pure-decode steps
// of up to 256 sequences replay a CUDA graph captured per batch-size bucket (1, 2, ..., 8, 12, 16, ..., 256).
// Sampling runs on the GPU; only token ids (and logprobs) come back. With async scheduling the engine submits step
// N + 1 before collecting N (submit/collect), and N + 1's decode inputs come from N's samples on the device.
// Plain C++ header: no CUDA types.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/model_runner.h"
#include "engine/runner_factory.h"
#include "model/weights.h"

namespace mxs::cuda {

struct CudaRunnerOptions {
  int device = 0;
  double device_memory_utilization = 0.90;  // fraction of the card's memory this process may take
  int num_kv_blocks = 0;        // > 0: exact KV pool size (overrides the utilization)
  // Sliding-window layers' own KV pool (docs/ARCHITECTURE.md, KV groups): 0 = one pool for all layers (callers
  // that build StepBatches by hand), -1 = sliding_pool_blocks(...) when the model has sliding layers (never runs
  // dry for max_seqs x max_tokens; the engine's choice), > 0 = that many blocks.
  int num_sliding_kv_blocks = 0;
  int block_size = 16;
  int max_seqs = 256;           // sequences per step
  int max_tokens = 2048;        // new tokens per step (prefill chunk budget)
  int max_model_len = 8192;     // longest context a sequence may reach
  bool use_graphs = true;       // CUDA graphs for pure-decode steps
  // MoE through the grouped GEMM (moe_gemm_mxfp4) for steps of >= this many (token, expert) pairs, else the
  // GEMVs (moe_gemv_mxfp4, at most kMoeGemvMaxPairs). 0 = 8 pairs per expert on average and up (20b: 256 pairs
  // = the batch-64 bucket; 120b: 1024 = batch 256). H100, ms per step GEMV / GEMM (`bench decode
  // --moe-gemm-min-pairs`, since the 32-token tile runs 3 CTAs per SM): 20b batch 16 5.72-5.78 / 6.28-6.41, 32
  // 6.64-6.76 / 7.05-7.09, 48 (6 per expert) 7.47-7.57 / 7.41-7.47, 64 (8) 7.96-8.02 / 7.35-7.40; 120b batch 192
  // (6 per expert) 32.9 / 35.0. Both read the same packed experts.
  int moe_gemm_min_pairs = 0;
  bool progress = true;         // weight-upload progress bar on stderr
  // Lossless 12-bit copies of dense weights (common/bf12.h) for the bandwidth-bound GEMVs: the LM head below 8 rows
  // (+0.87 GB of device memory for 20b), o_proj at 1-2 tokens (+0.42 GB) and q/k/v at one (+0.53 GB; with 12 warps
  // per CTA, which only bf12's registers allow: docs/PERF.md, session 18). Which ones: "lm_head", "o_proj", "qkv",
  // comma-separated; "" = none. The environment variable MXS_BF12 overrides it (A/B; "0" = none).
  std::string bf12_dense = kBf12DenseDefault;
  // Greedy steps of 1-8 LM-head rows find the argmax by screening (kernels/lm_head_screen.h): an int8 copy of the
  // LM head (+0.58 GB of device memory for gpt-oss) bounds every logit, and only the few rows that can still win
  // are computed exactly (the bf12 GEMV's token, bit for bit; 0.58 GB read per step instead of 0.87 at 1-3 rows
  // and 1.16 for the GEMM at 4-8 rows, whose fp32 sums run in another order). Steps with sampling, penalties,
  // logprobs or returned logits run the full LM head. The environment variable MXS_LM_SCREEN ("0" / "1") overrides
  // it (A/B).
  bool lm_head_screen = true;
  // Steps whose tokens all see <= kExactAttentionMaxKeys (256) keys run the exact attention (kernels/
  // attention_decode_exact.cu: the CPU reference's order of operations and roundings, so that such steps reproduce
  // its logits up to exp's last bit) instead of the tensor-core kernels every longer step runs (fp32 online
  // softmax, P in bf16 unnormalized). Off by default: the tensor-core path is 4-7% faster per 20b step at short
  // contexts (H200, docs/PERF.md session 27); the tests that compare greedy continuations with the CPU reference
  // turn it on. The environment variable MXS_EXACT_ATTENTION ("0" / "1") overrides it (A/B).
  bool exact_attention = false;
};

// Per-kernel-family device time of the steps run since enable_kernel_timing(true) (CUDA events, graphs off).
struct KernelTimes {
  std::map<std::string, double> ms;  // family -> total ms
  int steps = 0;
  // Whole steps (the bench's stage tables): device time from the first input copy to the sampled token's copy
  // back (kernels + gaps between them), host time spent in step() before its final synchronize (validation,
  // staging, launches), and step() wall time; totals over `steps`.
  double gpu_span_ms = 0, host_enqueue_ms = 0, step_wall_ms = 0;
};

// Batch bucket of a graph-replayed decode step of n sequences: the smallest of 1, 2, ..., 8, 12, 16, 24, ..., 192, 256
// (every size to 8, then powers of two and 1.5 x powers of two) >= n; the graph runs that many rows (padding rows
// in a scratch block).
int graph_batch_bucket(int n);

class CudaRunner : public ModelRunner {
 public:
  // Uploads `weights` (throws mxs::Error naming a mismatching tensor, or when the device lacks memory).
  CudaRunner(const ModelWeights& weights, const CudaRunnerOptions& options);
  // Random weights generated on the device (benchmarks without a checkpoint).
  CudaRunner(const ModelConfig& config, uint64_t seed, const CudaRunnerOptions& options);
  ~CudaRunner() override;

  const ModelConfig& config() const override;
  KvCacheLayout kv_layout() const override;
  std::string name() const override { return "cuda"; }
  void step(const StepBatch& batch, StepOutput* out) override;  // submit() + collect()
  // Two-phase stepping (model_runner.h): submit() queues the step on the runner's stream and returns; collect()
  // waits for it. input_from_last_sample tokens are copied on the device from the previous step's sampling
  // results (token_handoff.h); pinned staging is double-buffered so step N + 1 is staged while N runs.
  void submit(const StepBatch& batch) override;
  void collect(StepOutput* out) override;
  // A step with deferred masks (SequenceStep::allowed_tokens_deferred): submit() queued its forward pass; this
  // stages the masks in the step's packed inputs, copies them after it, and queues the sampling and the results
  // copy, so that the host computes the masks while the GPU runs the forward pass.
  void supply_masks(const std::vector<std::span<const uint32_t>>& masks) override;

  // Beyond the seam (tests, benchmarks).
  std::string device_name() const;
  double weights_upload_seconds() const;
  size_t weights_bytes() const;
  void enable_kernel_timing(bool on);  // disables graphs while on
  // Which dense weights have bf12 copies (CudaRunnerOptions::bf12_dense), as "lm_head,o_proj,qkv" (a subset).
  std::string bf12_dense() const;
  bool lm_head_screen() const;
  bool exact_attention() const;  // CudaRunnerOptions::exact_attention after MXS_EXACT_ATTENTION  // whether the LM head's int8 screening copy exists (CudaRunnerOptions::lm_head_screen)
  KernelTimes kernel_times() const;
  void set_use_graphs(bool on);
  int graphs_captured() const;
  // The decode graph of the last graph step, replayed n times back to back between two events: its GPU time per
  // replay in ms (the forward pass alone: no input copy, token handoff, sampling or results copy), or 0 when the
  // last step ran without a graph. It re-runs that step's forward over the same inputs (the KV rows it writes get
  // the same values) and clears the LM head's argmax keys after them (sampling would have); the logits are left as
  // the replays wrote them. Benchmarks only.
  double time_last_graph_ms(int n);
  // Fills the whole KV pool with random bf16 values (benchmarks of long contexts without a prefill).
  void fill_kv_random(uint64_t seed);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mxs::cuda
