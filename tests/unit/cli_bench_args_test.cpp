// `mxserve bench`: every benchmark is listed, and bad arguments fail fast with a message naming the option
// (before any model load or GPU work), on any machine; a CUDA benchmark on a build or machine without a
// usable GPU exits 1 with the CUDA reason instead of crashing.
#include <gtest/gtest.h>

#include "cli_test_util.h"

namespace mxs {
namespace {

using test::run_mxserve;

TEST(CliBenchArgs, EveryBenchmarkIsListed) {
  const auto r = run_mxserve("bench --help");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  for (const char* name : {"decode", "prefill", "kernel", "throughput", "serve"})
    EXPECT_NE(r.out.find(name), std::string::npos) << name << " missing from:\n" << r.out;
  const auto k = run_mxserve("bench kernel --help");
  for (const char* name : {"moe-gemm", "attention-decode", "stream-read", "dense-gemm"})
    EXPECT_NE(k.out.find(name), std::string::npos) << name << " missing from:\n" << k.out;
}

// The CUDA runner's switches for its extra weight copies and its exact short-context attention are on every command
// that builds one.
TEST(CliBenchArgs, WeightCopySwitchesOnDecodeGenerateServe) {
  for (const char* cmd : {"bench decode --help", "generate --help", "serve --help"}) {
    const auto r = run_mxserve(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd << ":\n" << r.out;
    for (const char* opt : {"--bf12-dense", "--no-lm-head-screen", "--exact-attention"})
      EXPECT_NE(r.out.find(opt), std::string::npos) << opt << " missing from " << cmd << ":\n" << r.out;
  }
  // --bf12-dense auto (the default) is a valid value; the help names it.
  EXPECT_NE(run_mxserve("serve --help").out.find("auto (the default"), std::string::npos);
  for (const char* args : {"bench decode --no-lm-head-screen=maybe", "bench decode --exact-attention=maybe"}) {
    const auto bad = run_mxserve(args);
    EXPECT_NE(bad.exit_code, 0) << args << ":\n" << bad.out;
    EXPECT_EQ(bad.out.find("terminate"), std::string::npos) << bad.out;
  }
}

TEST(CliBenchArgs, BadListsNameTheOption) {
  const struct {
    const char* args;
    const char* expect;
  } cases[] = {
      {"bench prefill --prompt 0", "--prompt 0"},
      {"bench prefill --prompt 512,x", "--prompt"},
      {"bench decode --batch 1,999", "--batch"},
      {"bench decode --breakdown 0", "--breakdown"},
      {"bench decode --breakdown 4,x", "--breakdown"},
      {"bench decode --temperature -1", "--temperature"},
      {"bench decode --temperature hot", "--temperature"},
      {"bench decode --top-p 0", "--top-p"},
      {"bench decode --top-p 1.5", "--top-p"},
      {"bench decode --top-p hot", "--top-p"},
      {"bench decode --presence-penalty 2.5", "--presence-penalty"},
      {"bench decode --presence-penalty x", "--presence-penalty"},
      {"bench kernel moe-gemm --P 0", "--P"},
      {"bench kernel moe-gemm --routing skewed", "--routing"},
      {"bench kernel attention-decode --batch 0", "--batch"},
      {"bench kernel attention-decode --context 8,x", "--context"},
      {"bench kernel stream-read --mb 0", "--mb"},
      {"bench kernel stream-read --mb 2,x", "--mb"},
      {"bench kernel stream-read --chain 0", "--chain"},
      {"bench kernel dense-gemm --rows 0", "--rows"},
      {"bench kernel dense-gemm --rows 8,x", "--rows"},
      {"bench kernel dense-gemm --algos 0", "--algos"},
      {"bench prefill --chunk 8", "--chunk"},
      {"bench serve --temperature 3", "--temperature"},
      {"bench decode --bf12-dense lm_head,foo", "--bf12-dense"},
      {"generate -p hi --bf12-dense attn", "--bf12-dense"},
      {"serve --bf12-dense o_proj,", "--bf12-dense"},
  };
  for (const auto& c : cases) {
    const auto r = run_mxserve(c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    // (A build without CUDA refuses the CUDA benchmarks first, with its own reason.)
    const bool named = r.out.find(c.expect) != std::string::npos || r.out.find("needs the CUDA backend") != std::string::npos;
    EXPECT_TRUE(named) << c.args << " printed:\n" << r.out;
    EXPECT_EQ(r.out.find("terminate"), std::string::npos) << c.args << " crashed:\n" << r.out;
  }
}

}  // namespace
}  // namespace mxs
