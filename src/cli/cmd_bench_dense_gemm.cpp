// `mxserve bench kernel dense-gemm`: the decode step's bf16 projections as the runner calls cuBLAS vs the
// fastest cuBLASLt heuristic algorithm (see cuda/bench_dense_gemm.h). Markdown on stdout, JSON with --json FILE.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_dense_gemm.h")
#include "cuda/bench_dense_gemm.h"
#define MXS_HAVE_BENCH_DENSE_GEMM 1
#endif

namespace {

struct DenseGemmArgs {
  std::string rows = "8,16,32,64,128,256", json_path;
  int algos = 16, iters = 50;
};

void run_dense_gemm(const DenseGemmArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_DENSE_GEMM
  mxs::cuda::BenchDenseGemmOptions o;
  o.rows = mxs::cli::parse_int_list(a.rows, "--rows", 1, 8192);
  o.algos = a.algos, o.iters = a.iters;
  const mxs::cuda::BenchDenseGemmResult r = mxs::cuda::run_bench_dense_gemm(o);
  const std::string commit = mxs::cli::bench_commit();
  std::printf("## mxserve bench kernel dense-gemm\n\ncard: %s; commit %s; copy bandwidth %.0f GB/s; bf16 x bf16 -> "
              "fp32 (LM head: bf16), weights rotating over >= 512 MB; GB/s counts weight bytes\ncommand: `%s`\n\n",
              r.device.c_str(), commit.c_str(), r.copy_gb_s, command.c_str());
  std::printf("| gemm | rows | cublasGemmEx us | GB/s | Lt first us | Lt best us | GB/s | %% copy | best rank / tried "
              "| workspace KB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  nlohmann::json j;
  j["device"] = r.device, j["commit"] = commit, j["command"] = command, j["copy_gb_s"] = r.copy_gb_s;
  for (const auto& w : r.rows) {
    const double gb = double(w.k) * w.n_out * 2 * 1e-9;
    std::printf("| %s | %d | %.2f | %.0f | %.2f | %.2f | %.0f | %.0f%% | %d / %d | %zu |\n", w.name.c_str(), w.n_rows,
                w.us_default, gb / (w.us_default * 1e-6), w.us_first, w.us_best, gb / (w.us_best * 1e-6),
                100 * gb / (w.us_best * 1e-6) / r.copy_gb_s, w.best_index, w.n_algos, w.best_workspace / 1024);
    j["rows"].push_back({{"gemm", w.name}, {"rows", w.n_rows}, {"k", w.k}, {"n_out", w.n_out},
                         {"us_default", w.us_default}, {"us_lt_first", w.us_first}, {"us_lt_best", w.us_best},
                         {"best_index", w.best_index}, {"algos", w.n_algos}, {"workspace", w.best_workspace}});
  }
  if (!a.json_path.empty()) mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench kernel");
#endif
}

// After cmd_bench_kernel.cpp's registrar (62), which creates `bench kernel`.
mxs::cli::CommandRegistrar reg(64, [](CLI::App& app) {
  CLI::App* kernel = mxs::cli::bench_group(app).get_subcommand("kernel");
  auto args = std::make_shared<DenseGemmArgs>();
  CLI::App* cmd = kernel->add_subcommand(
      "dense-gemm",
      "The decode step's bf16 projections: cublasGemmEx as the runner calls it vs the best cuBLASLt algorithm");
  cmd->add_option("--rows", args->rows, "Comma-separated row counts (tokens per step)")->capture_default_str();
  cmd->add_option("--algos", args->algos, "cuBLASLt heuristic results tried per case")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  cmd->add_option("--iters", args->iters, "Timed calls per case")->check(CLI::Range(1, 100000))->capture_default_str();
  mxs::cli::add_json_and_run(cmd, &args->json_path, "mxserve bench kernel dense-gemm",
                             [args](const std::string& command) { run_dense_gemm(*args, command); });
});

}  // namespace
