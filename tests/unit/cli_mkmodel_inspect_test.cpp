// The mxserve binary end to end: `mkmodel --preset tiny` into a temp folder, `inspect` prints the summary (text and
// JSON), and `inspect` on a broken folder exits non-zero with the reason.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/paths.h"
#include "model/mkmodel.h"
#include "model_test_util.h"
#include "cli_test_util.h"

namespace {

using mxs::test::TempDir;

using mxs::test::RunResult;
RunResult run(const std::string& args) { return mxs::test::run_mxserve(args); }

TEST(CliMkmodelInspect, TinyThenInspect) {
  TempDir tmp;
  const std::string dir = tmp / "tiny";
  const RunResult mk = run("mkmodel --preset tiny --seed 3 --no-tokenizer --out " + dir);
  ASSERT_EQ(mk.exit_code, 0) << mk.out;
  EXPECT_NE(mk.out.find("wrote " + dir), std::string::npos) << mk.out;
  EXPECT_TRUE(mxs::file_exists(dir + "/model.safetensors.index.json"));

  const RunResult in = run("inspect " + dir);
  ASSERT_EQ(in.exit_code, 0) << in.out;
  for (const char* part : {"format       HF MXFP4", "vocab 201088", "16 query heads, 2 kv heads (GQA group 8)",
                           "experts      8, top-4", "embeddings", "lm head", "active params per token",
                           "decode, batch 1", "tok/s at 3.0 TB/s", "tok/s at 4.3 TB/s", "bf12 copies",
                           "int8 screening copy"})
    EXPECT_NE(in.out.find(part), std::string::npos) << "missing \"" << part << "\" in\n" << in.out;

  const RunResult js = run("inspect --json " + dir);
  ASSERT_EQ(js.exit_code, 0) << js.out;
  const nlohmann::json j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["usable"], true);
  EXPECT_EQ(j["format"], "HF MXFP4");
  EXPECT_EQ(j["config"]["num_hidden_layers"], 4);
  EXPECT_GT(j["decode_bytes_per_token"]["total"].get<uint64_t>(), 0u);
  // bf12: the LM head [V, H], the o_proj [H, Q] and q/k/v [Q + 2 KV, H] matrices at 1.5 bytes per weight + 16 per row.
  const uint64_t V = 201088, H = j["config"]["hidden_size"].get<uint64_t>(), L = 4;
  const uint64_t D = j["config"]["head_dim"].get<uint64_t>();
  const uint64_t Q = j["config"]["num_attention_heads"].get<uint64_t>() * D;
  const uint64_t QKV = Q + 2 * j["config"]["num_key_value_heads"].get<uint64_t>() * D;
  EXPECT_EQ(j["decode_bytes_per_token"]["total"].get<uint64_t>() -
                j["decode_bytes_per_token"]["total_bf12_default"].get<uint64_t>(),
            V * H / 2 - V * 16 + L * (H * Q / 2 - H * 16) + L * (QKV * H / 2 - QKV * 16));
  // Greedy steps: the LM head's int8 copy (V is a multiple of 16: no padding rows) instead of its bf12 copy.
  EXPECT_EQ(j["decode_bytes_per_token"]["total_bf12_default"].get<uint64_t>() -
                j["decode_bytes_per_token"]["total_greedy_screen"].get<uint64_t>(),
            V * H / 2);
}

TEST(CliMkmodelInspect, LayersOverrideThePresetsDepth) {
  TempDir tmp;
  const std::string dir = tmp / "tiny2";
  const RunResult mk = run("mkmodel --preset tiny --layers 2 --no-tokenizer --out " + dir);
  ASSERT_EQ(mk.exit_code, 0) << mk.out;
  EXPECT_NE(mk.out.find("2 layers"), std::string::npos) << mk.out;
  const RunResult js = run("inspect --json " + dir);
  ASSERT_EQ(js.exit_code, 0) << js.out;
  const nlohmann::json j = nlohmann::json::parse(js.out);
  EXPECT_EQ(j["config"]["num_hidden_layers"], 2);
  EXPECT_EQ(j["config"]["num_local_experts"], 8);
  EXPECT_NE(run("mkmodel --preset tiny --layers 0 --no-tokenizer -q --out " + tmp / "none").exit_code, 0);
}

TEST(CliMkmodelInspect, BrokenFolderExitsNonZeroWithReason) {
  TempDir tmp;
  const std::string dir = tmp / "tiny";
  ASSERT_EQ(run("mkmodel --preset tiny --no-tokenizer -q --out " + dir).exit_code, 0);
  const std::string shard = dir + "/model-00001-of-00001.safetensors";
  std::filesystem::resize_file(shard, std::filesystem::file_size(shard) / 2);
  const RunResult in = run("inspect " + dir);
  EXPECT_EQ(in.exit_code, 1) << in.out;
  EXPECT_NE(in.out.find("not a usable model folder"), std::string::npos) << in.out;
  EXPECT_NE(in.out.find("model-00001-of-00001.safetensors"), std::string::npos) << in.out;
  EXPECT_NE(in.out.find("truncated"), std::string::npos) << in.out;

  const RunResult js = run("inspect --json " + dir);
  EXPECT_EQ(js.exit_code, 1);
  EXPECT_NE(js.out.find("\"usable\": false"), std::string::npos) << js.out;

  const RunResult missing = run("inspect " + tmp / "nothing-here");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("no such directory"), std::string::npos) << missing.out;
}

TEST(CliMkmodelInspect, OriginalAndBf16Layouts) {
  TempDir tmp;
  ASSERT_EQ(run("mkmodel --preset tiny --layout original --no-tokenizer -q --out " + tmp / "orig").exit_code, 0);
  const RunResult o = run("inspect " + tmp / "orig");
  EXPECT_EQ(o.exit_code, 0) << o.out;
  EXPECT_NE(o.out.find("OpenAI original"), std::string::npos) << o.out;

  ASSERT_EQ(run("mkmodel --preset tiny --layout bf16-experts --no-tokenizer -q --out " + tmp / "bf16").exit_code, 0);
  const RunResult b = run("inspect " + tmp / "bf16");
  EXPECT_EQ(b.exit_code, 1) << b.out;
  EXPECT_NE(b.out.find("dequantized to bf16"), std::string::npos) << b.out;
}

TEST(CliMkmodelInspect, DefaultIsTheDemoModel) {
  TempDir cache;
  const std::string tok = mxs::find_tokenizer_json();
  if (tok.empty()) GTEST_SKIP() << "no tokenizer.json (run scripts/fetch-tokenizer.sh)";
  const std::string envs = "MXSERVE_CACHE=" + cache.path() + " MXSERVE_TOKENIZER=" + tok + " ";
  const std::string cmd = envs + MXS_BINARY + " inspect 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("demo-tiny-seed0"), std::string::npos) << out;
  EXPECT_TRUE(mxs::file_exists(cache / "models/demo-tiny-seed0-g2/tokenizer.json"));
}

}  // namespace
