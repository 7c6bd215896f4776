// `mxserve tokenize [--model DIR | --tokenizer FILE] [--decode] [--chat] [TEXT]`: text -> ids (one line, space
// separated), ids -> text, or an OpenAI chat JSON rendered through harmony (with the generation prompt) -> ids.
// TEXT defaults to stdin. The tokenizer: --tokenizer, else DIR/tokenizer.json, else $MXSERVE_TOKENIZER or the
// cached one (scripts/fetch-tokenizer.sh) -- the same file the demo model is built with.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "cli/command.h"
#include "common/error.h"
#include "common/paths.h"
#include "model/mkmodel.h"
#include "text/harmony.h"
#include "text/tokenizer.h"

namespace {

struct TokenizeArgs {
  std::string model_dir;
  std::string tokenizer_path;
  std::string text;
  bool text_given = false;
  bool decode = false;
  bool skip_special = false;
  bool allow_special = false;
  bool chat = false;
  bool show_prompt = false;
  std::string reasoning_effort = "medium";
  std::string date;  // "" = today
  bool no_generation_prompt = false;
};

std::string tokenizer_file(const TokenizeArgs& a) {
  if (!a.tokenizer_path.empty()) return a.tokenizer_path;
  if (!a.model_dir.empty()) {
    const std::string path = mxs::join_path(a.model_dir, "tokenizer.json");
    if (!mxs::file_exists(path)) throw mxs::Error("--model " + a.model_dir + ": no tokenizer.json in that folder");
    return path;
  }
  const std::string found = mxs::find_tokenizer_json();
  if (found.empty())
    throw mxs::Error("no tokenizer.json: pass --model DIR or --tokenizer FILE, set MXSERVE_TOKENIZER, or run "
                     "scripts/fetch-tokenizer.sh to cache the gpt-oss one");
  return found;
}

std::string read_stdin() {
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

void print_ids(const std::vector<int32_t>& ids) {
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
}

// Ids separated by whitespace and/or commas (so that a JSON list pasted in also works).
std::vector<int32_t> parse_ids(const std::string& text, const mxs::Tokenizer& tok) {
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == '[' || c == ']') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    const std::string word = text.substr(i, std::max(j, i + 1) - i);
    if (j == i || j - i > 9)
      throw mxs::Error("--decode: '" + word + "' is not a token id (expected non-negative integers)");
    const long id = std::stol(word);
    if (tok.token_bytes(static_cast<int32_t>(id)).empty())
      throw mxs::Error(mxs::strfmt("--decode: token id %ld is not in this tokenizer's vocabulary", id));
    ids.push_back(static_cast<int32_t>(id));
    i = j;
  }
  return ids;
}

// --chat input: a message list, or a chat-completions request body {"messages", "tools", "reasoning_effort"}.
mxs::harmony::Prompt render_chat(const std::string& input, const TokenizeArgs& a) {
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(input);
  } catch (const nlohmann::json::exception& e) {
    throw mxs::Error(std::string("--chat: the input is not valid JSON: ") + e.what());
  }
  mxs::harmony::RenderOptions options;
  std::string effort = a.reasoning_effort;
  nlohmann::ordered_json messages = j, tools;
  if (j.is_object()) {
    if (!j.contains("messages")) throw mxs::Error("--chat: expected a message list or an object with \"messages\"");
    messages = j["messages"];
    if (j.contains("tools")) tools = j["tools"];
    if (j.contains("reasoning_effort") && j["reasoning_effort"].is_string()) effort = j["reasoning_effort"];
  }
  const auto parsed_effort = mxs::harmony::reasoning_effort_from_name(effort);
  if (!parsed_effort) throw mxs::Error("reasoning effort '" + effort + "': expected low, medium or high");
  options.reasoning_effort = *parsed_effort;
  if (!a.date.empty()) options.conversation_start_date = a.date;
  options.add_generation_prompt = !a.no_generation_prompt;
  return mxs::harmony::render_prompt(mxs::harmony::chat_messages_from_json(messages),
                                     mxs::harmony::function_tools_from_json(tools), options);
}

void run_tokenize(const TokenizeArgs& a) {
  if (a.decode && a.chat) throw mxs::Error("--decode and --chat cannot be combined");
  const std::string input = a.text_given ? a.text : read_stdin();
  if (a.chat && a.show_prompt) {  // needs no tokenizer
    std::printf("%s\n", render_chat(input, a).to_string().c_str());
    return;
  }
  const std::unique_ptr<mxs::Tokenizer> tok = mxs::Tokenizer::from_file(tokenizer_file(a));
  if (a.decode) {
    const std::vector<int32_t> ids = parse_ids(input, *tok);
    const std::string text = tok->decode(ids, a.skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
  } else if (a.chat) {
    print_ids(render_chat(input, a).to_ids(*tok));
  } else {
    print_ids(a.allow_special ? tok->encode_with_specials(input) : tok->encode(input));
  }
}

mxs::cli::CommandRegistrar registrar(60, [](CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Text -> token ids, ids -> text (--decode), or a chat rendered in the harmony format (--chat)");
  cmd->add_option("text", args->text, "Input (default: stdin): text, ids with --decode, a JSON message list with --chat")
      ->each([args](const std::string&) { args->text_given = true; });
  cmd->add_option("--model", args->model_dir, "Model folder whose tokenizer.json to use");
  cmd->add_option("--tokenizer", args->tokenizer_path, "A tokenizer.json file (overrides --model)");
  cmd->add_flag("--decode", args->decode, "Read token ids (space/comma separated), print the text");
  cmd->add_flag("--skip-special", args->skip_special, "With --decode: leave special tokens out of the text");
  cmd->add_flag("--allow-special", args->allow_special,
                "Encode special-token strings such as <|start|> as special tokens (default: as plain text)");
  cmd->add_flag("--chat", args->chat,
                "Read an OpenAI message list ([{\"role\": ..., \"content\": ...}]) or request body (messages, tools, "
                "reasoning_effort) and render it in the harmony format, ending with <|start|>assistant");
  cmd->add_flag("--show-prompt", args->show_prompt, "With --chat: print the rendered prompt text instead of ids");
  cmd->add_option("--reasoning-effort", args->reasoning_effort, "With --chat: low, medium or high (default medium)");
  cmd->add_option("--date", args->date, "With --chat: the system message's current date YYYY-MM-DD (default today)");
  cmd->add_flag("--no-generation-prompt", args->no_generation_prompt, "With --chat: do not end with <|start|>assistant");
  cmd->callback([args] { run_tokenize(*args); });
});

}  // namespace
