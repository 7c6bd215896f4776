// Responses API request -> chat request (see responses_schema.h for the mapping).
#include "server/responses_schema.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"

namespace mxs::server {
namespace {

using Json = nlohmann::ordered_json;

std::string required_string(const Json& o, const char* key, const std::string& where) {
  const Json* v = field(o, key);
  if (!v || !v->is_string()) throw_invalid_param(where, where + "." + key + " must be a string");
  return v->get<std::string>();
}

// Message content: a string, or text parts ({type: input_text | output_text | text, text}) -> chat text parts.
Json content_parts(const Json& content, const std::string& where) {
  if (content.is_string()) return content;
  if (!content.is_array()) throw_invalid_param(where, where + " must be a string or an array of text parts");
  Json parts = Json::array();
  for (size_t j = 0; j < content.size(); ++j) {
    const Json& p = content[j];
    const std::string at = where + "[" + std::to_string(j) + "]";
    const Json* type = p.is_object() ? field(p, "type") : nullptr;
    const std::string t = type && type->is_string() ? type->get<std::string>() : "";
    if (t != "input_text" && t != "output_text" && t != "text")
      throw_invalid_param(at, at + ".type: '" + t + "' is not supported: only text parts (input_text, output_text)");
    parts.push_back({{"type", "text"}, {"text", required_string(p, "text", at)}});
  }
  return parts;
}

// The text of a reasoning item: its reasoning_text parts, else its summary.
std::string reasoning_text(const Json& item, const std::string& where) {
  std::string text;
  for (const char* key : {"content", "summary"}) {
    const Json* parts = field(item, key);
    if (!parts) continue;
    if (!parts->is_array()) throw_invalid_param(where, where + "." + key + " must be an array");
    for (const Json& p : *parts)
      if (p.is_object() && field(p, "text") && p["text"].is_string()) text += p["text"].get<std::string>();
    if (!text.empty()) break;
  }
  return text;
}

// Input items -> chat messages (after the instructions' developer message, if any). Items before `first_new` come from
// the stored conversation of previous_response_id (named so in errors); the others are input[i - first_new].
void add_input_messages(const Json& input, size_t first_new, Json& messages) {
  // The assistant message the next reasoning / call item joins: open until a message or a tool output ends it.
  const auto open_turn = [&]() -> Json* {
    if (messages.empty()) return nullptr;
    Json& last = messages.back();
    return last["role"] == "assistant" && !last.contains("content") ? &last : nullptr;
  };
  for (size_t i = 0; i < input.size(); ++i) {
    const Json& item = input[i];
    const std::string where =
        i < first_new ? "previous_response_id" : "input[" + std::to_string(i - first_new) + "]";
    if (!item.is_object()) throw_invalid_param(where, where + " must be an object, got " + type_name(item));
    const Json* type = field(item, "type");
    if (type && !type->is_string()) throw_invalid_param(where, where + ".type must be a string");
    const std::string t = type ? type->get<std::string>() : "message";
    if (t == "message") {
      const std::string role = required_string(item, "role", where);
      if (role != "user" && role != "system" && role != "developer" && role != "assistant")
        throw_invalid_param(where, where + ".role: '" + role + "' is not one of user, system, developer, assistant");
      const Json* content = field(item, "content");
      if (!content) throw_invalid_param(where, where + ".content is required");
      Json parts = content_parts(*content, where + ".content");
      if (Json* turn = role == "assistant" ? open_turn() : nullptr; turn && !turn->contains("tool_calls"))
        (*turn)["content"] = std::move(parts);  // the answer after this turn's reasoning
      else
        messages.push_back({{"role", role}, {"content", std::move(parts)}});
    } else if (t == "reasoning") {
      messages.push_back({{"role", "assistant"}, {"reasoning_content", reasoning_text(item, where)}});
    } else if (t == "function_call") {
      Json call = {{"id", required_string(item, "call_id", where)},
                   {"type", "function"},
                   {"function", {{"name", required_string(item, "name", where)},
                                 {"arguments", required_string(item, "arguments", where)}}}};
      Json* turn = open_turn();
      if (!turn) {
        messages.push_back({{"role", "assistant"}});
        turn = &messages.back();
      }
      (*turn)["tool_calls"].push_back(std::move(call));
    } else if (t == "function_call_output") {
      const Json* output = field(item, "output");
      if (!output) throw_invalid_param(where, where + ".output is required");
      messages.push_back({{"role", "tool"},
                          {"tool_call_id", required_string(item, "call_id", where)},
                          {"content", content_parts(*output, where + ".output")}});
    } else {
      throw_invalid_param(where, where + ".type: '" + t +
                                     "' is not supported (message, reasoning, function_call, function_call_output)");
    }
  }
  // A turn left open with reasoning only (the client sent back a reasoning item alone): an assistant message
  // without content is still valid chat input.
}

}  // namespace

void rename_chat_params(ApiError& e) {
  static const std::pair<std::string, std::string> kNames[] = {{"max_completion_tokens", "max_output_tokens"},
                                                               {"max_tokens", "max_output_tokens"},
                                                               {"reasoning_effort", "reasoning.effort"},
                                                               {"response_format", "text.format"},
                                                               {"messages", "input"}};
  for (const auto& [chat, responses] : kNames) {
    if (e.param.rfind(chat, 0) == 0) e.param = responses + e.param.substr(chat.size());
    for (size_t at = 0; (at = e.message.find(chat, at)) != std::string::npos; at += responses.size())
      e.message.replace(at, chat.size(), responses);
  }
}

ResponsesRequest parse_responses_request(const Json& body, ResponseStore* store) {
  for (const char* key : {"conversation", "background", "top_logprobs", "include", "prompt"}) {
    const Json* v = field(body, key);
    if (!v || (v->is_boolean() && !v->get<bool>()) || (v->is_array() && v->empty())) continue;
    throw_invalid_param(key, std::string(key) + " is not supported: continue a conversation with "
                                               "previous_response_id, or send it whole in `input`");
  }
  Json chat = Json::object();
  ResponsesRequest r;
  Json& echo = r.echo;
  if (const Json* m = field(body, "model")) chat["model"] = *m;

  Json messages = Json::array();
  echo["instructions"] = nullptr;
  if (const Json* ins = field(body, "instructions")) {
    if (!ins->is_string()) throw_invalid_param("instructions", "instructions must be a string");
    messages.push_back({{"role", "developer"}, {"content", *ins}});
    echo["instructions"] = *ins;
  }
  const Json* input = field(body, "input");
  if (!input) throw_invalid_param("input", "input is required: a string or an array of items");
  if (!input->is_string() && (!input->is_array() || input->empty()))
    throw_invalid_param("input", "input must be a string or a non-empty array of items");
  // The conversation: a stored response's (its input and output items), then this input, as items.
  r.conversation = Json::array();
  echo["previous_response_id"] = nullptr;
  if (const Json* prev = field(body, "previous_response_id")) {
    if (!prev->is_string()) throw_invalid_param("previous_response_id", "previous_response_id must be a string");
    const std::optional<ResponseStore::Entry> e = store ? store->get(prev->get<std::string>()) : std::nullopt;
    if (!e)
      throw_invalid_param("previous_response_id", "previous response with id '" + prev->get<std::string>() +
                                                      "' not found (not stored, deleted, or dropped from the store)");
    r.conversation = e->conversation;
    echo["previous_response_id"] = *prev;
  }
  const size_t first_new = r.conversation.size();
  if (input->is_string())
    r.conversation.push_back({{"role", "user"}, {"content", *input}});
  else
    for (const Json& item : *input) r.conversation.push_back(item);
  add_input_messages(r.conversation, first_new, messages);
  chat["messages"] = std::move(messages);

  echo["tools"] = Json::array();
  if (const Json* tools = field(body, "tools")) {
    if (!tools->is_array()) throw_invalid_param("tools", "tools must be an array");
    Json chat_tools = Json::array();
    for (size_t i = 0; i < tools->size(); ++i) {
      const Json& t = (*tools)[i];
      const std::string where = "tools[" + std::to_string(i) + "]";
      const std::string type = t.is_object() && field(t, "type") && t["type"].is_string() ? t["type"].get<std::string>()
                                                                                          : "";
      if (type != "function")
        throw_invalid_param(where, where + ".type: '" + type + "' is not supported: only function tools");
      Json f = {{"name", required_string(t, "name", where)}};
      if (const Json* d = field(t, "description")) f["description"] = *d;
      if (const Json* p = field(t, "parameters")) f["parameters"] = *p;
      chat_tools.push_back({{"type", "function"}, {"function", std::move(f)}});
    }
    chat["tools"] = std::move(chat_tools);
    echo["tools"] = *tools;
  }
  echo["tool_choice"] = "auto";
  if (const Json* tc = field(body, "tool_choice")) {
    if (tc->is_object()) {
      if (!field(*tc, "type") || (*tc)["type"] != "function" || !field(*tc, "name") || !(*tc)["name"].is_string())
        throw_invalid_param("tool_choice", "tool_choice must be \"auto\", \"none\", \"required\" or "
                                           "{\"type\": \"function\", \"name\": ...}");
      chat["tool_choice"] = {{"type", "function"}, {"function", {{"name", (*tc)["name"]}}}};
    } else {
      chat["tool_choice"] = *tc;
    }
    echo["tool_choice"] = *tc;
  }
  echo["reasoning"] = {{"effort", "medium"}, {"summary", nullptr}};
  if (const Json* re = field(body, "reasoning")) {
    if (!re->is_object()) throw_invalid_param("reasoning", "reasoning must be an object {\"effort\": ...}");
    if (const Json* e = field(*re, "effort")) {
      chat["reasoning_effort"] = *e;
      echo["reasoning"]["effort"] = *e;
    }
  }
  echo["text"] = {{"format", {{"type", "text"}}}};
  if (const Json* text = field(body, "text")) {
    if (!text->is_object()) throw_invalid_param("text", "text must be an object {\"format\": ...}");
    if (const Json* f = field(*text, "format")) {
      const Json* type = f->is_object() ? field(*f, "type") : nullptr;
      if (type && *type == "json_schema") {
        Json js = Json::object();
        for (const char* k : {"name", "schema", "description", "strict"})
          if (const Json* v = field(*f, k)) js[k] = *v;
        chat["response_format"] = {{"type", "json_schema"}, {"json_schema", std::move(js)}};
      } else {
        chat["response_format"] = *f;  // text / json_object, or what the chat path refuses by name
      }
      echo["text"]["format"] = *f;
    }
  }
  if (const Json* v = field(body, "max_output_tokens")) chat["max_completion_tokens"] = *v;
  // The sampling options and the vLLM extensions the chat path takes, under the same names.
  for (const char* key : {"temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty",
                          "repetition_penalty", "seed", "logit_bias", "min_tokens", "stream"})
    if (const Json* v = field(body, key)) chat[key] = *v;
  try {
    r.chat = parse_chat_request(chat);
  } catch (ApiException& e) {
    rename_chat_params(e.error);
    throw;
  }

  echo["max_output_tokens"] = field(body, "max_output_tokens") ? body["max_output_tokens"] : Json(nullptr);
  echo["temperature"] = field(body, "temperature") ? body["temperature"] : Json(1.0);
  echo["top_p"] = field(body, "top_p") ? body["top_p"] : Json(1.0);
  echo["parallel_tool_calls"] = true;
  if (const Json* v = field(body, "parallel_tool_calls")) {
    if (!v->is_boolean()) throw_invalid_param("parallel_tool_calls", "parallel_tool_calls must be a boolean");
    echo["parallel_tool_calls"] = *v;
  }
  echo["metadata"] = Json::object();
  if (const Json* v = field(body, "metadata")) {
    if (!v->is_object() || v->size() > 16)
      throw_invalid_param("metadata", "metadata must be an object of at most 16 string values");
    echo["metadata"] = *v;
  }
  if (const Json* v = field(body, "store")) {
    if (!v->is_boolean()) throw_invalid_param("store", "store must be a boolean");
    r.store = v->get<bool>();
  }
  r.store = r.store && store != nullptr && store->capacity() > 0;
  echo["store"] = r.store;
  // A prompt past the context is a 400 (context_length_exceeded), never cut short.
  if (const Json* v = field(body, "truncation"); v && *v != "disabled")
    throw_invalid_param("truncation", "truncation must be \"disabled\": the server does not drop input");
  echo["truncation"] = "disabled";
  echo["user"] = field(body, "user") ? body["user"] : Json(nullptr);
  return r;
}

}  // namespace mxs::server
