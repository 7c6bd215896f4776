// Builds the ModelRunner a command asked for (--backend cpu|cuda) from loaded weights, sizing its KV pool;
// the one place that knows which backends this build has.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "engine/model_runner.h"
#include "model/weights.h"

namespace mxs {

// The CUDA backend's default set of dense weights read from lossless 12-bit copies (common/bf12.h) by the
// small-batch GEMVs: "auto" = resolve_bf12_dense's choice for the card. "" turns it off.
inline constexpr const char* kBf12DenseDefault = "auto";

// What "auto" means on a card whose DRAM peaks at dram_bytes_per_s (the CUDA attributes' memory clock x bus width):
// the LM head and o_proj always; q/k/v only below 4.5 TB/s. At one token the q/k/v GEMV is latency-bound, and on an
// H200 (4.8 TB/s) its bf16 rows with both of a warp's first rows requested before the wait beat the bf12 copy's
// 12-warp kernel (20b batch 1, graph 1.299-1.302 vs 1.321-1.323 ms; 120b too), while on an H100 (3.35 TB/s) the
// bf12 copy won (1.674-1.692 vs 1.699-1.703 ms): docs/PERF.md sessions 18 and 25. Any other list is returned as is.
inline std::string resolve_bf12_dense(const std::string& list, double dram_bytes_per_s) {
  if (list != "auto") return list;
  return dram_bytes_per_s >= 4.5e12 ? "lm_head,o_proj" : "lm_head,o_proj,qkv";
}

struct RunnerSpec {
  std::string backend = "cpu";  // "cpu" | "cuda"
  int block_size = 16;
  int num_kv_blocks = 0;        // > 0: exact pool size; 0: cpu -> enough for kv_tokens, cuda -> memory fraction
  int64_t kv_tokens = 0;        // cpu: tokens the pool must hold when num_kv_blocks == 0
  double device_memory_utilization = 0.90;  // cuda
  int max_batch_size = 256;           // sequences per step (cuda: graph buckets; cpu: sliding pool size)
  int max_num_batched_tokens = 2048;  // new tokens per step (cuda: workspace size; cpu: sliding pool size)
  bool sliding_kv_group = true;       // the sliding-window layers get their own small KV pool (cpu, cuda)
  int max_length = 8192;              // cuda: longest context
  std::string bf12_dense = kBf12DenseDefault;  // cuda: dense weights with lossless 12-bit copies (--bf12-dense)
  bool lm_head_screen = true;  // cuda: the LM head's int8 screening copy for greedy steps (--no-lm-head-screen)
  bool exact_attention = false;  // cuda: steps of <= 256 keys on the exact attention path (--exact-attention)
};

bool build_has_cuda();  // compiled with the CUDA backend
// The build has the CUDA backend and the CUDA runtime sees a device (driver present and recent enough).
bool cuda_device_usable();
// What --backend auto (the default) means: "cuda" when cuda_device_usable(), else "cpu".
std::string default_backend();
// Throws the error make_runner would give for an unknown or missing backend, without loading anything.
void check_backend_available(const std::string& backend);

// Throws mxs::Error for an unknown backend, "this build has no CUDA backend", or what the backend rejects.
std::unique_ptr<ModelRunner> make_runner(const ModelWeights& weights, const RunnerSpec& spec);

// "cpu (16 threads)" / the CUDA device name, for benchmark tables.
std::string runner_device_name(const ModelRunner& runner);

}  // namespace mxs
