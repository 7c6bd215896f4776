// `mxserve bench kernel stream-read`: what one launch that streams S bytes costs inside a PDL chain (the floor
// of a per-layer decode kernel; see cuda/bench_stream_read.h). Markdown on stdout, JSON with --json FILE.
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#if defined(MXS_WITH_CUDA) && __has_include("cuda/bench_stream_read.h")
#include "cuda/bench_stream_read.h"
#define MXS_HAVE_BENCH_STREAM_READ 1
#endif

namespace {

struct StreamReadArgs {
  std::string megabytes = "2,17.6,23.6,29.5,35.3", json_path;
  int chain = 40, reps = 20;
};

std::vector<double> parse_megabytes(const std::string& list) {
  std::vector<double> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(v > 0 && v <= 4096))
      throw mxs::Error("--mb: '" + item + "' is not a size in MB in (0, 4096]");
    out.push_back(v);
  }
  if (out.empty()) throw mxs::Error("--mb: give at least one size in MB");
  return out;
}

void run_stream_read(const StreamReadArgs& a, const std::string& command) {
#ifdef MXS_HAVE_BENCH_STREAM_READ
  mxs::cuda::BenchStreamReadOptions o;
  o.megabytes = parse_megabytes(a.megabytes);
  o.chain = a.chain, o.reps = a.reps;
  const mxs::cuda::BenchStreamReadResult r = mxs::cuda::run_bench_stream_read(o);
  const std::string commit = mxs::cli::bench_commit();
  std::printf("## mxserve bench kernel stream-read\n\ncard: %s (%d SMs); commit %s; copy bandwidth %.0f GB/s "
              "(device-to-device, read + write counted); a graph of %d PDL-chained launches, each reading its own "
              "buffer (>= 1 GB rotation), %d replays; us per launch\ncommand: `%s`\n\n"
              "empty kernel: %.2f us per launch\n\n",
              r.device.c_str(), r.num_sms, commit.c_str(), r.copy_gb_s, o.chain, o.reps, command.c_str(), r.us_empty);
  std::printf("| MB per launch | ldg us | ldg GB/s | ldg %% copy | bulk us | bulk GB/s | bulk %% copy | us at copy BW |\n"
              "|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  nlohmann::json j;
  j["device"] = r.device, j["commit"] = commit, j["command"] = command, j["copy_gb_s"] = r.copy_gb_s;
  j["us_empty"] = r.us_empty, j["chain"] = o.chain, j["reps"] = o.reps;
  for (const auto& w : r.rows) {
    const double gb_ldg = w.megabytes * 1e-3 / (w.us_ldg * 1e-6);
    const double gb_bulk = w.us_bulk > 0 ? w.megabytes * 1e-3 / (w.us_bulk * 1e-6) : 0;
    const double us_bound = w.megabytes * 1e-3 / r.copy_gb_s * 1e6;
    if (w.us_bulk > 0)
      std::printf("| %.1f | %.2f | %.0f | %.0f%% | %.2f | %.0f | %.0f%% | %.2f |\n", w.megabytes, w.us_ldg, gb_ldg,
                  100 * gb_ldg / r.copy_gb_s, w.us_bulk, gb_bulk, 100 * gb_bulk / r.copy_gb_s, us_bound);
    else
      std::printf("| %.1f | %.2f | %.0f | %.0f%% | - | - | - | %.2f |\n", w.megabytes, w.us_ldg, gb_ldg,
                  100 * gb_ldg / r.copy_gb_s, us_bound);
    j["rows"].push_back({{"megabytes", w.megabytes}, {"us_ldg", w.us_ldg}, {"us_bulk", w.us_bulk}});
  }
  if (!a.json_path.empty()) mxs::write_file_atomic(a.json_path, j.dump(2) + "\n");
#else
  (void)a, (void)command;
  mxs::cli::throw_needs_cuda("bench kernel");
#endif
}

// After cmd_bench_kernel.cpp's registrar (62), which creates `bench kernel`.
mxs::cli::CommandRegistrar reg(63, [](CLI::App& app) {
  CLI::App* kernel = mxs::cli::bench_group(app).get_subcommand("kernel");
  auto args = std::make_shared<StreamReadArgs>();
  CLI::App* cmd = kernel->add_subcommand(
      "stream-read", "The floor of a decode kernel: us per PDL-chained launch that only streams S MB of weights");
  cmd->add_option("--mb", args->megabytes, "Comma-separated MB (10^6 bytes) read per launch")->capture_default_str();
  cmd->add_option("--chain", args->chain, "Launches per graph")->check(CLI::Range(1, 10000))->capture_default_str();
  cmd->add_option("--reps", args->reps, "Timed graph replays")->check(CLI::Range(1, 100000))->capture_default_str();
  mxs::cli::add_json_and_run(cmd, &args->json_path, "mxserve bench kernel stream-read",
                             [args](const std::string& command) { run_stream_read(*args, command); });
});

}  // namespace
