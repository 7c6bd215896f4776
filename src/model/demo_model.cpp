// ensure_demo_model: the tiny demo checkpoint in the cache, created atomically on first use.
#include "model/demo_model.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "common/paths.h"
#include "model/config.h"
#include "model/mkmodel.h"

namespace mxs {

// Bump when mkmodel's values or files change, so that a stale cached demo model is not reused.
constexpr int kDemoGeneration = 2;

std::string ensure_demo_model() {
  const std::string models = join_path(cache_dir(), "models");
  const std::string dir = join_path(models, strfmt("demo-tiny-seed0-g%d", kDemoGeneration));
  if (file_exists(join_path(dir, "config.json")) && file_exists(join_path(dir, "model.safetensors.index.json")))
    return dir;

  const std::string tokenizer = find_tokenizer_json();
  if (tokenizer.empty())
    throw Error(strfmt("the demo model needs the gpt-oss tokenizer.json: run scripts/fetch-tokenizer.sh (it caches "
                       "%s), or set MXSERVE_TOKENIZER=/path/to/tokenizer.json",
                       join_path(join_path(cache_dir(), "tokenizer"), "tokenizer.json").c_str()));

  make_dirs(models);
  const std::string tmp = strfmt("%s.tmp-%d", dir.c_str(), int(::getpid()));
  std::error_code ec;
  std::filesystem::remove_all(tmp, ec);
  MXS_LOG_INFO("writing the demo model (mkmodel --preset tiny --seed 0) to %s", dir.c_str());
  try {
    write_random_checkpoint(ModelConfig::preset("tiny"), 0, tmp, tokenizer);
  } catch (...) {
    std::filesystem::remove_all(tmp, ec);
    throw;
  }
  if (std::rename(tmp.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    std::filesystem::remove_all(tmp, ec);
    // Another process finished first: its folder is complete (rename is atomic), use it.
    if ((err == EEXIST || err == ENOTEMPTY) && file_exists(join_path(dir, "config.json"))) return dir;
    throw Error(strfmt("cannot rename %s to %s: %s", tmp.c_str(), dir.c_str(), std::strerror(err)));
  }
  return dir;
}

}  // namespace mxs
