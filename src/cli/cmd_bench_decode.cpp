// `mxserve bench decode`: CUDA decode throughput per batch size at one context length, achieved GB/s vs the
// card's measured copy bandwidth, and the per-kernel time of a step at batch 1 (and 64, or --breakdown's batch
// sizes); markdown on stdout, JSON with --json FILE. Without --model it runs random 20b weights generated on the
// GPU (no checkpoint needed).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "engine/runner_factory.h"
#include "common/error.h"
#include "common/paths.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_decode.h")
#include "cuda/bench_decode.h"
#define MXS_HAVE_BENCH_DECODE 1
#endif

namespace {

struct DecodeArgs {
  std::string model, preset = "20b", batches = "1,8,32,64,128,256", json_path;
  int context = 1024, steps = 32;
  bool no_graphs = false;
  int moe_gemm_min_pairs = 0;
  std::string breakdown;  // "": batch 1 (+ 64 when --batch has it); "none": no breakdown
  std::string bf12_dense = mxs::kBf12DenseDefault;
  bool lm_head_screen = true;
  bool exact_attention = false;
  float temperature = 0.0f;
  float top_p = 1.0f;
  float presence_penalty = 0.0f;
  bool logprobs = false;
};

void run(const DecodeArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_DECODE
  mxs::cuda::BenchDecodeOptions o;
  o.model_dir = a.model;
  o.preset = a.preset;
  o.batches = mxs::cli::parse_int_list(a.batches, "--batch", 1, 256);
  o.context = a.context;
  o.steps = a.steps;
  o.use_graphs = !a.no_graphs;
  o.moe_gemm_min_pairs = a.moe_gemm_min_pairs;
  o.bf12_dense = a.bf12_dense == "none" ? "" : a.bf12_dense;
  o.lm_head_screen = a.lm_head_screen;
  o.exact_attention = a.exact_attention;
  o.temperature = a.temperature;
  o.top_p = a.top_p;
  o.presence_penalty = a.presence_penalty;
  o.logprobs = a.logprobs;
  if (a.breakdown == "none")
    o.breakdown_batches = std::vector<int>{};
  else if (!a.breakdown.empty())
    o.breakdown_batches = mxs::cli::parse_int_list(a.breakdown, "--breakdown", 1, 256);
  const mxs::cuda::BenchDecodeResult r = mxs::cuda::run_bench_decode(o);
  const std::string commit = mxs::cli::bench_commit();
  char sampling[128];
  if (a.temperature != 0.0f)
    std::snprintf(sampling, sizeof sampling, "temperature %g, top-p %g", double(a.temperature), double(a.top_p));
  else
    std::snprintf(sampling, sizeof sampling, "greedy");
  if (a.presence_penalty != 0.0f)
    std::snprintf(sampling + std::strlen(sampling), sizeof sampling - std::strlen(sampling), ", presence penalty %g",
                  double(a.presence_penalty));
  if (a.logprobs) std::snprintf(sampling + std::strlen(sampling), sizeof sampling - std::strlen(sampling), ", logprobs");
  std::printf("## mxserve bench decode\n\ncard: %s; commit %s; model: %s; context %d; copy bandwidth %.0f GB/s "
              "(device-to-device, read+write); load %.2f s; bf12 dense weights: %s; sampling: %s; greedy LM-head screen: "
              "%s; attention <= 256 keys: %s\ncommand: `%s`\n\n",
              r.device.c_str(), commit.c_str(), r.model.c_str(), a.context, r.copy_gb_s, r.load_s,
              r.bf12_dense.empty() ? "none" : r.bf12_dense.c_str(), sampling,
              r.lm_head_screen ? (o.plain_greedy() ? "on (batch 1-8)" : "unused (the steps need every logit)") : "off",
              r.exact_attention ? "exact (--exact-attention)" : "tensor cores", command.c_str());
  std::printf("| batch | step ms | tok/s | GB read/step | GB/s | %% of copy BW | pipelined step ms | pipelined tok/s | graph ms |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& row : r.rows)
    std::printf("| %d | %.3f | %.0f | %.3f | %.0f | %.0f%% | %.3f | %.0f | %.3f |\n", row.batch, row.step_ms, row.tok_s,
                row.bytes_per_step / 1e9, row.gb_s, 100 * row.roofline_frac, row.pipelined_step_ms, row.pipelined_tok_s,
                row.graph_ms);
  for (const auto& b : r.breakdowns) {
    std::printf("\nPer-kernel device time of one batch-%d step (CUDA events, graphs off; sum %.1f us):\n\n"
                "| kernel | us/step | share |\n|---|---:|---:|\n", b.batch, b.sum_us);
    for (const auto& [name, us] : b.kernels_us)
      std::printf("| %s | %.1f | %.1f%% |\n", name.c_str(), us, 100 * us / std::max(b.sum_us, 1e-9));
  }
  nlohmann::json j;
  j["device"] = r.device, j["commit"] = commit, j["model"] = r.model, j["command"] = command;
  j["bf12_dense"] = r.bf12_dense;
  j["lm_head_screen"] = r.lm_head_screen;
  j["exact_attention"] = r.exact_attention;
  j["temperature"] = a.temperature;
  j["top_p"] = a.top_p;
  j["presence_penalty"] = a.presence_penalty;
  j["logprobs"] = a.logprobs;
  j["context"] = a.context, j["copy_gb_s"] = r.copy_gb_s, j["load_s"] = r.load_s;
  for (const auto& row : r.rows)
    j["rows"].push_back({{"batch", row.batch}, {"step_ms", row.step_ms}, {"tok_s", row.tok_s},
                         {"bytes_per_step", row.bytes_per_step}, {"gb_s", row.gb_s}, {"copy_fraction", row.roofline_frac},
                         {"pipelined_step_ms", row.pipelined_step_ms}, {"pipelined_tok_s", row.pipelined_tok_s},
                         {"graph_ms", row.graph_ms}});
  for (const auto& b : r.breakdowns)
    for (const auto& [name, us] : b.kernels_us) j["batch" + std::to_string(b.batch) + "_kernels_us"][name] = us;
  if (!a.json_path.empty()) {
    mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
  } else {
    std::printf("\n```json\n%s\n```\n", j.dump(2).c_str());
  }
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench decode");
#endif
}

mxs::cli::CommandRegistrar reg(60, [](CLI::App& app) {
  auto args = std::make_shared<DecodeArgs>();
  CLI::App* cmd = mxs::cli::bench_group(app).add_subcommand(
      "decode", "CUDA decode throughput per batch size (tok/s, GB/s vs copy bandwidth, per-kernel times)");
  cmd->add_option("--model", args->model, "Model folder (HF MXFP4 checkpoint); default: random weights on the GPU");
  cmd->add_option("--preset", args->preset, "Geometry of the random weights without --model: 20b, tiny")
      ->check(CLI::IsMember({"20b", "120b", "tiny"}));
  cmd->add_option("--batch", args->batches, "Comma-separated batch sizes (1..256)")->capture_default_str();
  cmd->add_option("--context", args->context, "Tokens already in each sequence's KV cache")->check(CLI::Range(1, 131072))->capture_default_str();
  cmd->add_option("--steps", args->steps, "Timed decode steps per batch size")->check(CLI::Range(1, 100000))->capture_default_str();
  cmd->add_flag("--no-graphs", args->no_graphs, "Launch kernels one by one instead of replaying CUDA graphs");
  cmd->add_option("--breakdown", args->breakdown,
                  "Comma-separated batch sizes (1..256) with a per-kernel time table, or none (default: 1, and 64 when "
                  "--batch has it)");
  mxs::cli::add_bf12_dense_option(cmd, &args->bf12_dense);
  mxs::cli::add_lm_head_screen_option(cmd, &args->lm_head_screen);
  mxs::cli::add_exact_attention_option(cmd, &args->exact_attention);
  cmd->add_option("--temperature", args->temperature,
                  "Sample every sequence at this temperature (the OpenAI default is 1); 0: greedy")
      ->check(CLI::Range(0.0, 100.0))
      ->capture_default_str();
  cmd->add_option("--top-p", args->top_p, "With --temperature: every sequence's top-p (1: no cut)")
      ->check(CLI::Validator(
          [](std::string& v) {  // (0, 1], as SamplingParams::validate; never throws on a non-number
            char* end = nullptr;
            const double x = std::strtod(v.c_str(), &end);
            return end != v.c_str() && *end == '\0' && x > 0.0 && x <= 1.0 ? std::string()
                                                                         : std::string("must be in (0, 1]");
          },
          "in (0, 1]"))
      ->capture_default_str();
  cmd->add_option("--presence-penalty", args->presence_penalty,
                  "Every sequence's presence penalty (OpenAI semantics) over a history of 256 output ids")
      ->check(CLI::Range(-2.0, 2.0))
      ->capture_default_str();
  cmd->add_flag("--logprobs", args->logprobs, "Every sequence returns its token's logprob (greedy or sampled)");
  cmd->add_option("--moe-gemm-min-pairs", args->moe_gemm_min_pairs,
                  "MoE steps with at least this many (token, expert) pairs run the grouped GEMM (default: the runner's)")
      ->check(CLI::Range(1, 1 << 30));
  mxs::cli::add_json_and_run(cmd, &args->json_path, "mxserve bench decode",
                             [args](const std::string& command) { run(*args, command); });
});

}  // namespace
