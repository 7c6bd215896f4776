// OpenAI request parsing and validation (see openai_schema.h). Ranges follow the OpenAI API reference;
// top_k, min_p and repetition_penalty are the usual vLLM extensions.
#include "server/openai_schema.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>

#include "common/error.h"

namespace mxs::server {
using Json = nlohmann::ordered_json;

const char* type_name(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::boolean:
      return "a boolean";
    case Json::value_t::string:
      return "a string";
    case Json::value_t::array:
      return "an array";
    case Json::value_t::object:
      return "an object";
    case Json::value_t::number_float:
      return "a number";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "an integer";
    default:
      return "an unsupported value";
  }
}

const Json* field(const Json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

namespace {


std::optional<double> number(const Json& body, const char* key, double lo, double hi, bool lo_open = false) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw_invalid_param(key, strfmt("%s must be a number, got %s", key, type_name(*v)));
  const double x = v->get<double>();
  const bool ok = std::isfinite(x) && (lo_open ? x > lo : x >= lo) && x <= hi;
  if (!ok)
    throw_invalid_param(key,
                        strfmt("%s = %g is out of range: must be in %c%g, %g]", key, x, lo_open ? '(' : '[', lo, hi));
  return x;
}

std::optional<int64_t> integer(const Json& body, const char* key, int64_t lo, int64_t hi) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  int64_t x;
  if (v->is_number_integer() || v->is_number_unsigned()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      throw_invalid_param(key, strfmt("%s is too large", key));
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() &&
             std::fabs(v->get<double>()) < 9e15) {
    x = int64_t(v->get<double>());  // 5.0 is an integer in JSON's eyes
  } else {
    throw_invalid_param(key, strfmt("%s must be an integer, got %s", key, type_name(*v)));
  }
  if (x < lo || x > hi)
    throw_invalid_param(key, strfmt("%s = %lld is out of range: must be in [%lld, %lld]", key, (long long)x,
                                    (long long)lo, (long long)hi));
  return x;
}

std::optional<bool> boolean(const Json& body, const char* key) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw_invalid_param(key, strfmt("%s must be a boolean, got %s", key, type_name(*v)));
  return v->get<bool>();
}

std::optional<std::string> string(const Json& body, const char* key) {
  const Json* v = field(body, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw_invalid_param(key, strfmt("%s must be a string, got %s", key, type_name(*v)));
  return v->get<std::string>();
}

// logit_bias: {"<token id>": bias in [-100, 100], ...} (OpenAI: the keys are token ids written as strings).
void parse_logit_bias(const Json& lb, SamplingParams& s) {
  if (!lb.is_object())
    throw_invalid_param("logit_bias",
                        strfmt("logit_bias must be an object of token id -> bias, got %s", type_name(lb)));
  if (lb.size() > size_t(SamplingParams::kMaxLogitBias))
    throw_invalid_param("logit_bias", strfmt("logit_bias has %zu entries: at most %d are allowed", lb.size(),
                                             SamplingParams::kMaxLogitBias));
  for (auto it = lb.begin(); it != lb.end(); ++it) {
    const std::string& key = it.key();
    // Canonical decimal only ("7", not "07"): the parser merges equal keys, so the ids are then distinct too.
    const bool digits = !key.empty() && key.size() <= 9 && (key[0] != '0' || key.size() == 1) &&
                        std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits)
      throw_invalid_param("logit_bias", "logit_bias key '" + key.substr(0, 32) +
                                            "' is not a token id (a non-negative integer)");
    const int64_t id = std::stoll(key);
    const Json& v = it.value();
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < -100.0 || v.get<double>() > 100.0)
      throw_invalid_param("logit_bias", "logit_bias['" + key + "'] must be a number in [-100, 100]");
    s.logit_bias.push_back({int32_t(id), float(v.get<double>())});
  }
}

// Options common to chat and completions. Logprobs are parsed by each endpoint (their shapes differ).
void parse_generation(const Json& body, GenerationOptions& g) {
  SamplingParams& s = g.sampling;
  if (auto v = number(body, "temperature", 0.0, 2.0)) s.temperature = float(*v);
  if (auto v = number(body, "top_p", 0.0, 1.0, /*lo_open=*/true)) s.top_p = float(*v);
  if (auto v = integer(body, "top_k", -1, 1 << 30)) s.top_k = *v < 0 ? 0 : int(*v);  // vLLM: -1 = off
  if (auto v = number(body, "min_p", 0.0, 1.0)) s.min_p = float(*v);
  if (auto v = number(body, "frequency_penalty", -2.0, 2.0)) s.frequency_penalty = float(*v);
  if (auto v = number(body, "presence_penalty", -2.0, 2.0)) s.presence_penalty = float(*v);
  if (auto v = number(body, "repetition_penalty", 0.0, 2.0, /*lo_open=*/true)) s.repetition_penalty = float(*v);
  if (auto v = integer(body, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    s.seed = uint64_t(*v);
    g.seed_given = true;
  }
  // max_completion_tokens is the current name; max_tokens the deprecated one. Both accepted, the new wins.
  const int kMaxTokens = 1 << 24;
  if (auto v = integer(body, "max_tokens", 1, kMaxTokens)) g.max_tokens = int(*v);
  if (auto v = integer(body, "max_completion_tokens", 1, kMaxTokens)) g.max_tokens = int(*v);
  if (auto v = integer(body, "n", 1, kMaxChoices)) g.n = int(*v);
  if (const Json* lb = field(body, "logit_bias")) parse_logit_bias(*lb, s);
  if (auto v = integer(body, "min_tokens", 0, kMaxTokens)) s.min_tokens = int(*v);  // vLLM
  if (auto v = boolean(body, "ignore_eos")) g.ignore_eos = *v;                      // vLLM
  if (const Json* ids = field(body, "stop_token_ids")) {                             // vLLM
    if (!ids->is_array() || ids->size() > 16)
      throw_invalid_param("stop_token_ids", "stop_token_ids must be an array of at most 16 token ids");
    for (size_t i = 0; i < ids->size(); ++i) {
      const Json& t = (*ids)[i];
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > std::numeric_limits<int32_t>::max())
        throw_invalid_param("stop_token_ids", strfmt("stop_token_ids[%zu] is not a token id", i));
      g.stop_token_ids.push_back(int32_t(t.get<int64_t>()));
    }
  }
  if (const Json* rf = field(body, "response_format")) {
    const Json* type = rf->is_object() ? field(*rf, "type") : nullptr;
    const std::string t = type && type->is_string() ? type->get<std::string>() : "";
    if (t == "json_object") {
      g.json_object = true;
    } else if (t == "json_schema") {
      const Json* js = field(*rf, "json_schema");
      const Json* schema = js && js->is_object() ? field(*js, "schema") : nullptr;
      const Json* name = js && js->is_object() ? field(*js, "name") : nullptr;
      if (!schema || !name)
        throw_invalid_param("response_format",
                            "response_format json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}");
      // OpenAI's rule for the name: 1-64 of a-z, A-Z, 0-9, '_' and '-' (it becomes a markdown heading).
      const std::string n = name->is_string() ? name->get<std::string>() : "";
      if (n.empty() || n.size() > 64 ||
          n.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") != std::string::npos)
        throw_invalid_param("response_format", "response_format.json_schema.name must be 1-64 characters of a-z, "
                                               "A-Z, 0-9, '_' and '-'");
      const Json* desc = field(*js, "description");
      if (desc && !desc->is_string())
        throw_invalid_param("response_format", "response_format.json_schema.description must be a string");
      g.json_schema_format = {n, desc ? desc->get<std::string>() : "", *schema};
      try {
        g.json_schema = JsonSchema::compile(nlohmann::json::parse(schema->dump()));
      } catch (const mxs::Error& e) {
        throw_invalid_param("response_format", e.what());
      }
    } else if (t != "text") {
      throw_invalid_param("response_format", "response_format must be {\"type\": \"text\"}, {\"type\": "
                                             "\"json_object\"} or {\"type\": \"json_schema\", ...}");
    }
  }
  if (const Json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      g.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 4)
        throw_invalid_param("stop", strfmt("stop has %zu sequences; at most 4 are allowed", stop->size()));
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string())
          throw_invalid_param("stop", strfmt("stop[%zu] must be a string, got %s", i, type_name((*stop)[i])));
        g.stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      throw_invalid_param("stop", strfmt("stop must be a string or an array of strings, got %s", type_name(*stop)));
    }
    std::erase_if(g.stop, [](const std::string& s) { return s.empty(); });
  }
  if (auto v = boolean(body, "stream")) g.stream = *v;
  if (const Json* so = field(body, "stream_options")) {
    if (!so->is_object())
      throw_invalid_param("stream_options", strfmt("stream_options must be an object, got %s", type_name(*so)));
    if (!g.stream) throw_invalid_param("stream_options", "stream_options is only allowed when stream is true");
    if (auto v = boolean(*so, "include_usage")) g.include_usage = *v;
  }
  if (auto v = string(body, "model")) (void)v;  // type check only; the caller reads it
}

// harmony's JSON readers throw mxs::Error("messages[2].role: ..."): the text before ": " is the param.
[[noreturn]] void rethrow_as_param(const mxs::Error& e, const char* fallback_param) {
  const std::string msg = e.what();
  const size_t colon = msg.find(": ");
  std::string param = fallback_param;
  if (colon != std::string::npos && colon < 120 &&
      msg.compare(0, std::string(fallback_param).size(), fallback_param) == 0)
    param = msg.substr(0, colon);
  throw_invalid_param(param, msg);
}

}  // namespace

void throw_invalid_param(const std::string& param, const std::string& message, const std::string& code) {
  ApiError e;
  e.status = 400;
  e.message = message;
  e.param = param;
  e.code = code;
  throw ApiException(std::move(e));
}

nlohmann::json error_json(const ApiError& e) {
  nlohmann::json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return {{"error", err}};
}

nlohmann::ordered_json parse_json_body(std::string_view body) {
  // Bound the nesting depth before parsing: a body of a million '[' must be a 400, not a deep recursion.
  constexpr int kMaxDepth = 128;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth) {
        ApiError err;
        err.message = strfmt("the request body nests JSON deeper than %d levels", kMaxDepth);
        err.code = "invalid_json";
        throw ApiException(std::move(err));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  Json j;
  try {
    j = Json::parse(body.begin(), body.end());
  } catch (const nlohmann::json::parse_error& e) {
    ApiError err;
    err.message = strfmt("the request body is not valid JSON (%s)", e.what());
    err.code = "invalid_json";
    throw ApiException(std::move(err));
  }
  if (!j.is_object()) {
    ApiError err;
    err.message = strfmt("the request body must be a JSON object, got %s", type_name(j));
    err.code = "invalid_json";
    throw ApiException(std::move(err));
  }
  return j;
}

ChatCompletionRequest parse_chat_request(const Json& body) {
  ChatCompletionRequest r;
  if (auto m = string(body, "model")) r.model = *m;
  const Json* messages = field(body, "messages");
  if (!messages) throw_invalid_param("messages", "messages is required: a non-empty array of {\"role\", \"content\"}");
  if (!messages->is_array() || messages->empty())
    throw_invalid_param("messages", "messages must be a non-empty array of {\"role\", \"content\"} objects");
  try {
    r.messages = harmony::chat_messages_from_json(*messages);
  } catch (const mxs::Error& e) {
    rethrow_as_param(e, "messages");
  }
  if (const Json* tools = field(body, "tools")) {
    try {
      r.tools = harmony::function_tools_from_json(*tools);
    } catch (const mxs::Error& e) {
      rethrow_as_param(e, "tools");
    }
  }
  if (const Json* tc = field(body, "tool_choice")) {
    if (tc->is_string()) {
      const std::string s = tc->get<std::string>();
      if (s == "auto")
        r.tool_choice = ToolChoice::kAuto;
      else if (s == "none")
        r.tool_choice = ToolChoice::kNone;
      else if (s == "required")
        r.tool_choice = ToolChoice::kRequired;
      else
        throw_invalid_param("tool_choice",
                            "tool_choice must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
                            "\"function\": {\"name\": ...}}, got '" +
                                s + "'");
    } else if (tc->is_object()) {
      const Json* f = field(*tc, "function");
      if (!f || !f->is_object() || !field(*f, "name") || !(*f)["name"].is_string())
        throw_invalid_param("tool_choice",
                            "tool_choice object must be {\"type\": \"function\", \"function\": {\"name\": ...}}");
      r.tool_choice = ToolChoice::kNamed;
      r.tool_choice_name = (*f)["name"].get<std::string>();
    } else {
      throw_invalid_param("tool_choice", strfmt("tool_choice must be a string or an object, got %s", type_name(*tc)));
    }
    if ((r.tool_choice == ToolChoice::kRequired || r.tool_choice == ToolChoice::kNamed) && r.tools.empty())
      throw_invalid_param("tool_choice", "tool_choice requires tools: the request defines none");
    if (r.tool_choice == ToolChoice::kNamed) {
      bool found = false;
      for (const auto& t : r.tools) found = found || t.name == r.tool_choice_name;
      if (!found)
        throw_invalid_param("tool_choice", "tool_choice names '" + r.tool_choice_name + "', which is not in tools");
    }
  }
  if (auto e = string(body, "reasoning_effort")) {
    auto effort = harmony::reasoning_effort_from_name(*e);
    if (!effort)
      throw_invalid_param("reasoning_effort",
                          "reasoning_effort must be \"low\", \"medium\" or \"high\", got '" + *e + "'");
    r.reasoning_effort = *effort;
  }
  parse_generation(body, r.gen);
  if (auto v = boolean(body, "logprobs")) r.gen.sampling.logprobs = *v;
  if (auto v = integer(body, "top_logprobs", 0, 20)) {
    if (!r.gen.sampling.logprobs && *v > 0)
      throw_invalid_param("top_logprobs", "top_logprobs requires logprobs to be true");
    r.gen.sampling.top_logprobs = int(*v);
  }
  if (auto v = boolean(body, "parallel_tool_calls")) (void)v;  // accepted; the model makes one call per turn
  return r;
}

CompletionRequest parse_completion_request(const Json& body) {
  CompletionRequest r;
  if (auto m = string(body, "model")) r.model = *m;
  const Json* p = field(body, "prompt");
  if (!p) throw_invalid_param("prompt", "prompt is required: a string or an array of token ids");
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
  } else if (p->is_array() && p->size() == 1 && (*p)[0].is_string()) {
    r.prompt = (*p)[0].get<std::string>();  // a batch of one
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    r.prompt_is_ids = true;
    for (size_t i = 0; i < p->size(); ++i) {
      const Json& t = (*p)[i];
      if (!t.is_number_integer() && !t.is_number_unsigned())
        throw_invalid_param("prompt", strfmt("prompt[%zu] must be a token id (integer), got %s", i, type_name(t)));
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id > std::numeric_limits<int32_t>::max())
        throw_invalid_param("prompt", strfmt("prompt[%zu] = %lld is not a token id", i, (long long)id));
      r.prompt_ids.push_back(int32_t(id));
    }
  } else if (p->is_array() && p->size() > 1) {
    throw_invalid_param("prompt", "a batch of prompts is not supported: send one prompt per request");
  } else {
    throw_invalid_param("prompt", strfmt("prompt must be a string or an array of token ids, got %s", type_name(*p)));
  }
  if (!r.prompt_is_ids && r.prompt.empty()) throw_invalid_param("prompt", "prompt must not be empty");
  parse_generation(body, r.gen);
  if (auto v = integer(body, "logprobs", 0, 5)) {  // legacy completions: an int, the number of alternatives
    r.gen.sampling.logprobs = true;
    r.gen.sampling.top_logprobs = int(*v);
  }
  if (auto v = boolean(body, "echo")) r.echo = *v;
  if (auto v = integer(body, "best_of", 1, 1)) (void)v;
  if (field(body, "suffix")) throw_invalid_param("suffix", "suffix is not supported");
  return r;
}

void check_generation_options(const GenerationOptions& g, int vocab) {
  for (int32_t t : g.stop_token_ids)
    if (t >= vocab)
      throw_invalid_param("stop_token_ids",
                          strfmt("stop_token_ids names token %d, outside the vocabulary [0, %d)", t, vocab));
  for (const LogitBias& e : g.sampling.logit_bias)
    if (e.token >= vocab)
      throw_invalid_param("logit_bias",
                          strfmt("logit_bias names token %d, outside the vocabulary [0, %d)", e.token, vocab));
  if (g.max_tokens > 0 && g.sampling.min_tokens > g.max_tokens)
    throw_invalid_param("min_tokens", strfmt("min_tokens = %d exceeds max_tokens = %d", g.sampling.min_tokens,
                                             g.max_tokens));
  // The object ends with a stop token, which both would hold back.
  if (g.structured() && g.ignore_eos)
    throw_invalid_param("ignore_eos", "ignore_eos cannot be combined with a JSON response_format");
  if (g.structured() && g.sampling.min_tokens > 0)
    throw_invalid_param("min_tokens", "min_tokens cannot be combined with a JSON response_format");
}

Request engine_request_of(const GenerationOptions& g) {
  Request r;
  r.sampling = g.sampling;
  r.max_tokens = g.max_tokens;
  r.ignore_stop_tokens = g.ignore_eos;
  for (int32_t t : g.stop_token_ids)
    if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), t) == r.stop_token_ids.end())
      r.stop_token_ids.push_back(t);
  return r;
}

}  // namespace mxs::server
