// mxserve entry point: CLI11 app with one subcommand per src/cli/cmd_*.cpp. User errors (mxs::Error)
// print "error: ..." and exit 1; nothing a user types should abort the process.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "cli/command.h"
#include "common/error.h"

namespace mxs::cli {

std::vector<RegisteredCommand>& registered_commands() {
  static std::vector<RegisteredCommand> commands;
  return commands;
}

CommandRegistrar::CommandRegistrar(int order, CommandSetup setup) {
  registered_commands().push_back({order, std::move(setup)});
}

CLI::App& bench_group(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App* s) { return s->get_name() == "bench"; })) return *sub;
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks: engine (decode, prefill, throughput), kernels, serving");
  bench->require_subcommand(1);
  return *bench;
}

void add_bf12_dense_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--bf12-dense", *value,
                  "cuda: dense weights read from lossless 12-bit copies (25% fewer bytes per decode step; more GPU "
                  "memory): a comma-separated subset of lm_head, o_proj, qkv, none, or auto (the default: lm_head "
                  "and o_proj, and qkv on cards below 4.5 TB/s)")
      ->check([](const std::string& v) -> std::string {
        if (v == "none" || v == "auto" || v.empty()) return "";
        size_t at = 0;
        while (at <= v.size()) {
          const size_t end = std::min(v.find(',', at), v.size());
          const std::string m = v.substr(at, end - at);
          if (m != "lm_head" && m != "o_proj" && m != "qkv")
            return "unknown matrix '" + m + "' (choose from lm_head, o_proj, qkv, none, or auto)";
          at = end + 1;
        }
        return "";
      })
      ->capture_default_str();
}

void add_lm_head_screen_option(CLI::App* cmd, bool* screen) {
  cmd->add_flag_callback(
      "--no-lm-head-screen", [screen] { *screen = false; },
      "cuda: no int8 screening copy of the LM head (saves 0.58 GB of GPU memory; greedy steps of 1-8 sequences "
      "then read the full LM head: 0.87-1.16 instead of 0.58 GB per step)");
}

void add_exact_attention_option(CLI::App* cmd, bool* exact) {
  cmd->add_flag("--exact-attention", *exact,
                "cuda: steps whose contexts are all <= 256 keys run the attention in the CPU reference's order of "
                "operations (its roundings, bit for bit up to exp) instead of the tensor-core kernels (4-7% slower "
                "per step)");
}

void add_async_scheduling_option(CLI::App* cmd, std::string* value) {
  cmd->add_option("--async-scheduling", *value,
                  "Schedule and submit the next engine step while the GPU runs the current one: on, off, or auto "
                  "(on for the cuda backend, off for cpu)")
      ->check(CLI::IsMember({"on", "off", "auto"}))
      ->capture_default_str();
}

bool async_scheduling_enabled(const std::string& value, const std::string& runner_name) {
  return value == "on" || (value == "auto" && runner_name == "cuda");
}

std::string bench_commit() {
  if (const char* env = std::getenv("MXSERVE_COMMIT"); env && *env) return env;
  FILE* f = popen("git rev-parse --short HEAD 2>/dev/null", "r");
  if (!f) return "unknown";
  char buf[64] = {0};
  const bool ok = fgets(buf, sizeof(buf), f) != nullptr;
  pclose(f);
  std::string s = ok ? buf : "unknown";
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.empty() ? "unknown" : s;
}

std::string command_line(const std::string& prefix, const CLI::App& cmd, const std::vector<std::string>& secret) {
  std::string command = prefix;
  for (const auto* o : cmd.get_options())
    if (o->count() > 0 && o->get_name() != "--help" &&
        std::find(secret.begin(), secret.end(), o->get_name()) == secret.end()) {
      command += " " + o->get_name();
      for (const auto& r : o->results()) command += " " + r;
    }
  return command;
}

void add_json_and_run(CLI::App* cmd, std::string* json_path, const std::string& prefix,
                      std::function<void(const std::string& command)> run) {
  cmd->add_option("--json", *json_path, "Also write the results as JSON to this file");
  cmd->callback([cmd, prefix, run = std::move(run)]() { run(command_line(prefix, *cmd)); });
}

void throw_needs_cuda(const char* what) {
  throw Error(std::string(what) + " needs the CUDA backend: this build has none (rebuild with nvcc, -DMXS_CUDA=ON)");
}

std::vector<int> parse_int_list(const std::string& text, const char* option, int lo, int hi) {
  std::vector<int> out;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, end - begin);
    size_t used = 0;
    int v = lo - 1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
    }
    if (used != item.size() || item.empty() || v < lo || v > hi)
      throw mxs::Error(mxs::strfmt("%s %s: '%s' is not an integer in [%d, %d] (example: %s 1,8,64)", option,
                                   text.c_str(), item.c_str(), lo, hi, option));
    out.push_back(v);
    begin = end + 1;
  }
  return out;
}

}  // namespace mxs::cli

int main(int argc, char** argv) {
  CLI::App app{
      "mxserve: an inference server for OpenAI gpt-oss models (MXFP4 MoE) on NVIDIA Hopper GPUs,\n"
      "with a CPU reference backend. Run `mxserve COMMAND --help` for the options of a command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mxserve 0.1.0");
  auto commands = mxs::cli::registered_commands();
  std::stable_sort(commands.begin(), commands.end(),
                   [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& c : commands) c.setup(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mxs::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: internal: %s\n", e.what());
    return 2;
  }
  return 0;
}
