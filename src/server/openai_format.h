// Response-side JSON shared by the chat and completions endpoints: usage objects, logprob entries and the
// context-length check with OpenAI's wording.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/model_runner.h"
#include "text/tokenizer.h"

namespace mxs::server {

// The fields every OpenAI response and stream chunk shares: id, object ("chat.completion",
// "chat.completion.chunk", "text_completion"), created (unix seconds), model, system_fingerprint, choices.
nlohmann::json response_envelope(const std::string& id, const char* object, int64_t created,
                                 const std::string& model, nlohmann::json choices);
// `response` with its "usage" field set.
inline nlohmann::json with_usage(nlohmann::json response, nlohmann::json usage) {
  response["usage"] = std::move(usage);
  return response;
}

nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int reasoning_tokens, int cached_tokens);

// Chat logprob entry: {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}.
nlohmann::json chat_logprob_json(const Tokenizer& tok, int32_t token, float logprob,
                                 const std::vector<TokenLogprob>& top);

// Throws a 400 (code context_length_exceeded) naming both numbers when the prompt leaves no room or
// prompt + max_tokens exceeds max_length. `what` names the prompt ("messages", "prompt").
void check_context_length(int prompt_tokens, int max_tokens, int max_length, const char* what);

// 404 model_not_found unless `requested` is "" or the served name.
void check_model_name(const std::string& served, const std::string& requested);
// 503 while the model loads.
struct ApiError;
ApiError model_loading_error();

// The printable text of one token for logprobs (its raw bytes, invalid UTF-8 replaced when serialised).
std::string token_text(const Tokenizer& tok, int32_t token);

}  // namespace mxs::server
