// `mxserve inspect [DIR]`: what a model folder holds (format, config, parameters and bytes by group, the bytes a
// decoded token reads and the batch-1 ceilings), or why it is unusable (exit 1). Default: the demo model.
#include <cstdio>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#include "model/demo_model.h"
#include "model/model_summary.h"
#include "model/weights.h"

namespace {

struct InspectArgs {
  std::string dir;
  bool json = false;
};

void run_inspect(const InspectArgs& a) {
  const std::string dir = a.dir.empty() ? mxs::ensure_demo_model() : a.dir;
  mxs::ModelSummary s;
  try {
    s = mxs::summarize_model(mxs::load_model(dir));
  } catch (const mxs::Error& e) {
    if (a.json)
      std::printf("%s\n", nlohmann::json({{"usable", false}, {"dir", dir}, {"error", e.what()}}).dump(2).c_str());
    throw mxs::Error(mxs::strfmt("not a usable model folder: %s", e.what()));
  }
  // The hub repos hold both layouts; say which one was read.
  const bool has_original =
      s.format == mxs::CheckpointFormat::kHfMxfp4 && mxs::dir_exists(mxs::join_path(dir, "original"));
  if (a.json) {
    std::printf("%s\n", mxs::summary_json(s).dump(2).c_str());
  } else {
    std::printf("%s", mxs::summary_text(s).c_str());
    if (has_original)
      std::printf("note: %s/original (OpenAI layout) is also present; the HF checkpoint above is the one used\n",
                  dir.c_str());
  }
}

mxs::cli::CommandRegistrar registrar(70, [](CLI::App& app) {
  auto args = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect", "Show what a model folder holds (format, config, sizes, decode roofline) or why it is unusable");
  cmd->add_option("dir", args->dir, "Model folder (default: the built-in demo model)");
  cmd->add_flag("--json", args->json, "Print JSON instead of text");
  cmd->callback([args] { run_inspect(*args); });
});

}  // namespace
