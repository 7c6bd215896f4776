// Harmony prompt rendering (gpt-oss-spec.md §4.2-4.5, §4.7): OpenAI-shaped chat -> harmony messages ->
// pieces of ordinary text and special tokens -> ids; plus the OpenAI JSON -> ChatMessage/FunctionTool
// conversion. Which template variant and why: see harmony.h.
#include "text/harmony.h"

#include <cctype>
#include <ctime>
#include <unordered_map>

#include "common/error.h"
#include "text/json_schema_ts.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs::harmony {

namespace {

constexpr std::string_view kValidChannels =
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.";
constexpr std::string_view kFunctionsGoToCommentary =
    "Calls to these tools must go to the commentary channel: 'functions'.";

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += sep;
    out += parts[i];
  }
  return out;
}

std::string today_utc() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// Harmony SystemContent: sections joined by "\n\n" (identity block, reasoning, channels).
std::string system_text(const RenderOptions& options, bool has_function_tools) {
  std::vector<std::string> top;
  if (!options.model_identity.empty()) top.push_back(options.model_identity);
  if (!options.knowledge_cutoff.empty()) top.push_back("Knowledge cutoff: " + options.knowledge_cutoff);
  const std::string date = options.conversation_start_date.value_or(today_utc());
  if (!date.empty()) top.push_back("Current date: " + date);

  std::vector<std::string> sections;
  if (!top.empty()) sections.push_back(join(top, "\n"));
  sections.push_back("Reasoning: " + std::string(reasoning_effort_name(options.reasoning_effort)));
  std::string channels(kValidChannels);
  if (has_function_tools) (channels += '\n') += kFunctionsGoToCommentary;
  sections.push_back(std::move(channels));
  return join(sections, "\n\n");
}

// A tool's parameters render as "() => any" when it takes nothing: no schema, or an object schema with no
// properties (what OpenAI clients send for no-argument functions; the current HF template does the same).
bool takes_no_arguments(const nlohmann::ordered_json& params) {
  if (params.is_null()) return true;
  if (!params.is_object()) return false;
  auto props = params.find("properties");
  const bool no_props = props == params.end() || (props->is_object() && props->empty());
  auto type = params.find("type");
  const bool object_type = type == params.end() || (type->is_string() && *type == "object");
  return object_type && no_props && params.find("oneOf") == params.end() && params.find("anyOf") == params.end();
}

Message text_message(std::string author, std::string content) {
  Message m;
  m.author = std::move(author);
  m.content = std::move(content);
  return m;
}

Message assistant_message(std::string channel, std::string content) {
  Message m = text_message("assistant", std::move(content));
  m.channel = std::move(channel);
  return m;
}

}  // namespace

// ---- names ----------------------------------------------------------------------------------------------

std::string_view role_name(Role role) {
  switch (role) {
    case Role::kSystem: return "system";
    case Role::kDeveloper: return "developer";
    case Role::kUser: return "user";
    case Role::kAssistant: return "assistant";
    case Role::kTool: return "tool";
  }
  return "user";
}

std::optional<Role> role_from_name(std::string_view name) {
  for (Role r : {Role::kSystem, Role::kDeveloper, Role::kUser, Role::kAssistant, Role::kTool})
    if (role_name(r) == name) return r;
  return std::nullopt;
}

std::string_view reasoning_effort_name(ReasoningEffort effort) {
  switch (effort) {
    case ReasoningEffort::kLow: return "low";
    case ReasoningEffort::kMedium: return "medium";
    case ReasoningEffort::kHigh: return "high";
  }
  return "medium";
}

std::optional<ReasoningEffort> reasoning_effort_from_name(std::string_view name) {
  for (ReasoningEffort e : {ReasoningEffort::kLow, ReasoningEffort::kMedium, ReasoningEffort::kHigh})
    if (reasoning_effort_name(e) == name) return e;
  return std::nullopt;
}

std::string_view special_token_text(int32_t id) {
  switch (id) {
    case tok::kStartOfText: return "<|startoftext|>";
    case tok::kEndOfText: return "<|endoftext|>";
    case tok::kReturn: return "<|return|>";
    case tok::kConstrain: return "<|constrain|>";
    case tok::kChannel: return "<|channel|>";
    case tok::kStart: return "<|start|>";
    case tok::kEnd: return "<|end|>";
    case tok::kMessage: return "<|message|>";
    case tok::kCall: return "<|call|>";
    default: return "";
  }
}

// ---- Prompt ---------------------------------------------------------------------------------------------

void Prompt::add_text(std::string_view text) {
  if (!text.empty()) pieces.push_back({-1, std::string(text)});
}

void Prompt::add_special(int32_t id) { pieces.push_back({id, {}}); }

std::string Prompt::to_string() const {
  std::string out;
  for (const Piece& p : pieces) out += p.special >= 0 ? std::string(special_token_text(p.special)) : p.text;
  return out;
}

std::vector<int32_t> Prompt::to_ids(const Tokenizer& tokenizer) const {
  std::vector<int32_t> ids;
  for (const Piece& p : pieces) {
    if (p.special >= 0) {
      ids.push_back(p.special);
    } else {
      const std::vector<int32_t> text_ids = tokenizer.encode(p.text);  // ordinary text: never specials
      ids.insert(ids.end(), text_ids.begin(), text_ids.end());
    }
  }
  return ids;
}

// ---- rendering ------------------------------------------------------------------------------------------

namespace {

// A description as comment lines (the library's str::lines()): one "// line" per line, no trailing empty line.
std::vector<std::string> comment_lines(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    out.push_back("// " + std::string(line));
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
  }
  return out;
}

}  // namespace

std::string render_tools_section(const std::vector<FunctionTool>& tools) {
  if (tools.empty()) return "";
  // Lines joined by "\n"; the "\n" inside the entries make the blank lines between blocks.
  std::vector<std::string> lines = {"## functions\n", "namespace functions {\n"};
  for (const FunctionTool& tool : tools) {
    for (std::string& line : comment_lines(tool.description)) lines.push_back(std::move(line));
    if (takes_no_arguments(tool.parameters))
      lines.push_back("type " + tool.name + " = () => any;\n");
    else
      lines.push_back("type " + tool.name + " = (_: " + json_schema_to_typescript(tool.parameters) + ") => any;\n");
  }
  lines.push_back("} // namespace functions");
  return "# Tools\n\n" + join(lines, "\n");
}

std::string render_response_format_section(const ResponseFormat& format) {
  std::string out = "# Response Formats\n\n## " + format.name + "\n\n";
  for (const std::string& line : comment_lines(format.description)) out += line + "\n";
  return out + format.schema.dump();
}

std::vector<Message> to_harmony_messages(const std::vector<ChatMessage>& messages,
                                         const std::vector<FunctionTool>& tools, const RenderOptions& options) {
  std::vector<Message> out;
  out.push_back(text_message("system", system_text(options, !tools.empty())));

  // OpenAI "system" and "developer" messages both become the developer message's instructions (as the HF
  // chat template does with messages[0]; vLLM's harmony path has no slot for them). Several are joined.
  std::vector<std::string> instructions;
  for (const ChatMessage& m : messages)
    if ((m.role == Role::kSystem || m.role == Role::kDeveloper) && !m.content.empty())
      instructions.push_back(m.content);
  std::vector<std::string> developer_sections;
  if (!instructions.empty()) {
    developer_sections.push_back("# Instructions");
    developer_sections.push_back(join(instructions, "\n\n"));
  }
  if (!tools.empty()) developer_sections.push_back(render_tools_section(tools));
  if (options.response_format) developer_sections.push_back(render_response_format_section(*options.response_format));
  if (!developer_sections.empty()) out.push_back(text_message("developer", join(developer_sections, "\n\n")));

  std::unordered_map<std::string, std::string> call_names;  // tool call id -> function name
  std::string last_call_name;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    switch (m.role) {
      case Role::kSystem:
      case Role::kDeveloper:
        break;
      case Role::kUser:
        out.push_back(text_message("user", m.content));
        break;
      case Role::kAssistant:
        if (!m.reasoning.empty()) out.push_back(assistant_message("analysis", m.reasoning));
        if (m.tool_calls.empty()) {
          if (!m.content.empty()) out.push_back(assistant_message("final", m.content));
          break;
        }
        // Text that accompanies tool calls is a preamble: user-visible, on commentary, no recipient.
        if (!m.content.empty()) out.push_back(assistant_message("commentary", m.content));
        for (const ToolCall& call : m.tool_calls) {
          Message c = assistant_message("commentary", call.arguments);
          c.recipient = "functions." + call.name;
          c.content_type = "json";
          c.constrained = true;
          out.push_back(std::move(c));
          if (!call.id.empty()) call_names[call.id] = call.name;
          last_call_name = call.name;
        }
        break;
      case Role::kTool: {
        // Which function answered: the message's own name, else the call it answers, else (like the HF
        // template) the most recent call.
        std::string name = m.name;
        if (name.empty()) {
          auto it = call_names.find(m.tool_call_id);
          name = it != call_names.end() ? it->second : last_call_name;
        }
        if (name.rfind("functions.", 0) == 0) name.erase(0, 10);
        if (name.empty())
          throw Error(strfmt("messages[%zu]: a tool message must follow an assistant tool call (tool_call_id "
                             "'%s' matches none) or carry a \"name\"",
                             i, m.tool_call_id.c_str()));
        Message t = text_message("functions." + name, m.content);
        t.recipient = "assistant";
        t.channel = "commentary";
        out.push_back(std::move(t));
        break;
      }
    }
  }

  // §4.5: once the assistant has given a final answer, the reasoning before it is no longer shown; the CoT
  // that led to a tool call stays while that tool round trip has no final answer after it. (The harmony
  // library drops only what precedes the *first* final; the docs and the HF template drop everything
  // before the last one, which is what the model sees in multi-turn chats served by HF/llama.cpp.)
  if (options.drop_previous_analysis) {
    size_t last_final = 0;
    bool has_final = false;
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].author == "assistant" && out[i].channel == "final") last_final = i, has_final = true;
    if (has_final) {
      std::vector<Message> kept;
      kept.reserve(out.size());
      for (size_t i = 0; i < out.size(); ++i)
        if (!(i < last_final && out[i].author == "assistant" && out[i].channel == "analysis"))
          kept.push_back(std::move(out[i]));
      out = std::move(kept);
    }
  }
  return out;
}

void append_message(Prompt& prompt, const Message& m) {
  prompt.add_special(tok::kStart);
  prompt.add_text(m.author);
  if (!m.recipient.empty() && m.recipient != "all") prompt.add_text(" to=" + m.recipient);
  if (!m.channel.empty()) {
    prompt.add_special(tok::kChannel);
    prompt.add_text(m.channel);
  }
  if (!m.content_type.empty()) {
    if (m.constrained) {
      prompt.add_text(" ");
      prompt.add_special(tok::kConstrain);
      prompt.add_text(m.content_type);
    } else {
      prompt.add_text(" " + m.content_type);
    }
  }
  prompt.add_special(tok::kMessage);
  prompt.add_text(m.content);
  prompt.add_special(m.author == "assistant" && !m.recipient.empty() ? tok::kCall : tok::kEnd);
}

Prompt render_prompt(const std::vector<ChatMessage>& messages, const std::vector<FunctionTool>& tools,
                     const RenderOptions& options) {
  Prompt prompt;
  for (const Message& m : to_harmony_messages(messages, tools, options)) append_message(prompt, m);
  if (options.add_generation_prompt) {
    prompt.add_special(tok::kStart);
    prompt.add_text("assistant");
  }
  return prompt;
}

std::vector<int32_t> render_prompt_ids(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                                       const std::vector<FunctionTool>& tools, const RenderOptions& options) {
  return render_prompt(messages, tools, options).to_ids(tokenizer);
}

// ---- OpenAI JSON ----------------------------------------------------------------------------------------

namespace {

using Json = nlohmann::ordered_json;

// OpenAI's rule for function names; anything else would break the " to=functions.NAME" header.
void check_function_name(const std::string& name, const std::string& where) {
  bool ok = !name.empty() && name.size() <= 64;
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-');
  if (!ok)
    throw Error(strfmt("%s: function name '%s' must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'",
                       where.c_str(), name.c_str()));
}

std::string content_text(const Json& content, const std::string& where) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) throw Error(where + ": expected a string, null or a list of text parts");
  std::string text;
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& part = content[j];
    const std::string at = strfmt("%s[%zu]", where.c_str(), j);
    if (part.is_string()) {
      text += part.get<std::string>();
      continue;
    }
    if (!part.is_object()) throw Error(at + ": expected a {\"type\": \"text\", \"text\": ...} object");
    const std::string type = part.value("type", std::string("text"));
    if (type != "text" && type != "input_text" && type != "output_text")
      throw Error(at + ": only text content parts are supported (got type '" + type + "')");
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) throw Error(at + ".text: expected a string");
    text += t->get<std::string>();
  }
  return text;
}

std::string optional_string(const Json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return "";
  if (!it->is_string()) throw Error(where + "." + key + ": expected a string");
  return it->get<std::string>();
}

}  // namespace

std::vector<ChatMessage> chat_messages_from_json(const nlohmann::ordered_json& messages) {
  if (!messages.is_array())
    throw Error("messages: expected a JSON array of {\"role\": ..., \"content\": ...} objects");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string where = strfmt("messages[%zu]", i);
    if (!m.is_object()) throw Error(where + ": expected an object with \"role\" and \"content\"");
    const std::string role = optional_string(m, "role", where);
    const std::optional<Role> r = role_from_name(role);
    if (!r)
      throw Error(where + ".role: unknown role '" + role + "' (expected system, developer, user, assistant or tool)");
    ChatMessage msg;
    msg.role = *r;
    msg.content = content_text(m.contains("content") ? m["content"] : Json(), where + ".content");
    if (msg.role == Role::kAssistant) {
      for (const char* key : {"reasoning_content", "reasoning", "thinking"}) {
        msg.reasoning = optional_string(m, key, where);
        if (!msg.reasoning.empty()) break;
      }
      if (auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
        if (!calls->is_array()) throw Error(where + ".tool_calls: expected a list");
        for (size_t j = 0; j < calls->size(); ++j) {
          const Json& c = (*calls)[j];
          const std::string at = strfmt("%s.tool_calls[%zu]", where.c_str(), j);
          if (!c.is_object() || !c.contains("function") || !c["function"].is_object())
            throw Error(at + ": expected {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}");
          const Json& f = c["function"];
          ToolCall call;
          call.id = optional_string(c, "id", at);
          call.name = optional_string(f, "name", at + ".function");
          check_function_name(call.name, at + ".function.name");
          auto args = f.find("arguments");
          if (args == f.end() || args->is_null()) call.arguments = "{}";
          else if (args->is_string()) call.arguments = args->get<std::string>();
          else call.arguments = args->dump();  // an object instead of its JSON text: accept it
          msg.tool_calls.push_back(std::move(call));
        }
      }
    } else if (msg.role == Role::kTool) {
      msg.tool_call_id = optional_string(m, "tool_call_id", where);
      msg.name = optional_string(m, "name", where);
    }
    out.push_back(std::move(msg));
  }
  return out;
}

std::vector<FunctionTool> function_tools_from_json(const nlohmann::ordered_json& tools) {
  std::vector<FunctionTool> out;
  if (tools.is_null()) return out;
  if (!tools.is_array()) throw Error("tools: expected a list of {\"type\": \"function\", \"function\": {...}}");
  for (size_t i = 0; i < tools.size(); ++i) {
    const Json& t = tools[i];
    const std::string where = strfmt("tools[%zu]", i);
    if (!t.is_object()) throw Error(where + ": expected an object");
    const std::string type = t.value("type", std::string("function"));
    if (type != "function") throw Error(where + ".type: only \"function\" tools are supported (got '" + type + "')");
    // Chat Completions nests the definition under "function"; the Responses API puts it inline.
    const bool nested = t.contains("function");
    const Json& f = nested ? t["function"] : t;
    const std::string fwhere = nested ? where + ".function" : where;
    if (!f.is_object()) throw Error(fwhere + ": expected an object");
    FunctionTool tool;
    tool.name = optional_string(f, "name", fwhere);
    check_function_name(tool.name, fwhere + ".name");
    tool.description = optional_string(f, "description", fwhere);
    if (auto p = f.find("parameters"); p != f.end() && !p->is_null()) {
      if (!p->is_object()) throw Error(fwhere + ".parameters: expected a JSON Schema object");
      tool.parameters = *p;
    }
    out.push_back(std::move(tool));
  }
  return out;
}

}  // namespace mxs::harmony
