// OpenAI request schemas: JSON bodies of /v1/chat/completions and /v1/completions parsed and validated
// into native types, and the OpenAI error envelope {"error": {"message", "type", "param", "code"}}.
// Every problem a client can cause becomes an ApiException carrying the HTTP status and the `param` at fault;
// unknown fields are ignored (as vLLM does), known fields with a wrong type or value are a 400.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "engine/sampling_params.h"
#include "text/json_schema_acceptor.h"
#include "text/harmony.h"

namespace mxs::server {

struct ApiError {
  int status = 400;
  std::string type = "invalid_request_error";
  std::string message;
  std::string param;      // "" -> null
  std::string code;       // "" -> null
  int retry_after_s = 0;  // > 0: sent as a Retry-After header (429)
};

class ApiException : public std::runtime_error {
 public:
  explicit ApiException(ApiError e) : std::runtime_error(e.message), error(std::move(e)) {}
  ApiError error;
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void throw_invalid_param(const std::string& param, const std::string& message,
                                      const std::string& code = "");

nlohmann::json error_json(const ApiError& e);  // the envelope

// Request parsing helpers (shared by the endpoints' parsers): a value's kind for messages ("an object", "a string",
// "an integer"...), and a field that reads as absent when missing or null (OpenAI accepts null for every optional
// field).
const char* type_name(const nlohmann::ordered_json& v);
const nlohmann::ordered_json* field(const nlohmann::ordered_json& body, const char* key);

// Parses a request body; malformed JSON or a non-object is a 400 saying where parsing failed.
nlohmann::ordered_json parse_json_body(std::string_view body);

// Sampling and length options shared by chat and completions.
// The most choices (`n`) one request may ask for.
constexpr int kMaxChoices = 16;

struct GenerationOptions {
  SamplingParams sampling;  // seed stays 0 unless seed_given (the engine then draws one)
  bool seed_given = false;
  int max_tokens = -1;  // -1: up to the context length
  std::vector<std::string> stop;
  int n = 1;  // choices: 1..kMaxChoices, each its own engine request (choice_group.h)
  bool ignore_eos = false;  // vLLM's: the stop tokens do not end the completion (Request::ignore_stop_tokens)
  std::vector<int32_t> stop_token_ids;  // vLLM's: more stop tokens, besides the harmony ones
  bool json_object = false;  // response_format {"type": "json_object"} (engine/json_constraint.h)
  std::shared_ptr<const JsonSchema> json_schema;  // response_format {"type": "json_schema", ...}: compiled
  harmony::ResponseFormat json_schema_format;     // and as given (chat: told to the model, harmony.h)
  bool structured() const { return json_object || json_schema != nullptr; }
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// How tool_choice is honoured (see chat_handler.cpp for the enforcement).
enum class ToolChoice { kAuto, kNone, kRequired, kNamed };

struct ChatCompletionRequest {
  std::string model;  // "" when the client sent none (the served model is used)
  std::vector<harmony::ChatMessage> messages;
  std::vector<harmony::FunctionTool> tools;
  ToolChoice tool_choice = ToolChoice::kAuto;
  std::string tool_choice_name;  // kNamed
  harmony::ReasoningEffort reasoning_effort = harmony::ReasoningEffort::kMedium;
  GenerationOptions gen;
};

struct CompletionRequest {
  std::string model;
  std::string prompt;               // text prompt (encoded without harmony), or
  std::vector<int32_t> prompt_ids;  // a prompt given as token ids
  bool prompt_is_ids = false;
  bool echo = false;  // prepend the prompt to the returned text
  GenerationOptions gen;
};

ChatCompletionRequest parse_chat_request(const nlohmann::ordered_json& body);
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body);
// What parsing cannot check alone (400 naming the param): logit_bias ids below `vocab`, min_tokens <= max_tokens,
// and options json_object cannot be combined with (ignore_eos, min_tokens).
void check_generation_options(const GenerationOptions& g, int vocab);
// The engine request's sampling and length fields from the options (the prompt and stop strings are the caller's).
Request engine_request_of(const GenerationOptions& g);

}  // namespace mxs::server
