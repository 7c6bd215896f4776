// `mxserve bench kernel dense-gemm`: the decode step's bf16 projections (q/k/v, o_proj, router, LM head) at the
// graph buckets' row counts, as the runner calls them (cublasGemmEx, default algorithm) vs the fastest of the
// algorithms cuBLASLt's heuristic offers for the same problem (each timed; split-K ones use a workspace). The
// weights rotate over >= 512 MB of copies so that every call reads DRAM, as in a decode step. Reports us and
// GB/s (weight bytes only) per case: how far the projections sit from the copy bandwidth, and whether picking
// the algorithm per shape would close it.
#pragma once
#include <string>
#include <vector>

namespace mxs::cuda {

struct BenchDenseGemmOptions {
  std::vector<int> rows = {8, 16, 32, 64, 128, 256};
  int algos = 16;  // heuristic results tried per case
  int iters = 50;
};

struct BenchDenseGemmRow {
  std::string name;  // qkv, o_proj, router, lm_head
  int n_rows = 0, k = 0, n_out = 0;
  double us_default = 0;
  double us_best = 0;     // fastest heuristic algorithm
  int best_index = -1;    // its rank in the heuristic's list (0 = cuBLASLt's own first choice)
  double us_first = 0;    // the heuristic's first choice
  size_t best_workspace = 0;
  int n_algos = 0;        // algorithms tried
};

struct BenchDenseGemmResult {
  std::string device;
  double copy_gb_s = 0;
  std::vector<BenchDenseGemmRow> rows;
};

BenchDenseGemmResult run_bench_dense_gemm(const BenchDenseGemmOptions& options);

}  // namespace mxs::cuda
