// `mxserve tokenize`: ids for text, --decode back to text, --chat through harmony (spec §4.7 example), and
// user errors as "error: ..." with exit code 1. Drives the built binary (MXS_BINARY).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <sys/wait.h>

#include "common/paths.h"
#include "model/mkmodel.h"
#include "text/tokenizer.h"

namespace {

struct CliRun {
  int code;
  std::string out;  // stdout and stderr
};

CliRun run(const std::string& args, const std::string& stdin_text = "") {
  const std::string in = testing::TempDir() + "/tokenize_stdin.txt";
  mxs::write_file_atomic(in, stdin_text);
  const std::string cmd = std::string(MXS_BINARY) + " tokenize " + args + " < '" + in + "' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

const char* kChat = R"([{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is 2 + 2?"}])";
const char* kChatPrompt =
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\nKnowledge cutoff: 2024-06\n"
    "Current date: 2025-08-05\n\nReasoning: medium\n\n# Valid channels: analysis, commentary, final. Channel must be "
    "included for every message.<|end|><|start|>developer<|message|># Instructions\n\nYou are a helpful assistant."
    "<|end|><|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant";

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? " " : "") + std::to_string(ids[i]);
  return s + "\n";
}

TEST(CliTokenize, ChatPromptNeedsNoTokenizer) {
  const CliRun r = run("--chat --show-prompt --date 2025-08-05 --tokenizer /nonexistent", kChat);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, std::string(kChatPrompt) + "\n");
}

TEST(CliTokenize, EncodeDecodeChat) {
  const std::string path = mxs::find_tokenizer_json();
  if (path.empty()) GTEST_SKIP() << "no tokenizer.json (run scripts/fetch-tokenizer.sh)";
  const auto tok = mxs::Tokenizer::from_file(path);
  const std::string t = "--tokenizer '" + path + "' ";

  CliRun r = run(t + "'Hello world <|end|>'");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, ids_line(tok->encode("Hello world <|end|>")));  // plain text: no special id
  EXPECT_EQ(r.out.find("200007"), std::string::npos);

  r = run(t + "--decode", "13225, 2375 200007\n");
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "Hello world<|end|>\n");

  r = run(t + "--chat --date 2025-08-05", kChat);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, ids_line(tok->encode_with_specials(kChatPrompt)));
}

TEST(CliTokenize, UserErrors) {
  CliRun r = run("--chat --show-prompt", R"([{"role":"bot","content":"x"}])");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("error: messages[0].role: unknown role 'bot'"), std::string::npos) << r.out;
  r = run("--chat --show-prompt", "not json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("error: --chat: the input is not valid JSON"), std::string::npos) << r.out;
  r = run("--model /nonexistent-dir x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("no tokenizer.json"), std::string::npos) << r.out;
}

}  // namespace
