// `mxserve bench throughput`: offline, engine-level throughput at several concurrency levels. Random prompt
// tokens, fixed output length (stop tokens ignored); markdown table on stdout, optional JSON (--json FILE).
#include <algorithm>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/timer.h"
#include "engine/engine.h"
#include "engine/offline.h"
#include "engine/runner_factory.h"
#include "model/demo_model.h"
#include "model/weights.h"
#include "text/special_tokens.h"

namespace {

struct ThroughputArgs {
  std::string model;
  std::string backend = "cpu";
  std::string async_scheduling = "auto";
  int num_prompts = 64;
  int input_len = 128;
  int output_len = 128;
  std::string concurrency = "1,8,64";
  int max_num_batched_tokens = 2048;
  int num_kv_blocks = 0;
  double device_memory_utilization = 0.90;
  uint64_t seed = 0;
  std::string json_path;
};

struct LevelResult {
  int concurrency = 0;
  int requests = 0;
  double wall_s = 0;
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  double mean_step_ms = 0;
  double peak_kv_usage = 0;
  double mean_ttft_s = 0;
  double mean_tpot_ms = 0;
  uint64_t preemptions = 0;
};

void run_throughput(const ThroughputArgs& a) {
  MXS_CHECK(a.num_prompts >= 1, mxs::strfmt("--num-prompts %d: must be >= 1", a.num_prompts));
  MXS_CHECK(a.input_len >= 1, mxs::strfmt("--input-len %d: must be >= 1", a.input_len));
  MXS_CHECK(a.output_len >= 1, mxs::strfmt("--output-len %d: must be >= 1", a.output_len));
  const std::vector<int> levels = mxs::cli::parse_int_list(a.concurrency, "--concurrency", 1, 1 << 20);
  const int max_level = *std::max_element(levels.begin(), levels.end());
  mxs::check_backend_available(a.backend);

  mxs::Stopwatch load_watch;
  const std::string dir = a.model.empty() ? mxs::ensure_demo_model() : a.model;
  const mxs::ModelWeights weights = mxs::load_model(dir);
  const int seq_len = a.input_len + a.output_len;
  MXS_CHECK(seq_len <= weights.config.max_position_embeddings,
            mxs::strfmt("--input-len %d + --output-len %d = %d exceeds the model's max_position_embeddings %d",
                        a.input_len, a.output_len, seq_len, weights.config.max_position_embeddings));
  mxs::RunnerSpec spec;
  spec.backend = a.backend;
  spec.num_kv_blocks = a.num_kv_blocks;
  spec.kv_tokens = int64_t(std::min(max_level, a.num_prompts)) * seq_len;  // cpu: every stream fits at once
  spec.device_memory_utilization = a.device_memory_utilization;
  spec.max_batch_size = a.backend == "cuda" ? std::min(max_level, 256) : max_level;
  spec.max_num_batched_tokens = a.max_num_batched_tokens;
  spec.max_length = seq_len;
  const std::unique_ptr<mxs::ModelRunner> runner = mxs::make_runner(weights, spec);
  const double load_s = load_watch.seconds();
  const std::string device = mxs::runner_device_name(*runner);
  MXS_LOG_INFO("bench throughput: %s on %s, loaded in %.1f s, KV pool %d blocks of %d tokens", dir.c_str(),
               device.c_str(), load_s, runner->kv_layout().num_blocks, runner->kv_layout().block_size);

  // Ordinary token ids only (below the specials), so that prompts are plain text to the model.
  const int32_t vocab = std::min<int32_t>(weights.config.vocab_size, mxs::tok::kStartOfText);
  std::vector<LevelResult> results;
  for (int level : levels) {
    std::mt19937_64 rng(a.seed * 1000003ull + uint64_t(level));  // fresh prompts per level: no cache reuse
    std::vector<mxs::Request> requests(size_t(a.num_prompts));
    for (mxs::Request& r : requests) {
      r.prompt.resize(size_t(a.input_len));
      for (int32_t& t : r.prompt) t = int32_t(rng() % uint64_t(vocab));
      r.max_tokens = a.output_len;
      r.ignore_stop_tokens = true;
      r.sampling.temperature = 0.0f;
    }
    mxs::EngineConfig ec;
    ec.max_batch_size = std::min(level, spec.max_batch_size);  // the CUDA runner's graph buckets stop there
    ec.max_num_batched_tokens = a.max_num_batched_tokens;
    ec.max_length = seq_len;
    ec.async_scheduling = mxs::cli::async_scheduling_enabled(a.async_scheduling, runner->name());
    mxs::Engine engine(*runner, nullptr, ec);
    mxs::OfflineOptions opt;
    opt.max_in_flight = level;
    const mxs::OfflineRun run = mxs::run_offline(engine, std::move(requests), opt);
    for (const auto& r : run.results)
      MXS_CHECK(r.finish == mxs::FinishReason::kLength,
                mxs::strfmt("a benchmark request ended with '%s': %s", mxs::finish_reason_name(r.finish),
                            r.error.c_str()));
    LevelResult lr;
    lr.concurrency = level;
    lr.requests = a.num_prompts;
    lr.wall_s = run.wall_s;
    lr.output_tokens = run.num_output_tokens();
    lr.prompt_tokens = run.num_prompt_tokens();
    lr.mean_step_ms = run.metrics.mean_step_ms();
    lr.peak_kv_usage = run.metrics.kv_usage_peak;
    lr.preemptions = run.metrics.preemptions;
    for (const auto& r : run.results) {
      lr.mean_ttft_s += r.timings.ttft_s() / double(run.results.size());
      lr.mean_tpot_ms += 1e3 * r.timings.mean_tpot_s() / double(run.results.size());
    }
    MXS_LOG_INFO("concurrency %d: %.1f output tok/s", level, lr.output_tokens / lr.wall_s);
    results.push_back(lr);
  }

  std::printf("## bench throughput: %s, %s backend on %s\n\n", dir.c_str(), runner->name().c_str(), device.c_str());
  std::printf("%d prompts x (%d in + %d out) tokens per level, random prompts, stop tokens ignored, greedy, "
              "async scheduling %s\n\n",
              a.num_prompts, a.input_len, a.output_len,
              mxs::cli::async_scheduling_enabled(a.async_scheduling, runner->name()) ? "on" : "off");
  std::printf("| concurrency | output tok/s | total tok/s | mean step ms | peak KV usage | mean TTFT s | mean TPOT ms "
              "| preemptions |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const auto& r : results)
    std::printf("| %d | %.1f | %.1f | %.2f | %.1f%% | %.3f | %.2f | %llu |\n", r.concurrency,
                r.output_tokens / r.wall_s, (r.output_tokens + r.prompt_tokens) / r.wall_s, r.mean_step_ms,
                100.0 * r.peak_kv_usage, r.mean_ttft_s, r.mean_tpot_ms, (unsigned long long)r.preemptions);

  if (!a.json_path.empty()) {
    nlohmann::json j;
    j["bench"] = "throughput";
    j["model"] = dir;
    j["backend"] = runner->name();
    j["device"] = device;
    j["num_prompts"] = a.num_prompts;
    j["input_len"] = a.input_len;
    j["output_len"] = a.output_len;
    j["max_num_batched_tokens"] = a.max_num_batched_tokens;
    j["async_scheduling"] = mxs::cli::async_scheduling_enabled(a.async_scheduling, runner->name());
    j["kv_blocks"] = runner->kv_layout().num_blocks;
    j["block_size"] = runner->kv_layout().block_size;
    j["load_s"] = load_s;
    for (const auto& r : results)
      j["results"].push_back({{"concurrency", r.concurrency},
                              {"requests", r.requests},
                              {"wall_s", r.wall_s},
                              {"output_tokens", r.output_tokens},
                              {"prompt_tokens", r.prompt_tokens},
                              {"output_tok_per_s", r.output_tokens / r.wall_s},
                              {"total_tok_per_s", (r.output_tokens + r.prompt_tokens) / r.wall_s},
                              {"mean_step_ms", r.mean_step_ms},
                              {"peak_kv_usage", r.peak_kv_usage},
                              {"mean_ttft_s", r.mean_ttft_s},
                              {"mean_tpot_ms", r.mean_tpot_ms},
                              {"preemptions", r.preemptions}});
    mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
  }
}

mxs::cli::CommandRegistrar registrar(60, [](CLI::App& app) {
  auto a = std::make_shared<ThroughputArgs>();
  CLI::App* cmd = mxs::cli::bench_group(app).add_subcommand(
      "throughput", "Offline engine throughput at several concurrency levels (random prompts, fixed output length)");
  cmd->add_option("--model", a->model, "Model folder (default: the built-in tiny demo model)");
  cmd->add_option("--backend", a->backend, "cpu or cuda")->capture_default_str();
  cmd->add_option("--num-prompts", a->num_prompts, "Requests per concurrency level")->capture_default_str();
  cmd->add_option("--input-len", a->input_len, "Prompt tokens per request")->capture_default_str();
  cmd->add_option("--output-len", a->output_len, "Generated tokens per request")->capture_default_str();
  cmd->add_option("--concurrency", a->concurrency, "Comma-separated requests in flight, e.g. 1,8,64,256")
      ->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", a->max_num_batched_tokens, "New tokens per engine step")
      ->capture_default_str();
  cmd->add_option("--num-kv-blocks", a->num_kv_blocks, "KV pool size in blocks (0 = fit every stream / memory fraction)")
      ->capture_default_str();
  cmd->add_option("--device-memory-utilization", a->device_memory_utilization, "cuda: fraction of GPU memory")
      ->capture_default_str();
  cmd->add_option("--seed", a->seed, "Seed of the random prompts")->capture_default_str();
  mxs::cli::add_async_scheduling_option(cmd, &a->async_scheduling);
  cmd->add_option("--json", a->json_path, "Also write the results as JSON to this file");
  cmd->callback([a] { run_throughput(*a); });
});

}  // namespace
