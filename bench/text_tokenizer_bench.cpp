// Tokenizer throughput on one core: encode MB/s (and tokens/s) on English/markdown text built from the
// project's docs, decode MB/s; with --npm, runs bench/tokenizer_npm_bench.mjs (gpt-tokenizer, HF tokenizers'
// npm binding) on the same text.
//   text_tokenizer_bench [--tokenizer PATH] [--text FILE] [--min-mb N] [--save-text FILE] [--npm]
// The corpus defaults to /work/shared/docs/*.md + README.md + docs/*.md (found from MXS_SOURCE_DIR or the
// working directory), concatenated and repeated up to --min-mb (default 4) MB.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/paths.h"
#include "common/timer.h"
#include "text/tokenizer.h"

namespace fs = std::filesystem;

namespace {

std::string default_tokenizer_path() {
  if (const char* env = std::getenv("MXSERVE_TOKENIZER")) return env;
  return mxs::join_path(mxs::cache_dir(), "tokenizer/tokenizer.json");
}

std::string build_corpus(double min_mb) {
  std::vector<fs::path> files;
  for (const char* dir : {"/work/shared/docs", "../shared/docs", "docs"}) {
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".md") files.push_back(fs::canonical(e.path()));
    }
  }
  if (fs::exists("README.md")) files.push_back(fs::canonical("README.md"));
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  std::string base;
  for (const auto& f : files) base += mxs::read_file(f.string()) + "\n\n";
  MXS_CHECK(!base.empty(), "no markdown found: run from the repository root or pass --text FILE");
  std::string text;
  while (text.size() < min_mb * 1e6) text += base;
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::string tok_path = default_tokenizer_path(), text_path, save_path;
    double min_mb = 4;
    bool npm = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        MXS_CHECK(i + 1 < argc, a + " needs a value");
        return argv[++i];
      };
      if (a == "--tokenizer") tok_path = value();
      else if (a == "--text") text_path = value();
      else if (a == "--min-mb") min_mb = std::stod(value());
      else if (a == "--save-text") save_path = value();
      else if (a == "--npm") npm = true;
      else throw mxs::Error("unknown argument " + a + " (see the comment at the top of text_tokenizer_bench.cpp)");
    }
    const std::string text = text_path.empty() ? build_corpus(min_mb) : mxs::read_file(text_path);
    if (npm && save_path.empty()) save_path = (fs::temp_directory_path() / "mxs_tokenizer_bench.md").string();
    if (!save_path.empty()) mxs::write_file_atomic(save_path, text);

    mxs::Stopwatch load;
    const auto tok = mxs::Tokenizer::from_file(tok_path);
    std::printf("load %s: %.2f s\n", tok_path.c_str(), load.seconds());

    const double mb = text.size() / 1e6;
    std::vector<int32_t> ids;
    double best_encode = 1e30, best_decode = 1e30;
    for (int rep = 0; rep < 5; ++rep) {  // best of 5: one core, no warm-up effects in the number
      mxs::Stopwatch sw;
      ids = tok->encode(text);
      best_encode = std::min(best_encode, sw.seconds());
      mxs::Stopwatch dw;
      const std::string back = tok->decode(ids);
      best_decode = std::min(best_decode, dw.seconds());
      MXS_CHECK(back == text, "decode(encode(text)) != text");
    }
    std::printf("text: %.2f MB, %zu tokens (%.2f bytes/token)\n", mb, ids.size(), text.size() / double(ids.size()));
    std::printf("mxserve encode: %.1f MB/s, %.2f M tokens/s (best of 5, one thread)\n", mb / best_encode,
                ids.size() / best_encode / 1e6);
    std::printf("mxserve decode: %.1f MB/s\n", mb / best_decode);
    std::fflush(stdout);
    if (npm) {
      const std::string cmd = "node bench/tokenizer_npm_bench.mjs '" + save_path + "' --hf '" + tok_path + "'";
      std::printf("$ %s\n", cmd.c_str());
      std::fflush(stdout);
      if (std::system(cmd.c_str()) != 0) return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "text_tokenizer_bench: %s\n", e.what());
    return 1;
  }
}
