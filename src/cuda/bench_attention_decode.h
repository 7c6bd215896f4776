// `mxserve bench kernel attention-decode`: decode attention per layer, the existing split kernel
// (attention_decode, CUDA cores, warp per q head) against the tensor-core path (attention_decode_mma), on the
// gpt-oss shapes (64 q heads, 8 kv heads, head_dim 64, block size 16): every sequence of the batch decodes one
// token at position context - 1, block tables shuffled, random bf16 K/V rotated over enough copies of the pool
// that each launch reads from DRAM (>= 256 MB per rotation), full layers (context keys) and sliding layers
// (128 keys). Split configurations: old = the scalar kernel's former runner rule (64 / 128 / 256 keys per split for
// batch <= 2 / <= 8 / more) with power-of-two
// split counts (sliding: <= 128 keys per split); new = attention_decode_mma_keys_per_split with power-of-two
// split counts, also with 2/3/4 cp.async stages, plus a sweep of keys per split (the fastest is reported). GB/s = K/V bytes read per launch / time.
#pragma once
#include <string>
#include <vector>

namespace mxs::cuda {

struct BenchAttentionDecodeOptions {
  std::vector<int> batches = {1, 8, 64, 256};
  std::vector<int> contexts = {1024, 8192};
  int warmup = 5, iters = 50;
  int n_heads = 64, n_kv_heads = 8, block_size = 16, window = 128;
};

struct BenchAttentionDecodeRow {
  int batch = 0, context = 0, keys = 0;  // keys read per token (window on sliding layers)
  bool sliding = false;
  double kv_bytes = 0;                   // K + V bytes read per launch
  int old_kps = 0, old_splits = 0;
  double us_old = 0, gb_s_old = 0;
  int new_kps = 0, new_splits = 0;       // attention_decode_mma_keys_per_split's pick
  double us_new = 0, gb_s_new = 0;
  double us_stages[3] = {0, 0, 0};       // new_kps with 2, 3, 4 cp.async stages per warp
  int best_kps = 0;                      // fastest keys per split of the sweep (default stages)
  double us_best = 0;
  double rel_l2 = 0;                     // new vs old output (sanity; tests/gpu checks against the CPU)
};

struct BenchAttentionDecodeResult {
  std::string device;
  int num_sms = 0;
  double copy_gb_s = 0;  // device-to-device copy, read + write counted
  std::vector<BenchAttentionDecodeRow> rows;
};

BenchAttentionDecodeResult run_bench_attention_decode(const BenchAttentionDecodeOptions& options);

}  // namespace mxs::cuda
