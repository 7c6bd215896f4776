// Shared OpenAI response pieces (see openai_format.h).
#include "server/openai_format.h"

#include "common/error.h"
#include "server/openai_schema.h"

namespace mxs::server {

nlohmann::json response_envelope(const std::string& id, const char* object, int64_t created,
                                 const std::string& model, nlohmann::json choices) {
  return {{"id", id},
          {"object", object},
          {"created", created},
          {"model", model},
          {"system_fingerprint", nullptr},
          {"choices", std::move(choices)}};
}

nlohmann::json usage_json(int prompt_tokens, int completion_tokens, int reasoning_tokens, int cached_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", cached_tokens}}},
          {"completion_tokens_details", {{"reasoning_tokens", reasoning_tokens}}}};
}

std::string token_text(const Tokenizer& tok, int32_t token) {
  return std::string(tok.token_bytes(token));
}

nlohmann::json chat_logprob_json(const Tokenizer& tok, int32_t token, float logprob,
                                 const std::vector<TokenLogprob>& top) {
  auto entry = [&](int32_t id, float lp) {
    const std::string text = token_text(tok, id);
    std::vector<int> bytes(text.begin(), text.end());
    for (int& b : bytes) b &= 0xFF;
    return nlohmann::json{{"token", text}, {"logprob", lp}, {"bytes", bytes}};
  };
  nlohmann::json j = entry(token, logprob);
  nlohmann::json alts = nlohmann::json::array();
  for (const auto& t : top) alts.push_back(entry(t.token, t.logprob));
  j["top_logprobs"] = std::move(alts);
  return j;
}

void check_context_length(int prompt_tokens, int max_tokens, int max_length, const char* what) {
  if (prompt_tokens >= max_length) {
    throw_invalid_param(what,
                        strfmt("this model's maximum context length is %d tokens, but the %s has %d tokens: "
                               "no room to generate",
                               max_length, what, prompt_tokens),
                        "context_length_exceeded");
  }
  if (max_tokens > 0 && int64_t(prompt_tokens) + max_tokens > max_length) {
    throw_invalid_param("max_tokens",
                        strfmt("this model's maximum context length is %d tokens, but %d prompt tokens + "
                               "max_tokens %d = %lld tokens were requested",
                               max_length, prompt_tokens, max_tokens, (long long)prompt_tokens + max_tokens),
                        "context_length_exceeded");
  }
}

void check_model_name(const std::string& served, const std::string& requested) {
  if (requested.empty() || requested == served) return;
  ApiError e;
  e.status = 404;
  e.code = "model_not_found";
  e.param = "model";
  e.message = strfmt("the model '%s' does not exist: this server serves '%s'", requested.c_str(), served.c_str());
  throw ApiException(std::move(e));
}

ApiError model_loading_error() {
  ApiError e;
  e.status = 503;
  e.type = "server_error";
  e.code = "model_loading";
  e.message = "the model is still loading: retry when GET /health returns 200";
  return e;
}

}  // namespace mxs::server
