// `mxserve bench kernel moe-gemm`: one kernel against its cuBLAS baseline on the model's shapes;
// `mxserve bench kernel attention-decode`: the decode attention kernels, old vs tensor cores (markdown on
// stdout, JSON with --json FILE). Need the CUDA backend; random inputs generated on the GPU.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_moe_gemm.h")
#include "cuda/bench_moe_gemm.h"
#define MXS_HAVE_BENCH_MOE_GEMM 1
#endif
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_attention_decode.h")
#include "cuda/bench_attention_decode.h"
#define MXS_HAVE_BENCH_ATTENTION_DECODE 1
#endif

namespace {

struct MoeGemmArgs {
  std::string pairs = "32,128,512,1024,4096,16384", which = "gate_up", routing = "random", json_path;
  int warmup = 20, iters = 100, rounds = 3;
};

void run_moe_gemm(const MoeGemmArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_MOE_GEMM
  mxs::cuda::BenchMoeGemmOptions o;
  o.pairs = mxs::cli::parse_int_list(a.pairs, "--P", 1, 1 << 20);
  o.which = a.which;
  o.warmup = a.warmup;
  o.iters = a.iters;
  o.rounds = a.rounds;
  o.balanced = a.routing == "balanced";
  const mxs::cuda::BenchMoeGemmResult r = mxs::cuda::run_bench_moe_gemm(o);
  std::printf("## mxserve bench kernel moe-gemm (%s)\n\ncard: %s; %s GEMM M = %d outputs x K = %d, %d experts, top-%d, "
              "%s routing; mxfp4 with the automatic token tile (best forced tile in the last column); "
              "bf16 = best of cuBLAS per-expert cublasGemmEx loop and "
              "cublasGemmGroupedBatchedEx (activations pre-grouped); each of the seven (5 tiles, 2 cuBLAS forms): median "
              "over %d rounds in rotated order of the mean of %d iterations after %d warm-up\n"
              "command: `%s`\n\n",
              r.which.c_str(), r.device.c_str(), r.which.c_str(), r.M, r.K, o.n_experts, o.top_k,
              o.balanced ? "balanced (P / E pairs per expert)" : "uniform random", o.rounds, o.iters,
              o.warmup, command.c_str());
  std::printf("| P | tile | ms mxfp4 | ms bf16 | speedup | TFLOP/s mxfp4 | TFLOP/s bf16 | GB/s mxfp4 weights | "
              "GB/s bf16 weights | ms bf16 loop | ms bf16 grouped | best tile: ms | ms by tile 32 / 48 / 64 / 128 / 192 |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& w : r.rows) {
    char grouped[32];
    if (w.ms_bf16_grouped > 0) std::snprintf(grouped, sizeof(grouped), "%.3f", w.ms_bf16_grouped);
    else std::snprintf(grouped, sizeof(grouped), "n/a");
    std::printf("| %d | %d | %.3f | %.3f | %.2fx | %.0f | %.0f | %.0f | %.0f | %.3f | %s | %d: %.3f | %.3f / %.3f / %.3f / "
                "%.3f / %.3f |\n",
                w.pairs, w.n_tile, w.ms_mxfp4, w.ms_bf16, w.ms_bf16 / w.ms_mxfp4, w.tflops_mxfp4, w.tflops_bf16,
                w.gb_s_mxfp4, w.gb_s_bf16, w.ms_bf16_loop, grouped, w.best_n_tile, w.ms_mxfp4_best_tile,
                w.ms_by_tile[0], w.ms_by_tile[1], w.ms_by_tile[2], w.ms_by_tile[3], w.ms_by_tile[4]);
  }
  if (!a.json_path.empty()) {
    nlohmann::json j;
    j["device"] = r.device, j["which"] = r.which, j["M"] = r.M, j["K"] = r.K, j["command"] = command;
    j["routing"] = a.routing;
    for (const auto& w : r.rows)
      j["rows"].push_back({{"P", w.pairs}, {"n_tile", w.n_tile}, {"active_experts", w.active_experts},
                           {"ms_mxfp4", w.ms_mxfp4}, {"ms_bf16", w.ms_bf16}, {"ms_bf16_loop", w.ms_bf16_loop},
                           {"ms_bf16_grouped", w.ms_bf16_grouped}, {"best_n_tile", w.best_n_tile},
                           {"ms_mxfp4_best_tile", w.ms_mxfp4_best_tile},
                           {"ms_by_tile_32_48_64_128_192", {w.ms_by_tile[0], w.ms_by_tile[1], w.ms_by_tile[2], w.ms_by_tile[3], w.ms_by_tile[4]}},
                           {"tflops_mxfp4", w.tflops_mxfp4},
                           {"tflops_bf16", w.tflops_bf16}, {"gb_s_mxfp4", w.gb_s_mxfp4}, {"gb_s_bf16", w.gb_s_bf16}});
    mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
  }
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench kernel");
#endif
}

struct AttentionDecodeArgs {
  std::string batches = "1,8,64,256", contexts = "1024,8192", json_path;
  int warmup = 5, iters = 50;
};

// Old (attention_decode, CUDA cores) vs new (attention_decode_mma, tensor cores) per layer, then the 24-layer
// gpt-oss-20b total (12 full + 12 sliding layers) per (batch, context).
void run_attention_decode(const AttentionDecodeArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_ATTENTION_DECODE
  mxs::cuda::BenchAttentionDecodeOptions o;
  o.batches = mxs::cli::parse_int_list(a.batches, "--batch", 1, 4096);
  o.contexts = mxs::cli::parse_int_list(a.contexts, "--context", 1, 131072);
  o.warmup = a.warmup, o.iters = a.iters;
  const mxs::cuda::BenchAttentionDecodeResult r = mxs::cuda::run_bench_attention_decode(o);
  const std::string commit = mxs::cli::bench_commit();
  std::printf("## mxserve bench kernel attention-decode\n\ncard: %s (%d SMs); commit %s; copy bandwidth %.0f GB/s "
              "(device-to-device, read + write counted); %d q heads, %d kv heads, head_dim 64, block size %d, "
              "window %d; one decode token per sequence at position context - 1, shuffled block tables, K/V rotated "
              "over >= 256 MB; mean of %d launches after %d warm-up; GB/s = K + V bytes read / time\n"
              "command: `%s`\n\n",
              r.device.c_str(), r.num_sms, commit.c_str(), r.copy_gb_s, o.n_heads, o.n_kv_heads, o.block_size,
              o.window, o.iters, o.warmup, command.c_str());
  std::printf("| batch | context | layer | K+V MB | old split | old us | old GB/s | old %% copy | new split | new us | "
              "new GB/s | new %% copy | speedup | us 2/3/4 stages | best keys/split: us | rel L2 new vs old |\n"
              "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  nlohmann::json j;
  j["device"] = r.device, j["commit"] = commit, j["command"] = command, j["copy_gb_s"] = r.copy_gb_s;
  for (const auto& w : r.rows) {
    std::printf("| %d | %d | %s | %.1f | %d x %d | %.1f | %.0f | %.0f%% | %d x %d | %.1f | %.0f | %.0f%% | %.2fx | "
                "%.1f / %.1f / %.1f | %d: %.1f | %.1e |\n",
                w.batch, w.context, w.sliding ? "sliding" : "full", w.kv_bytes / 1e6, w.old_splits, w.old_kps, w.us_old,
                w.gb_s_old, 100.0 * w.gb_s_old / r.copy_gb_s, w.new_splits, w.new_kps, w.us_new, w.gb_s_new,
                100.0 * w.gb_s_new / r.copy_gb_s, w.us_old / w.us_new, w.us_stages[0], w.us_stages[1], w.us_stages[2], w.best_kps, w.us_best, w.rel_l2);
    j["rows"].push_back({{"batch", w.batch}, {"context", w.context}, {"sliding", w.sliding}, {"keys", w.keys},
                         {"kv_bytes", w.kv_bytes}, {"old_kps", w.old_kps}, {"old_splits", w.old_splits},
                         {"us_old", w.us_old}, {"gb_s_old", w.gb_s_old}, {"new_kps", w.new_kps},
                         {"new_splits", w.new_splits}, {"us_new", w.us_new}, {"gb_s_new", w.gb_s_new},
                         {"us_stages_2_3_4", {w.us_stages[0], w.us_stages[1], w.us_stages[2]}}, {"best_kps", w.best_kps}, {"us_best", w.us_best}, {"rel_l2", w.rel_l2}});
  }
  std::printf("\n24 layers of gpt-oss-20b (12 full + 12 sliding), us per decode step:\n\n"
              "| batch | context | old us | new us | speedup | K/V bound us (copy BW) |\n|---:|---:|---:|---:|---:|---:|\n");
  for (size_t i = 0; i + 1 < r.rows.size(); i += 2) {
    const auto &f = r.rows[i], &s = r.rows[i + 1];
    const double old_us = 12 * (f.us_old + s.us_old), new_us = 12 * (f.us_new + s.us_new);
    const double bound_us = 12 * (f.kv_bytes + s.kv_bytes) / (r.copy_gb_s * 1e9) * 1e6;
    std::printf("| %d | %d | %.0f | %.0f | %.2fx | %.0f |\n", f.batch, f.context, old_us, new_us, old_us / new_us,
                bound_us);
  }
  if (!a.json_path.empty()) {
    mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
  }
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench kernel");
#endif
}

mxs::cli::CommandRegistrar reg(62, [](CLI::App& app) {
  CLI::App* kernel = mxs::cli::bench_group(app).add_subcommand("kernel", "One CUDA kernel against its baseline (cuBLAS or the kernel it replaces)");
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
  cmd->add_option("--routing", args->routing,
                  "random: each token's experts drawn uniformly; balanced: exactly P / 32 pairs per expert")
      ->check(CLI::IsMember({"random", "balanced"}))
      ->capture_default_str();
  cmd->add_option("--rounds", args->rounds, "Rounds per configuration in rotated order (median reported)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  mxs::cli::add_json_and_run(cmd, &args->json_path, "mxserve bench kernel moe-gemm",
                             [args](const std::string& command) { run_moe_gemm(*args, command); });
  auto ad = std::make_shared<AttentionDecodeArgs>();
  CLI::App* adc = kernel->add_subcommand(
      "attention-decode", "Decode attention per layer: attention_decode (CUDA cores) vs attention_decode_mma (tensor "
                          "cores) on the 20b shapes: us, GB/s of K/V read, % of copy bandwidth");
  adc->add_option("--batch", ad->batches, "Comma-separated batch sizes (decode tokens)")->capture_default_str();
  adc->add_option("--context", ad->contexts, "Comma-separated contexts (keys per full layer)")->capture_default_str();
  adc->add_option("--warmup", ad->warmup, "Untimed launches before timing")->check(CLI::Range(0, 100000))->capture_default_str();
  adc->add_option("--iters", ad->iters, "Timed launches (mean reported)")->check(CLI::Range(1, 100000))->capture_default_str();
  mxs::cli::add_json_and_run(adc, &ad->json_path, "mxserve bench kernel attention-decode",
                             [ad](const std::string& command) { run_attention_decode(*ad, command); });
});

}  // namespace
