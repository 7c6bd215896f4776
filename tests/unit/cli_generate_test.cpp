// `mxserve generate` and `mxserve bench throughput` end to end on the demo model (needs the real
// tokenizer.json; skipped without it): timings printed, bad input rejected with a clear message, table + JSON.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/paths.h"
#include "model/mkmodel.h"
#include "cli_test_util.h"

namespace {

using mxs::test::RunResult;
RunResult run(const std::string& args) { return mxs::test::run_mxserve(args); }

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class CliGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (mxs::find_tokenizer_json().empty()) GTEST_SKIP() << "no tokenizer.json (run scripts/fetch-tokenizer.sh)";
  }
};

TEST_F(CliGenerate, PrintsTheFourFigures) {
  for (const char* mode : {"", "--raw "}) {
    const RunResult r = run(std::string("generate ") + mode + "--prompt 'Say hi' --max-tokens 5 --temperature 0");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    for (const char* part : {"load ", "TTFT ", "prompt ", "tok/s", "decode 5 tokens"})
      EXPECT_TRUE(contains(r.out, part)) << "missing \"" << part << "\" in\n" << r.out;
  }
}

TEST_F(CliGenerate, BadInputIsAClearError) {
  std::string long_prompt;
  for (int i = 0; i < 50; ++i) long_prompt += "word ";
  RunResult r = run("generate --raw --max-length 20 --prompt '" + long_prompt + "'");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "the prompt is 5")) << r.out;  // ~50 tokens, both numbers named
  EXPECT_TRUE(contains(r.out, " tokens but --max-length is 20")) << r.out;
  r = run("generate --prompt hi --temperature 500");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "temperature = 500")) << r.out;
  r = run("generate --prompt hi --presence-penalty 3");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "presence_penalty")) << r.out;
  r = run("generate --prompt hi --repetition-penalty 0");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "repetition_penalty")) << r.out;
  r = run("generate --prompt hi --model " + std::filesystem::temp_directory_path().string());
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "no tokenizer.json")) << r.out;
}

// <|return|> (200002) forced by --logit-bias ends the answer at once; --min-tokens holds it back; --ignore-eos runs on.
TEST_F(CliGenerate, LogitBiasMinTokensAndIgnoreEos) {
  const std::string base = "generate --raw --prompt 'Say hi' --max-tokens 6 --temperature 0 --logit-bias 200002=100 ";
  RunResult r = run(base);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "decode 1 tokens") && contains(r.out, "finish: stop")) << r.out;
  r = run(base + "--min-tokens 3");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "decode 4 tokens") && contains(r.out, "finish: stop")) << r.out;
  r = run(base + "--ignore-eos");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "decode 6 tokens") && contains(r.out, "finish: length")) << r.out;
  for (const char* bad : {"--logit-bias 5", "--logit-bias x=1", "--logit-bias 5=1x", "--logit-bias -3=1"}) {
    r = run(std::string("generate --prompt hi ") + bad);
    EXPECT_EQ(r.exit_code, 1) << bad << ": " << r.out;
    EXPECT_TRUE(contains(r.out, "must be TOKEN=BIAS")) << bad << ": " << r.out;
  }
  r = run("generate --prompt hi --logit-bias 5=300");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "[-100, 100]")) << r.out;
}

// --json-object --raw: the continuation is a JSON object ('}' (id 92) pushed up: the shortest one, then the stop).
TEST_F(CliGenerate, JsonObject) {
  RunResult r = run("generate --raw --prompt 'JSON:' --max-tokens 8 --temperature 0 --json-object --logit-bias 92=100");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "finish: stop")) << r.out;
  const size_t open = r.out.find('{');
  ASSERT_NE(open, std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('}', open), r.out.find_first_not_of(" \t\r\n", open + 1)) << r.out;
  r = run("generate --prompt hi --json-object --ignore-eos");
  EXPECT_EQ(r.exit_code, 1) << r.out;
}

// --json-schema FILE: an enum and a boolean (greedy must close them); errors name the file, or the keyword and path.
TEST_F(CliGenerate, JsonSchema) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string good = (dir / "mxs_cli_schema.json").string(), bad = (dir / "mxs_cli_schema_bad.json").string(),
                    broken = (dir / "mxs_cli_schema_broken.json").string();
  mxs::write_file_atomic(good, R"({"type": "object", "required": ["c", "ok"], "additionalProperties": false,
    "properties": {"c": {"enum": ["red", "green"]}, "ok": {"anyOf": [{"type": "boolean"}, {"type": "null"}]}}})");
  mxs::write_file_atomic(bad, R"({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}})");
  mxs::write_file_atomic(broken, "{\"type\":");
  RunResult r = run("generate --raw --prompt 'JSON:' --max-tokens 64 --temperature 0 --json-schema " + good);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "finish: stop")) << r.out;
  const size_t open = r.out.find('{'), close = r.out.rfind('}');
  ASSERT_TRUE(open != std::string::npos && close != std::string::npos) << r.out;
  const nlohmann::json v = nlohmann::json::parse(r.out.substr(open, close - open + 1));
  EXPECT_TRUE(v["c"] == "red" || v["c"] == "green") << v;
  EXPECT_TRUE(v["ok"].is_boolean() || v["ok"].is_null()) << v;
  r = run("generate --prompt hi --json-schema " + bad);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "/properties/a: keyword 'pattern' is not supported")) << r.out;
  r = run("generate --prompt hi --json-schema " + broken);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "not JSON")) << r.out;
  r = run("generate --prompt hi --json-schema " + good + " --json-object");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(contains(r.out, "exclude each other")) << r.out;
}

TEST_F(CliGenerate, BenchThroughputPrintsATableAndJson) {
  const std::string json_path = (std::filesystem::temp_directory_path() / "mxs_cli_bench_throughput.json").string();
  const RunResult r = run("bench throughput --num-prompts 3 --input-len 8 --output-len 4 --concurrency 1,2 --json " +
                          json_path);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "| concurrency | output tok/s | total tok/s | mean step ms | peak KV usage")) << r.out;
  const nlohmann::json j = nlohmann::json::parse(mxs::read_file(json_path));
  ASSERT_EQ(j["results"].size(), 2u);
  for (const auto& level : j["results"]) {
    EXPECT_EQ(level["output_tokens"], 12);
    EXPECT_EQ(level["prompt_tokens"], 24);
    EXPECT_GT(level["output_tok_per_s"].get<double>(), 0.0);
    EXPECT_GT(level["peak_kv_usage"].get<double>(), 0.0);
  }
  std::filesystem::remove(json_path);
}

// --async-scheduling on|off|auto: same continuation (seeded sampling on the CPU runner, with and without penalties
// and min-p), recorded in the JSON, anything else rejected by name.
TEST_F(CliGenerate, AsyncSchedulingOptionKeepsTheOutput) {
  std::string text[4];
  for (int i = 0; i < 4; ++i) {
    const char* extra = i < 2 ? "" : "--presence-penalty 1.5 --frequency-penalty 0.5 --repetition-penalty 1.3 --min-p 0.01 ";
    const RunResult r = run(std::string("generate --raw --prompt 'Once upon a time' --max-tokens 12 --temperature 0.7 "
                                        "--seed 3 ") + extra + "--async-scheduling " + (i % 2 == 0 ? "off" : "on") +
                            " 2>/dev/null | cat");
    ASSERT_EQ(r.exit_code, 0) << r.out;
    text[i] = r.out;
  }
  EXPECT_FALSE(text[0].empty());
  EXPECT_EQ(text[0], text[1]);
  EXPECT_EQ(text[2], text[3]);
  EXPECT_NE(text[0], text[2]) << "the penalties should change a 12-token continuation";
  const std::string json_path = (std::filesystem::temp_directory_path() / "mxs_cli_bench_async.json").string();
  for (const char* mode : {"on", "off"}) {
    const RunResult r = run(std::string("bench throughput --num-prompts 3 --input-len 8 --output-len 4 --concurrency 2 "
                                        "--async-scheduling ") + mode + " --json " + json_path);
    ASSERT_EQ(r.exit_code, 0) << r.out;
    EXPECT_TRUE(contains(r.out, std::string("async scheduling ") + mode)) << r.out;
    const nlohmann::json j = nlohmann::json::parse(mxs::read_file(json_path));
    EXPECT_EQ(j["async_scheduling"].get<bool>(), std::string(mode) == "on");
    EXPECT_EQ(j["results"][0]["output_tokens"], 12);
  }
  std::filesystem::remove(json_path);
  const RunResult bad = run("generate --prompt hi --async-scheduling maybe");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_TRUE(contains(bad.out, "--async-scheduling")) << bad.out;
}

}  // namespace
