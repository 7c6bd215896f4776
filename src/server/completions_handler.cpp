// Legacy text completions (see completions_handler.h). Logprobs use the legacy shape:
// {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
#include "server/completions_handler.h"

#include "common/error.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "server/choice_group.h"
#include "server/generation_session.h"
#include "server/openai_format.h"
#include "server/openai_schema.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs::server {
namespace {

using nlohmann::json;

class CompletionSession : public GenerationSession {
 public:
  CompletionSession(ServingContext& ctx, std::shared_ptr<HttpExchange> ex, const CompletionRequest& r, std::string echo,
                    std::shared_ptr<ChoiceGroup> group, int choice)
      : GenerationSession(ctx, std::move(ex), r.gen.stream, std::move(group), choice),
        include_usage_(r.gen.include_usage),
        logprobs_(r.gen.sampling.logprobs),
        echo_(std::move(echo)) {}

 private:
  std::string id() const { return "cmpl-" + id_suffix_; }

  json chunk(const std::string& text, json finish_reason, json logprobs) const {
    json choice = {
        {"index", this->choice()}, {"text", text}, {"logprobs", std::move(logprobs)},
        {"finish_reason", std::move(finish_reason)}};
    json c = response_envelope(id(), "text_completion", created_, ctx_.model_name, json::array({choice}));
    if (include_usage_) c["usage"] = nullptr;
    return c;
  }

  void on_stream_start() override {
    if (!echo_.empty()) send_event(chunk(echo_, nullptr, nullptr));
  }

  // Appends the logprobs of this event's tokens to `lp` (legacy shape); offsets count from text_offset_.
  void add_logprobs(const TokenEvent& ev, json& lp) {
    const Tokenizer& tok = *ctx_.tokenizer;
    for (size_t k = 0; k < ev.token_ids.size() && k < ev.logprobs.size(); ++k) {
      const std::string t = token_text(tok, ev.token_ids[k]);
      lp["tokens"].push_back(t);
      lp["token_logprobs"].push_back(ev.logprobs[k]);
      json top = json::object();
      if (k < ev.top.size())
        for (const auto& alt : ev.top[k]) top[token_text(tok, alt.token)] = alt.logprob;
      lp["top_logprobs"].push_back(std::move(top));
      lp["text_offset"].push_back(text_offset_);
      text_offset_ += int(t.size());
    }
  }

  static json empty_logprobs() {
    return {{"tokens", json::array()},
            {"token_logprobs", json::array()},
            {"top_logprobs", json::array()},
            {"text_offset", json::array()}};
  }

  void on_event(TokenEvent& ev) override {
    json lp = logprobs_ ? empty_logprobs() : json(nullptr);
    if (logprobs_) add_logprobs(ev, lp);
    text_ += ev.text;
    if (logprobs_) {
      for (auto& x : lp["tokens"]) all_logprobs_["tokens"].push_back(x);
      for (auto& x : lp["token_logprobs"]) all_logprobs_["token_logprobs"].push_back(x);
      for (auto& x : lp["top_logprobs"]) all_logprobs_["top_logprobs"].push_back(x);
      for (auto& x : lp["text_offset"]) all_logprobs_["text_offset"].push_back(x);
    }
    if (!ev.finished()) {
      if (stream_ && (!ev.text.empty() || logprobs_)) send_event(chunk(ev.text, nullptr, std::move(lp)));
      return;
    }
    auto& m = *ctx_.metrics;
    if (ev.finish == FinishReason::kAbort && client_gone()) return;
    if (ev.finish != FinishReason::kStop && ev.finish != FinishReason::kLength) {
      fail_unfinished(ev);
      return;
    }
    const std::string finish_reason = ev.finish == FinishReason::kLength ? "length" : "stop";
    (finish_reason == "length" ? m.finished_length : m.finished_stop).inc();
    m.prompt_tokens.inc(ev.num_prompt_tokens);
    m.completion_tokens.inc(ev.num_output_tokens);
    m.observe_timings(ev.timings, ev.timings.token_times.empty() ? -1 : 0);
    const json usage = usage_json(ev.num_prompt_tokens, ev.num_output_tokens, 0, ev.num_cached_tokens);
    if (stream_) {
      send_event(chunk(ev.text, finish_reason, std::move(lp)));
      finish_stream(include_usage_ ? with_usage(response_envelope(id(), "text_completion", created_,
                                                                  ctx_.model_name, json::array()),
                                                usage)
                                   : json(nullptr));
      return;
    }
    json choice = {{"index", this->choice()},
                   {"text", echo_ + text_},
                   {"finish_reason", finish_reason},
                   {"logprobs", logprobs_ ? all_logprobs_ : json(nullptr)}};
    respond_json(with_usage(
        response_envelope(id(), "text_completion", created_, ctx_.model_name, json::array({std::move(choice)})),
        usage));
  }

  const bool include_usage_;
  const bool logprobs_;
  const std::string echo_;
  std::string text_;
  int text_offset_ = 0;
  json all_logprobs_ = empty_logprobs();
};

}  // namespace

void handle_completions(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  if (!ctx.ready()) throw ApiException(model_loading_error());
  const nlohmann::ordered_json body = parse_json_body(request.body);
  CompletionRequest r = parse_completion_request(body);
  check_model_name(ctx.model_name, r.model);
  ctx.metrics->completion_requests.inc();

  const Tokenizer& tok = *ctx.tokenizer;
  std::vector<int32_t> prompt = r.prompt_is_ids ? r.prompt_ids : tok.encode_with_specials(r.prompt);
  if (r.prompt_is_ids) {
    for (size_t i = 0; i < prompt.size(); ++i)
      if (prompt[i] >= tok.vocab_size() || tok.token_bytes(prompt[i]).empty())
        throw_invalid_param("prompt", strfmt("prompt[%zu] = %d is not a token id of this tokenizer", i, prompt[i]));
  }
  if (prompt.empty()) throw_invalid_param("prompt", "the prompt encodes to no tokens");
  check_context_length(int(prompt.size()), r.gen.max_tokens, ctx.max_length, "prompt");
  std::string echo;
  if (r.echo) echo = r.prompt_is_ids ? tok.decode(prompt) : r.prompt;

  check_generation_options(r.gen, ctx.tokenizer->vocab_size());
  Request req = engine_request_of(r.gen);
  req.prompt = std::move(prompt);
  // json_object / json_schema: the completion is one JSON object from its first token, then a stop token.
  if (r.gen.json_schema)
    req.constraint = json_schema_constraint(ctx.json_masks, r.gen.json_schema, /*harmony=*/false,
                                            {tok::kReturn, tok::kEndOfText});
  else if (r.gen.json_object)
    req.constraint = json_object_constraint(ctx.json_masks, /*harmony=*/false, {tok::kReturn, tok::kEndOfText});
  req.stop_strings = r.gen.stop;
  // The maker outlives this call (choices 1..n-1 start later): it holds copies.
  const ChoiceGroup::MakeSession make = [&ctx, r, echo](std::shared_ptr<HttpExchange> ex,
                                                        std::shared_ptr<ChoiceGroup> group, int choice) {
    return std::make_shared<CompletionSession>(ctx, std::move(ex), r, echo, std::move(group), choice);
  };
  start_choices(ctx, std::move(exchange), r.gen, req, make);
}

}  // namespace mxs::server
