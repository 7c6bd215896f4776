// Chat completions over harmony (see chat_handler.h).
//
// tool_choice, as enforced here (and every call's arguments are held to its tool's parameters: ToolCallConstraint):
//   auto      tools are rendered into the developer message; the model decides.
//   none      tools are NOT rendered (the model is not told about them) and any call it still emits is
//             dropped from the response (finish_reason "stop", never "tool_calls").
//   named     the assistant turn is prefilled with the call header
//             `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>`, so the first thing
//             generated is that function's JSON arguments: the call is guaranteed, and its arguments are an
//             object of the function's parameters (any object where the json_schema subset cannot hold them).
//   required  prefilled up to `<|channel|>commentary to=functions.`: the first message is a function call;
//             the model picks the name, held to one of `tools` (then ` <|constrain|>json<|message|>`).
// The prefilled tokens are part of the prompt (usage.prompt_tokens) and are fed to the output parser first.
//
// Stop strings apply to the answer (content) only, in the server: the engine's own stop strings would match
// harmony header words and reasoning. A match cancels the engine request; finish_reason is "stop".
// logprobs: one entry per generated token whose text went to content (reasoning and header tokens have none).
// reasoning_tokens: tokens whose text went to reasoning plus the text-less tokens that directly follow them.
#include "server/chat_handler.h"

#include "common/error.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "engine/tool_call_constraint.h"
#include "server/choice_group.h"
#include "server/generation_session.h"
#include "server/openai_format.h"
#include "server/openai_schema.h"
#include "server/stop_strings.h"
#include "text/harmony.h"
#include "text/harmony_parser.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs::server {
namespace {

using nlohmann::json;

class ChatSession : public GenerationSession {
 public:
  ChatSession(ServingContext& ctx, std::shared_ptr<HttpExchange> ex, const ChatCompletionRequest& r,
              const std::vector<int32_t>& prefill, std::shared_ptr<ChoiceGroup> group, int choice)
      : GenerationSession(ctx, std::move(ex), r.gen.stream, std::move(group), choice),
        parser_(*ctx.tokenizer),
        stop_(r.gen.stop),
        include_usage_(r.gen.include_usage),
        drop_tool_calls_(r.tool_choice == ToolChoice::kNone),
        logprobs_(r.gen.sampling.logprobs) {
    // The prefilled call header: no text, but it opens the call (id + name) that the arguments continue.
    for (int32_t id : prefill) route(parser_.feed(id), -1, nullptr, 0);
  }

 private:
  enum class Route { kNone, kReasoning, kAnswer };

  std::string id() const { return "chatcmpl-" + id_suffix_; }

  json chunk(json delta, json finish_reason = nullptr, json logprobs = nullptr) const {
    json choice = {{"index", this->choice()},
                   {"delta", std::move(delta)},
                   {"logprobs", std::move(logprobs)},
                   {"finish_reason", std::move(finish_reason)}};
    json c = response_envelope(id(), "chat.completion.chunk", created_, ctx_.model_name, json::array({choice}));
    if (include_usage_) c["usage"] = nullptr;
    return c;
  }

  void on_stream_start() override { send_event(chunk({{"role", "assistant"}, {"content", ""}})); }

  // Routes one parser delta (from token `index` of the generation) into the response and the pending chunk.
  void route(const harmony::ChatDelta& d, int index, const TokenEvent* ev, size_t k) {
    Route route = Route::kNone;
    if (!d.reasoning.empty()) {
      reasoning_ += d.reasoning;
      pending_reasoning_ += d.reasoning;
      route = Route::kReasoning;
    }
    if (!d.content.empty() && !stop_.matched()) {
      const std::string text = stop_.feed(d.content);
      content_ += text;
      pending_content_ += text;
      if (!text.empty()) route = Route::kAnswer;
      if (stop_.matched()) {
        stopped_by_string_ = true;
        cancel();
      }
      if (logprobs_ && ev && k < ev->logprobs.size()) {
        static const std::vector<TokenLogprob> kNoTop;
        logprob_entries_.push_back(chat_logprob_json(*ctx_.tokenizer, ev->token_ids[k], ev->logprobs[k],
                                                     k < ev->top.size() ? ev->top[k] : kNoTop));
        pending_logprobs_.push_back(logprob_entries_.back());
      }
    }
    if (!d.tool_calls.empty() && !drop_tool_calls_ && !stopped_by_string_) {
      for (const auto& tc : d.tool_calls) {
        if (size_t(tc.index) >= tool_calls_.size()) tool_calls_.resize(size_t(tc.index) + 1);
        auto& call = tool_calls_[size_t(tc.index)];
        if (!tc.id.empty()) call.id = tc.id;
        if (!tc.name.empty()) call.name = tc.name;
        call.arguments += tc.arguments;
        pending_tools_.push_back(tc);
      }
      route = Route::kAnswer;
    }
    if (route == Route::kAnswer && first_answer_index_ < 0) first_answer_index_ = index;
    if (route != Route::kNone) last_route_ = route;
    // Text-less tokens (headers, <|end|>, partial UTF-8) count with the text route they follow.
    const Route counted = route == Route::kNone ? last_route_ : route;
    if (index >= 0 && counted == Route::kReasoning) ++reasoning_tokens_;
  }

  json pending_delta() {
    json delta = json::object();
    if (!pending_reasoning_.empty()) {
      delta["reasoning_content"] = pending_reasoning_;
      delta["reasoning"] = pending_reasoning_;
    }
    if (!pending_content_.empty()) delta["content"] = pending_content_;
    if (!pending_tools_.empty()) {
      json calls = json::array();
      for (const auto& tc : pending_tools_) {
        // Consecutive argument pieces of the same call merge into one entry.
        if (!calls.empty() && calls.back()["index"] == tc.index && tc.id.empty() && tc.name.empty()) {
          calls.back()["function"]["arguments"] =
              calls.back()["function"]["arguments"].get<std::string>() + tc.arguments;
          continue;
        }
        json c = {{"index", tc.index}, {"function", {{"arguments", tc.arguments}}}};
        if (!tc.id.empty()) {
          c["id"] = tc.id;
          c["type"] = "function";
        }
        if (!tc.name.empty()) c["function"]["name"] = tc.name;
        calls.push_back(std::move(c));
      }
      delta["tool_calls"] = std::move(calls);
    }
    pending_reasoning_.clear();
    pending_content_.clear();
    pending_tools_.clear();
    return delta;
  }

  json pending_logprobs() {
    if (!logprobs_ || pending_logprobs_.empty()) return nullptr;
    json lp = {{"content", std::move(pending_logprobs_)}};
    pending_logprobs_ = json::array();
    return lp;
  }

  void on_event(TokenEvent& ev) override {
    for (size_t k = 0; k < ev.token_ids.size(); ++k) {
      const int index = generated_++;
      if (stopped_by_string_) continue;  // generated before the cancel took effect: not part of the answer
      route(parser_.feed(ev.token_ids[k]), index, &ev, k);
    }
    if (!ev.finished()) {
      if (stream_) {
        json delta = pending_delta();
        json lp = pending_logprobs();
        if (!delta.empty() || !lp.is_null()) send_event(chunk(std::move(delta), nullptr, std::move(lp)));
      }
      return;
    }
    finish(ev);
  }

  void finish(const TokenEvent& ev) {
    std::string finish_reason;
    if (stopped_by_string_) {
      finish_reason = "stop";
    } else if (ev.finish == FinishReason::kStop || ev.finish == FinishReason::kLength) {
      const harmony::ChatDelta tail = parser_.finish(ev.finish == FinishReason::kLength);
      route(tail, -1, nullptr, 0);
      finish_reason = harmony::finish_reason_name(parser_.result().finish_reason);
      if (drop_tool_calls_ && finish_reason == "tool_calls") finish_reason = "stop";
    } else if (ev.finish == FinishReason::kAbort && client_gone()) {
      return;  // nobody to answer; the cancellation is already counted
    } else {
      fail_unfinished(ev);
      return;
    }
    const std::string tail = stop_.flush();
    content_ += tail;
    pending_content_ += tail;

    ctx_.metrics->count_harmony_finish(finish_reason, ev, reasoning_tokens_, parser_.result().slips,
                                       first_answer_index_);
    const json usage = usage_json(ev.num_prompt_tokens, ev.num_output_tokens, reasoning_tokens_, ev.num_cached_tokens);

    if (stream_) {
      json delta = pending_delta();
      json lp = pending_logprobs();
      if (!delta.empty() || !lp.is_null()) send_event(chunk(std::move(delta), nullptr, std::move(lp)));
      send_event(chunk(json::object(), finish_reason));
      finish_stream(include_usage_ ? with_usage(response_envelope(id(), "chat.completion.chunk", created_,
                                                                  ctx_.model_name, json::array()),
                                                usage)
                                   : json(nullptr));
      return;
    }
    json message = {{"role", "assistant"}};
    message["content"] = content_.empty() && !tool_calls_.empty() ? json(nullptr) : json(content_);
    message["reasoning_content"] = reasoning_.empty() ? json(nullptr) : json(reasoning_);
    message["reasoning"] = message["reasoning_content"];
    if (!tool_calls_.empty()) {
      json calls = json::array();
      for (const auto& c : tool_calls_)
        calls.push_back(
            {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
      message["tool_calls"] = std::move(calls);
    }
    json choice = {{"index", this->choice()},
                   {"message", std::move(message)},
                   {"finish_reason", finish_reason},
                   {"logprobs", logprobs_ ? json{{"content", logprob_entries_}} : json(nullptr)}};
    respond_json(with_usage(
        response_envelope(id(), "chat.completion", created_, ctx_.model_name, json::array({std::move(choice)})),
        usage));
  }

  harmony::ChatOutputParser parser_;
  StopStringFilter stop_;
  const bool include_usage_;
  const bool drop_tool_calls_;
  const bool logprobs_;

  int generated_ = 0;
  int reasoning_tokens_ = 0;
  int first_answer_index_ = -1;
  Route last_route_ = Route::kNone;
  bool stopped_by_string_ = false;
  std::string content_, reasoning_;
  std::vector<harmony::ToolCall> tool_calls_;
  json logprob_entries_ = json::array();
  // Not yet streamed.
  std::string pending_content_, pending_reasoning_;
  std::vector<harmony::ToolCallDelta> pending_tools_;
  json pending_logprobs_ = json::array();
};

}  // namespace

namespace {

// Each tool's arguments as the json_schema subset compiles its parameters (none: `{}`; a schema the subset cannot hold:
// any object, since a tool's schema is no reason to refuse the request; a top level without "type": an object).
std::shared_ptr<const std::vector<ToolArguments>> tool_arguments(const std::vector<harmony::FunctionTool>& tools) {
  auto out = std::make_shared<std::vector<ToolArguments>>();
  for (const harmony::FunctionTool& t : tools) {
    nlohmann::json params = t.parameters.is_object() ? nlohmann::json::parse(t.parameters.dump())
                                                     : nlohmann::json::object();
    if (!params.contains("type")) params["type"] = "object";
    ToolArguments a;
    a.name = t.name;
    try {
      a.schema = JsonSchema::compile(params);
    } catch (const mxs::Error&) {
      a.schema = nullptr;
    }
    out->push_back(std::move(a));
  }
  return out;
}

}  // namespace

ChatPlan plan_chat(ServingContext& ctx, const ChatCompletionRequest& r) {
  harmony::RenderOptions options;
  options.reasoning_effort = r.reasoning_effort;
  if (r.gen.json_schema) options.response_format = r.gen.json_schema_format;
  static const std::vector<harmony::FunctionTool> kNoTools;
  std::vector<int32_t> prompt;
  try {
    prompt = harmony::render_prompt_ids(*ctx.tokenizer, r.messages,
                                        r.tool_choice == ToolChoice::kNone ? kNoTools : r.tools, options);
  } catch (const mxs::Error& e) {
    throw_invalid_param("messages", e.what());
  }
  harmony::Prompt prefill;
  std::string prefill_header;  // the prefill's header text, specials as spaces (ToolCallConstraint's start)
  if (r.tool_choice == ToolChoice::kNamed || r.tool_choice == ToolChoice::kRequired) {
    prefill.add_special(tok::kChannel);
    if (r.tool_choice == ToolChoice::kNamed) {
      prefill.add_text("commentary to=functions." + r.tool_choice_name);
      prefill.add_text(" ");
      prefill.add_special(tok::kConstrain);
      prefill.add_text("json");
      prefill.add_special(tok::kMessage);
      prefill_header = " commentary to=functions." + r.tool_choice_name + "  json";
    } else {
      prefill.add_text("commentary to=functions.");
      prefill_header = " commentary to=functions.";
    }
  }
  ChatPlan plan;
  plan.prefill_ids = prefill.to_ids(*ctx.tokenizer);
  prompt.insert(prompt.end(), plan.prefill_ids.begin(), plan.prefill_ids.end());
  check_context_length(int(prompt.size()), r.gen.max_tokens, ctx.max_length, "messages");

  // stop strings: matched on content by the session (see the top of this file), not by the engine.
  check_generation_options(r.gen, ctx.tokenizer->vocab_size());
  plan.request = engine_request_of(r.gen);
  plan.request.prompt = std::move(prompt);
  // json_object / json_schema: the reasoning stays free; the final answer is one JSON object, then <|return|>.
  // Otherwise, with tools: every call's arguments are an object of its tool's parameters (tool_call_constraint.h).
  if (r.gen.json_schema)
    plan.request.constraint =
        json_schema_constraint(ctx.json_masks, r.gen.json_schema, /*harmony=*/true, {tok::kReturn});
  else if (r.gen.json_object)
    plan.request.constraint = json_object_constraint(ctx.json_masks, /*harmony=*/true, {tok::kReturn});
  else if (!r.tools.empty() && r.tool_choice != ToolChoice::kNone && ctx.json_masks)
    plan.request.constraint = tool_call_constraint(
        ctx.json_masks, tool_arguments(r.tools), prefill_header,
        r.tool_choice == ToolChoice::kNamed      ? ToolCallConstraint::Start::kArguments
        : r.tool_choice == ToolChoice::kRequired ? ToolCallConstraint::Start::kRequired
                                                 : ToolCallConstraint::Start::kAuto);
  return plan;
}

void handle_chat_completions(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  if (!ctx.ready()) throw ApiException(model_loading_error());
  const nlohmann::ordered_json body = parse_json_body(request.body);
  ChatCompletionRequest r = parse_chat_request(body);
  check_model_name(ctx.model_name, r.model);
  ctx.metrics->chat_requests.inc();
  ChatPlan plan = plan_chat(ctx, r);
  const std::vector<int32_t>& prefill_ids = plan.prefill_ids;
  Request& req = plan.request;
  // The maker outlives this call (choices 1..n-1 start later): it holds copies.
  const ChoiceGroup::MakeSession make = [&ctx, r, prefill_ids](std::shared_ptr<HttpExchange> ex,
                                                               std::shared_ptr<ChoiceGroup> group, int choice) {
    return std::make_shared<ChatSession>(ctx, std::move(ex), r, prefill_ids, std::move(group), choice);
  };
  start_choices(ctx, std::move(exchange), r.gen, req, make);
}

}  // namespace mxs::server
