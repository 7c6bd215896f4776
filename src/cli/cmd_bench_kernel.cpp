// `mxserve bench kernel moe-gemm`: one kernel against its cuBLAS baseline on the model's shapes (markdown on
// stdout, JSON with --json FILE). Needs the CUDA backend; random weights and routing generated on the GPU.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_moe_gemm.h")
#include "cuda/bench_moe_gemm.h"
#define MXS_HAVE_BENCH_MOE_GEMM 1
#endif

namespace {

struct MoeGemmArgs {
  std::string pairs = "32,128,512,1024,4096,16384", which = "gate_up", json_path;
  int warmup = 20, iters = 100;
};

void run_moe_gemm(const MoeGemmArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_MOE_GEMM
  mxs::cuda::BenchMoeGemmOptions o;
  o.pairs = mxs::cli::parse_int_list(a.pairs, "--P", 1, 1 << 20);
  o.which = a.which;
  o.warmup = a.warmup;
  o.iters = a.iters;
  const mxs::cuda::BenchMoeGemmResult r = mxs::cuda::run_bench_moe_gemm(o);
  std::printf("## mxserve bench kernel moe-gemm (%s)\n\ncard: %s; %s GEMM M = %d outputs x K = %d, %d experts, top-%d, "
              "uniform random routing; mxfp4 with the automatic token tile (best forced tile in the last column); "
              "bf16 = best of cuBLAS per-expert cublasGemmEx loop and "
              "cublasGemmGroupedBatchedEx (activations pre-grouped); mean of %d iterations after %d warm-up\n"
              "command: `%s`\n\n",
              r.which.c_str(), r.device.c_str(), r.which.c_str(), r.M, r.K, o.n_experts, o.top_k, o.iters, o.warmup,
              command.c_str());
  std::printf("| P | tile | ms mxfp4 | ms bf16 | speedup | TFLOP/s mxfp4 | TFLOP/s bf16 | GB/s mxfp4 weights | "
              "GB/s bf16 weights | ms bf16 loop | ms bf16 grouped | best tile: ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& w : r.rows) {
    char grouped[32];
    if (w.ms_bf16_grouped > 0) std::snprintf(grouped, sizeof(grouped), "%.3f", w.ms_bf16_grouped);
    else std::snprintf(grouped, sizeof(grouped), "n/a");
    std::printf("| %d | %d | %.3f | %.3f | %.2fx | %.0f | %.0f | %.0f | %.0f | %.3f | %s | %d: %.3f |\n", w.pairs,
                w.n_tile, w.ms_mxfp4, w.ms_bf16, w.ms_bf16 / w.ms_mxfp4, w.tflops_mxfp4, w.tflops_bf16, w.gb_s_mxfp4,
                w.gb_s_bf16, w.ms_bf16_loop, grouped, w.best_n_tile, w.ms_mxfp4_best_tile);
  }
  if (!a.json_path.empty()) {
    nlohmann::json j;
    j["device"] = r.device, j["which"] = r.which, j["M"] = r.M, j["K"] = r.K, j["command"] = command;
    for (const auto& w : r.rows)
      j["rows"].push_back({{"P", w.pairs}, {"n_tile", w.n_tile}, {"active_experts", w.active_experts},
                           {"ms_mxfp4", w.ms_mxfp4}, {"ms_bf16", w.ms_bf16}, {"ms_bf16_loop", w.ms_bf16_loop},
                           {"ms_bf16_grouped", w.ms_bf16_grouped}, {"best_n_tile", w.best_n_tile},
                           {"ms_mxfp4_best_tile", w.ms_mxfp4_best_tile}, {"tflops_mxfp4", w.tflops_mxfp4},
                           {"tflops_bf16", w.tflops_bf16}, {"gb_s_mxfp4", w.gb_s_mxfp4}, {"gb_s_bf16", w.gb_s_bf16}});
    std::ofstream f(a.json_path);
    if (!f) throw mxs::Error("--json: cannot write " + a.json_path);
    f << j.dump(2) << "\n";
  }
#else
  (void)a, (void)command;
  throw mxs::Error("bench kernel needs the CUDA backend: this build has none (rebuild with nvcc, -DMXS_CUDA=ON)");
#endif
}

mxs::cli::CommandRegistrar reg(62, [](CLI::App& app) {
  CLI::App* kernel = mxs::cli::bench_group(app).add_subcommand("kernel", "One CUDA kernel against its cuBLAS baseline");
  kernel->require_subcommand(1);
  auto args = std::make_shared<MoeGemmArgs>();
  CLI::App* cmd = kernel->add_subcommand(
      "moe-gemm", "MXFP4 grouped MoE GEMM (prefill) vs cuBLAS bf16 on the 20b shapes: ms, TFLOP/s, GB/s");
  cmd->add_option("--P", args->pairs, "Comma-separated token-expert pair counts (n_tokens * top_k)")->capture_default_str();
  cmd->add_option("--which", args->which, "Which GEMM: gate_up (+ SwiGLU) or down (+ routing weight)")
      ->check(CLI::IsMember({"gate_up", "down"}))
      ->capture_default_str();
  cmd->add_option("--warmup", args->warmup, "Untimed runs before timing")->check(CLI::Range(0, 100000))->capture_default_str();
  cmd->add_option("--iters", args->iters, "Timed runs (mean reported)")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_option("--json", args->json_path, "Also write the results as JSON to this file");
  cmd->callback([args, cmd]() {
    const std::string command = mxs::cli::command_line("mxserve bench kernel moe-gemm", *cmd);
    run_moe_gemm(*args, command);
  });
});

}  // namespace
