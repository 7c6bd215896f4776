// `mxserve mkmodel`: writes a deterministic random gpt-oss checkpoint (HF MXFP4 layout by default) for tests,
// benchmarks and demos. Same preset + seed -> same bytes on any machine.
#include <unistd.h>

#include <cstdio>

#include "cli/command.h"
#include "common/error.h"
#include "model/config.h"
#include "model/mkmodel.h"

namespace {

struct MkmodelArgs {
  std::string preset = "tiny";
  int layers = 0;  // 0: the preset's
  uint64_t seed = 0;
  std::string out;
  std::string tokenizer;
  std::string layout = "hf";
  bool no_tokenizer = false;
  bool quiet = false;
};

void run_mkmodel(const MkmodelArgs& a) {
  const mxs::ModelConfig config =
      a.layers > 0 ? mxs::ModelConfig::preset(a.preset, a.layers) : mxs::ModelConfig::preset(a.preset);
  mxs::MkmodelOptions o;
  o.seed = a.seed;
  o.out_dir = a.out;
  MXS_CHECK(mxs::layout_from_name(a.layout, &o.layout),
            mxs::strfmt("--layout %s: unknown (known: hf, original, bf16-experts)", a.layout.c_str()));
  if (!a.no_tokenizer) {
    o.tokenizer_path = a.tokenizer.empty() ? mxs::find_tokenizer_json() : a.tokenizer;
    if (o.tokenizer_path.empty())
      std::fprintf(stderr, "mkmodel: no tokenizer.json found (MXSERVE_TOKENIZER, scripts/fetch-tokenizer.sh); "
                           "writing the checkpoint without tokenizer files\n");
  }
  o.progress = !a.quiet && ::isatty(2);
  const mxs::MkmodelResult r = mxs::write_random_checkpoint(config, o);
  if (!a.quiet)
    std::printf("wrote %s (preset %s, %d layers, seed %llu, layout %s): %zu files, %.3f GB of tensors in %.1f s "
                "(%.0f MB/s)\n",
                a.out.c_str(), a.preset.c_str(), config.num_layers, (unsigned long long)a.seed, a.layout.c_str(),
                r.files.size(), double(r.tensor_bytes) / 1e9, r.seconds,
                r.seconds > 0 ? double(r.file_bytes) / r.seconds / 1e6 : 0.0);
}

mxs::cli::CommandRegistrar registrar(80, [](CLI::App& app) {
  auto args = std::make_shared<MkmodelArgs>();
  CLI::App* cmd = app.add_subcommand(
      "mkmodel", "Write a deterministic random gpt-oss checkpoint (HF MXFP4 layout) for tests and benchmarks");
  cmd->add_option("--preset", args->preset, "Model shape: tiny (real vocab, ~52 MB), 20b (~13.8 GB), 120b (~65 GB)")
      ->check(CLI::IsMember({"tiny", "20b", "120b"}));
  cmd->add_option("--layers", args->layers,
                  "Layers instead of the preset's (the preset's width: e.g. 120b's 128 experts in a few layers)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--seed", args->seed, "Random seed (same seed -> same bytes)");
  cmd->add_option("--out", args->out, "Output folder (created)")->required();
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json to copy in (default: $MXSERVE_TOKENIZER or the cached one)");
  cmd->add_flag("--no-tokenizer", args->no_tokenizer, "Write no tokenizer files");
  cmd->add_option("--layout", args->layout,
                  "hf (default, the target), original (OpenAI original/ layout) or bf16-experts (dequantized "
                  "experts; mxserve rejects it, for testing the message)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress bar or summary line");
  cmd->callback([args] { run_mkmodel(*args); });
});

}  // namespace
