// Subcommand registration: each src/cli/cmd_*.cpp defines one `static CommandRegistrar` that adds its
// subcommand (options + callback) to the app. main() builds the app from every registrar.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace mxs::cli {

using CommandSetup = std::function<void(CLI::App& app)>;

struct CommandRegistrar {
  // `order` sorts the subcommands in --help (serve first).
  CommandRegistrar(int order, CommandSetup setup);
};

struct RegisteredCommand {
  int order;
  CommandSetup setup;
};
std::vector<RegisteredCommand>& registered_commands();

// The `bench` command group: each benchmark file adds its own sub-subcommand (`mxserve bench decode`, ...)
// to the one `bench` subcommand this returns (created on first use).
CLI::App& bench_group(CLI::App& app);

// "1,8,64" -> {1, 8, 64} for option `option` (e.g. "--concurrency"); every item an integer in [lo, hi], at least
// one item; otherwise an mxs::Error naming the option, the bad item and the range.
std::vector<int> parse_int_list(const std::string& text, const char* option, int lo, int hi);

// What a CUDA-only command (`what`, e.g. "bench kernel") throws in a build without the CUDA backend.
[[noreturn]] void throw_needs_cuda(const char* what);

// The commit a benchmark ran: $MXSERVE_COMMIT (set by scripts/device-check.sh, whose copy of the tree has no
// .git), else `git rev-parse --short HEAD` in the current folder, else "unknown".
std::string bench_commit();

// "prefix --opt value ..." for the options given on the command line (benchmarks print how they were run);
// options named in `secret` (e.g. --api-key) are left out.
std::string command_line(const std::string& prefix, const CLI::App& cmd, const std::vector<std::string>& secret = {});

// The tail every benchmark subcommand shares: `--json PATH` into *json_path, and the callback that runs
// run(command line) with the command line as `prefix --opt value ...` (command_line) so the report can print it.
void add_json_and_run(CLI::App* cmd, std::string* json_path, const std::string& prefix,
                      std::function<void(const std::string& command)> run);

// --async-scheduling on|off|auto (EngineConfig::async_scheduling; docs/ARCHITECTURE.md "Async scheduling"): the
// option on `cmd`, and whether it is on for a runner named `runner_name` (auto: on for "cuda", off for "cpu").
void add_async_scheduling_option(CLI::App* cmd, std::string* value);
// --bf12-dense LIST (cuda): the dense weights read from lossless 12-bit copies (common/bf12.h).
void add_bf12_dense_option(CLI::App* cmd, std::string* value);
// --no-lm-head-screen (cuda): no int8 screening copy of the LM head for greedy steps (kernels/lm_head_screen.h).
void add_lm_head_screen_option(CLI::App* cmd, bool* screen);
// --exact-attention (cuda): steps of <= 256 keys on the exact attention path (CudaRunnerOptions::exact_attention).
void add_exact_attention_option(CLI::App* cmd, bool* exact);
bool async_scheduling_enabled(const std::string& value, const std::string& runner_name);

}  // namespace mxs::cli
