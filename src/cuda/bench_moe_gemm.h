// `mxserve bench kernel moe-gemm`: the MXFP4 grouped GEMM (moe_gemm_mxfp4, prefill) against cuBLAS bf16 on
// the same shapes (20b by default: 32 experts, H = I = 2880, top-4), uniform random routing, random weights
// generated on the GPU. cuBLAS gets its activations already grouped by expert (no gather) and is timed both
// as a per-expert cublasGemmEx loop and as one cublasGemmGroupedBatchedEx call; the faster one is the baseline.
#pragma once
#include <string>
#include <vector>

namespace mxs::cuda {

struct BenchMoeGemmOptions {
  std::vector<int> pairs = {32, 128, 512, 1024, 4096, 16384};  // P = token-expert pairs (n_tokens * top_k)
  std::string which = "gate_up";                               // gate_up | down
  int warmup = 20, iters = 100;
  int rounds = 3;  // every configuration timed in this many rounds (rotated order), median reported
  int hidden = 2880, intermediate = 2880, n_experts = 32, top_k = 4;
  // Routing: false = each token's top_k experts drawn uniformly at random (distinct); true = balanced, pair p
  // to expert p mod n_experts (exactly P / E pairs per expert: the best case for fixed-size tiles).
  bool balanced = false;
};

struct BenchMoeGemmRow {
  int pairs = 0, n_tile = 0, active_experts = 0;
  double ms_mxfp4 = 0, ms_bf16_loop = 0, ms_bf16_grouped = 0, ms_bf16 = 0;  // grouped: < 0 if unavailable
  int best_n_tile = 0;           // the fastest forced token tile (32, 48, 64, 128, 192) and its time: tunes the
  double ms_mxfp4_best_tile = 0; // automatic pick (ms_mxfp4 uses the automatic pick, n_tile)
  double ms_by_tile[5] = {};     // every forced token tile 32, 48, 64, 128, 192 (the data the pick is fitted on)
  double tflops_mxfp4 = 0, tflops_bf16 = 0;  // 2 * P * M * K / time
  double gb_s_mxfp4 = 0, gb_s_bf16 = 0;      // weight bytes of the active experts / time
};

struct BenchMoeGemmResult {
  std::string device, which;
  int M = 0, K = 0;  // output rows, input features
  std::vector<BenchMoeGemmRow> rows;
};

BenchMoeGemmResult run_bench_moe_gemm(const BenchMoeGemmOptions& options);

}  // namespace mxs::cuda
