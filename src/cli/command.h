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

}  // namespace mxs::cli
