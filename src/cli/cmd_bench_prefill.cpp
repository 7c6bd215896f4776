// `mxserve bench prefill`: TTFT and prefill tok/s per prompt length on the CUDA backend (see
// cuda/bench_prefill.h); markdown on stdout, JSON with --json FILE.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_prefill.h")
#include "cuda/bench_prefill.h"
#define MXS_HAVE_BENCH_PREFILL 1
#endif

namespace {

struct PrefillArgs {
  std::string model, preset = "20b", prompts = "512,2048,8192,32768", json_path;
  int chunk = 8192, reps = 3, breakdown = 2048;
};

void run(const PrefillArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_PREFILL
  mxs::cuda::BenchPrefillOptions o;
  o.model_dir = a.model, o.preset = a.preset, o.chunk = a.chunk, o.reps = a.reps;
  o.prompts = mxs::cli::parse_int_list(a.prompts, "--prompt", 1, 131072);
  int longest = 0;
  for (int n : o.prompts) longest = std::max(longest, n);
  o.breakdown = std::min(a.breakdown, longest);
  const mxs::cuda::BenchPrefillResult r = mxs::cuda::run_bench_prefill(o);
  const std::string commit = mxs::cli::bench_commit();
  std::printf("## mxserve bench prefill\n\ncard: %s; commit %s; model: %s; chunk %d tokens per step; load %.2f s\n"
              "command: `%s`\n\n| prompt tokens | steps | TTFT ms | prefill tok/s | TFLOP/s |\n|---:|---:|---:|---:|---:|\n",
              r.device.c_str(), commit.c_str(), r.model.c_str(), a.chunk, r.load_s, command.c_str());
  nlohmann::json j;
  j["device"] = r.device, j["commit"] = commit, j["model"] = r.model, j["command"] = command, j["chunk"] = a.chunk;
  for (const auto& row : r.rows) {
    std::printf("| %d | %d | %.1f | %.0f | %.0f |\n", row.prompt, row.steps, row.ttft_ms, row.tok_s, row.tflop_s);
    j["rows"].push_back({{"prompt", row.prompt}, {"steps", row.steps}, {"ttft_ms", row.ttft_ms},
                         {"tok_s", row.tok_s}, {"tflop_s", row.tflop_s}});
  }
  if (r.breakdown.prompt > 0) {
    const auto& b = r.breakdown;
    std::printf("\nWhere a %d-token prefill goes (CUDA events around every launch, summed over its steps; the timed run "
                "takes %.1f ms wall):\n\n| stage | ms | share of kernel sum |\n|---|---:|---:|\n",
                b.prompt, b.wall_ms);
    for (const auto& [name, ms] : b.kernels_ms)
      std::printf("| %s | %.3f | %.1f%% |\n", name.c_str(), ms, 100 * ms / std::max(b.kernel_sum_ms, 1e-9));
    std::printf("| **kernel sum** | %.3f | |\n| device span of the steps (kernels + gaps) | %.3f | |\n"
                "| host: step() before its synchronize (staging, launches) | %.3f | |\n"
                "| host: step() wall | %.3f | |\n| host: outside step() (bench batch building) | %.3f | |\n",
                b.kernel_sum_ms, b.gpu_span_ms, b.host_enqueue_ms, b.step_wall_ms, b.wall_ms - b.step_wall_ms);
    for (const auto& [name, ms] : b.kernels_ms) j["breakdown"]["kernels_ms"][name] = ms;
    j["breakdown"]["prompt"] = b.prompt, j["breakdown"]["kernel_sum_ms"] = b.kernel_sum_ms;
    j["breakdown"]["gpu_span_ms"] = b.gpu_span_ms, j["breakdown"]["host_enqueue_ms"] = b.host_enqueue_ms;
    j["breakdown"]["step_wall_ms"] = b.step_wall_ms, j["breakdown"]["wall_ms"] = b.wall_ms;
  }
  if (!a.json_path.empty()) {
    mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
  }
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench prefill");
#endif
}

mxs::cli::CommandRegistrar reg(61, [](CLI::App& app) {
  auto args = std::make_shared<PrefillArgs>();
  CLI::App* cmd = mxs::cli::bench_group(app).add_subcommand(
      "prefill", "CUDA prefill: time to first token and tok/s per prompt length (one sequence, chunked)");
  cmd->add_option("--model", args->model, "Model folder (HF MXFP4 checkpoint); default: random weights on the GPU");
  cmd->add_option("--preset", args->preset, "Geometry of the random weights without --model: 20b, 120b, tiny")
      ->check(CLI::IsMember({"20b", "120b", "tiny"}));
  cmd->add_option("--prompt", args->prompts, "Comma-separated prompt lengths in tokens")->capture_default_str();
  cmd->add_option("--chunk", args->chunk, "Prompt tokens per engine step")->check(CLI::Range(16, 131072))->capture_default_str();
  cmd->add_option("--reps", args->reps, "Timed repetitions per length (median)")->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--breakdown", args->breakdown,
                  "Prompt length of the per-stage table (CUDA events per kernel family; 0: none; capped at the longest --prompt)")
      ->check(CLI::Range(0, 131072))->capture_default_str();
  mxs::cli::add_json_and_run(cmd, &args->json_path, "mxserve bench prefill",
                             [args](const std::string& command) { run(*args, command); });
});

}  // namespace
