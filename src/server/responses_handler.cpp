// Responses API sessions (see responses_handler.h).
#include "server/responses_handler.h"

#include <optional>
#include <string>
#include <vector>

#include "server/chat_handler.h"
#include "server/generation_session.h"
#include "server/openai_format.h"
#include "server/responses_schema.h"
#include "server/router.h"
#include "text/harmony_parser.h"

namespace mxs::server {
namespace {

using nlohmann::json;

class ResponsesSession : public GenerationSession {
 public:
  ResponsesSession(ServingContext& ctx, std::shared_ptr<HttpExchange> ex, const ResponsesRequest& r,
                   const std::vector<int32_t>& prefill)
      : GenerationSession(ctx, std::move(ex), r.chat.gen.stream),
        parser_(*ctx.tokenizer),
        echo_(json::parse(r.echo.dump())),
        drop_tool_calls_(r.chat.tool_choice == ToolChoice::kNone),
        store_(r.store),
        conversation_(r.store ? r.conversation : nlohmann::ordered_json()) {
    // The prefilled call header opens the call (id + name) that the arguments continue; it emits nothing yet.
    for (int32_t id : prefill) pending_prefill_.push_back(parser_.feed(id));
  }

 private:
  enum class Kind { kReasoning, kMessage, kCall };
  struct Item {
    Kind kind;
    std::string id;
    std::string text;  // reasoning / message text, or the call's arguments
    std::string call_id, name;
    int call_index = -1;  // the output parser's index of the call
    bool truncated = false;  // cut by max_output_tokens
  };

  std::string id() const { return "resp_" + id_suffix_; }

  json item_json(const Item& it, bool done) const {
    const char* status = !done ? "in_progress" : it.truncated ? "incomplete" : "completed";
    switch (it.kind) {
      case Kind::kReasoning:
        return {{"type", "reasoning"},
                {"id", it.id},
                {"summary", json::array()},
                {"content", done ? json::array({{{"type", "reasoning_text"}, {"text", it.text}}}) : json::array()}};
      case Kind::kMessage:
        return {{"type", "message"},
                {"id", it.id},
                {"role", "assistant"},
                {"status", status},
                {"content", done ? json::array({text_part(it.text)}) : json::array()}};
      case Kind::kCall:
        return {{"type", "function_call"}, {"id", it.id},
                {"call_id", it.call_id},   {"name", it.name},
                {"arguments", done ? it.text : ""},
                {"status", status}};
    }
    return nullptr;
  }
  static json text_part(const std::string& text) {
    return {{"type", "output_text"}, {"text", text}, {"annotations", json::array()}, {"logprobs", json::array()}};
  }
  static json reasoning_part(const std::string& text) { return {{"type", "reasoning_text"}, {"text", text}}; }

  // The response object; `output`: the items so far (all closed once generation has ended).
  json response(const char* status, json usage = nullptr, json incomplete = nullptr) const {
    json out = json::array();
    for (const Item& it : items_) out.push_back(item_json(it, true));
    json r = {{"id", id()},
              {"object", "response"},
              {"created_at", created_},
              {"status", status},
              {"error", nullptr},
              {"incomplete_details", std::move(incomplete)},
              {"model", ctx_.model_name},
              {"output", std::move(out)},
              {"usage", std::move(usage)}};
    for (auto it = echo_.begin(); it != echo_.end(); ++it) r[it.key()] = it.value();
    return r;
  }

  // A typed stream event (nothing when not streaming: the items are still kept for the response).
  void emit(const char* type, json data) {
    if (!stream_) return;
    data["type"] = type;
    data["sequence_number"] = sequence_++;
    send_named_event(type, data);
  }
  int output_index() const { return int(items_.size()) - 1; }

  void open_item(Kind kind, std::string call_id = "", std::string name = "", int call_index = -1) {
    close_item();
    const char* prefix = kind == Kind::kReasoning ? "rs_" : kind == Kind::kMessage ? "msg_" : "fc_";
    items_.push_back({kind, prefix + random_id(), "", std::move(call_id), std::move(name), call_index});
    open_ = true;
    const Item& it = items_.back();
    emit("response.output_item.added", {{"output_index", output_index()}, {"item", item_json(it, false)}});
    if (kind != Kind::kCall)
      emit("response.content_part.added",
           {{"item_id", it.id}, {"output_index", output_index()}, {"content_index", 0},
            {"part", kind == Kind::kMessage ? text_part("") : reasoning_part("")}});
  }

  void close_item() {
    if (!open_) return;
    open_ = false;
    const Item& it = items_.back();
    const json where = {{"item_id", it.id}, {"output_index", output_index()}};
    if (it.kind == Kind::kCall) {
      json d = where;
      d["arguments"] = it.text;
      d["name"] = it.name;
      emit("response.function_call_arguments.done", std::move(d));
    } else {
      const bool msg = it.kind == Kind::kMessage;
      json d = where;
      d["content_index"] = 0;
      d["text"] = it.text;
      if (msg) d["logprobs"] = json::array();
      emit(msg ? "response.output_text.done" : "response.reasoning_text.done", std::move(d));
      json p = where;
      p["content_index"] = 0;
      p["part"] = msg ? text_part(it.text) : reasoning_part(it.text);
      emit("response.content_part.done", std::move(p));
    }
    emit("response.output_item.done", {{"output_index", output_index()}, {"item", item_json(it, true)}});
  }

  void add_text(Kind kind, const std::string& text) {
    if (!open_ || items_.back().kind != kind) open_item(kind);
    Item& it = items_.back();
    it.text += text;
    json d = {{"item_id", it.id}, {"output_index", output_index()}, {"content_index", 0}, {"delta", text}};
    if (kind == Kind::kMessage) d["logprobs"] = json::array();
    emit(kind == Kind::kMessage ? "response.output_text.delta" : "response.reasoning_text.delta", std::move(d));
  }

  void add_call(const harmony::ToolCallDelta& tc) {
    if (!open_ || items_.back().kind != Kind::kCall || items_.back().call_index != tc.index)
      open_item(Kind::kCall, tc.id, tc.name, tc.index);
    Item& it = items_.back();
    it.text += tc.arguments;
    if (!tc.arguments.empty())
      emit("response.function_call_arguments.delta",
           {{"item_id", it.id}, {"output_index", output_index()}, {"delta", tc.arguments}});
  }

  // One parser delta from token `index` of the generation (-1: not a generated token).
  void route(const harmony::ChatDelta& d, int index) {
    bool reasoning = false, answer = false;
    if (!d.reasoning.empty()) add_text(Kind::kReasoning, d.reasoning), reasoning = true;
    if (!d.content.empty()) add_text(Kind::kMessage, d.content), answer = true;
    if (!drop_tool_calls_)
      for (const auto& tc : d.tool_calls) add_call(tc), answer = true;
    if (answer && first_answer_index_ < 0) first_answer_index_ = index;
    if (reasoning || answer) last_was_reasoning_ = reasoning && !answer;
    // Text-less tokens (headers, <|end|>) count with the text they follow, as on the chat endpoint.
    if (index >= 0 && last_was_reasoning_) ++reasoning_tokens_;
  }

  void on_stream_start() override {
    emit("response.created", {{"response", response("in_progress")}});
    emit("response.in_progress", {{"response", response("in_progress")}});
  }

  void on_event(TokenEvent& ev) override {
    for (const harmony::ChatDelta& d : pending_prefill_) route(d, -1);
    pending_prefill_.clear();
    for (int32_t t : ev.token_ids) route(parser_.feed(t), generated_++);
    if (ev.finished()) finish(ev);
  }

  void finish(const TokenEvent& ev) {
    if (ev.finish == FinishReason::kAbort && client_gone()) return;  // nobody to answer
    if (ev.finish != FinishReason::kStop && ev.finish != FinishReason::kLength) {
      fail_unfinished(ev);
      return;
    }
    route(parser_.finish(ev.finish == FinishReason::kLength), -1);
    if (open_ && ev.finish == FinishReason::kLength) items_.back().truncated = true;
    close_item();
    const harmony::FinishReason why = parser_.result().finish_reason;
    const bool calls = why == harmony::FinishReason::kToolCalls && !drop_tool_calls_;
    ctx_.metrics->count_harmony_finish(why == harmony::FinishReason::kLength ? "length" : calls ? "tool_calls" : "stop",
                                       ev, reasoning_tokens_, parser_.result().slips, first_answer_index_);
    const json usage = {
        {"input_tokens", ev.num_prompt_tokens},
        {"input_tokens_details", {{"cached_tokens", ev.num_cached_tokens}}},
        {"output_tokens", ev.num_output_tokens},
        {"output_tokens_details", {{"reasoning_tokens", reasoning_tokens_}}},
        {"total_tokens", ev.num_prompt_tokens + ev.num_output_tokens}};
    const bool incomplete = why == harmony::FinishReason::kLength;
    json body = incomplete ? response("incomplete", usage, {{"reason", "max_output_tokens"}})
                           : response("completed", usage);
    if (store_ && ctx_.responses) {  // what a follow-up continues: the conversation, then this response's output
      nlohmann::ordered_json conversation = std::move(conversation_);
      for (const json& item : body["output"]) conversation.push_back(nlohmann::ordered_json::parse(item.dump()));
      ctx_.responses->put(id(), {body, std::move(conversation)});
    }
    if (!stream_) {
      respond_json(std::move(body));
      return;
    }
    emit(incomplete ? "response.incomplete" : "response.completed", {{"response", std::move(body)}});
    end_stream();
  }

  // After the headers: an `error` event (its data also carries the usual {"error": ...} envelope, which the
  // OpenAI clients raise as an API error), then the end of the stream.
  void stream_failed(const ApiError& error) override {
    json data = error_json(error);
    data["code"] = error.code.empty() ? json(nullptr) : json(error.code);
    data["message"] = error.message;
    data["param"] = error.param.empty() ? json(nullptr) : json(error.param);
    emit("error", std::move(data));
    end_stream();
  }

  harmony::ChatOutputParser parser_;
  const json echo_;
  const bool drop_tool_calls_;
  const bool store_;
  nlohmann::ordered_json conversation_;  // (store_) the input items, for the stored entry
  std::vector<harmony::ChatDelta> pending_prefill_;
  std::vector<Item> items_;
  bool open_ = false;  // items_.back() is still being written
  int sequence_ = 0;
  int generated_ = 0;
  int reasoning_tokens_ = 0;
  int first_answer_index_ = -1;
  bool last_was_reasoning_ = false;
};

}  // namespace

void handle_responses(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  if (!ctx.ready()) throw ApiException(model_loading_error());
  const ResponsesRequest r = parse_responses_request(parse_json_body(request.body), ctx.responses);
  check_model_name(ctx.model_name, r.chat.model);
  ctx.metrics->responses_requests.inc();
  ChatPlan plan;
  try {
    plan = plan_chat(ctx, r.chat);
  } catch (ApiException& e) {  // (plan_chat names the chat's parameters)
    rename_chat_params(e.error);
    throw;
  }
  if (!r.chat.gen.seed_given) plan.request.sampling.seed = random_seed();
  std::make_shared<ResponsesSession>(ctx, std::move(exchange), r, plan.prefill_ids)->start(std::move(plan.request));
}

void handle_stored_response(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange) {
  const std::string id = request.path.substr(request.path.rfind('/') + 1);
  const bool remove = request.method == "DELETE";
  std::optional<ResponseStore::Entry> entry;  // (one lookup: another request may drop the entry meanwhile)
  const bool found = ctx.responses && (remove ? ctx.responses->erase(id) : (entry = ctx.responses->get(id)).has_value());
  if (!found) {
    ApiError e;
    e.status = 404;
    e.message = "response with id '" + id + "' not found";
    e.code = "not_found";
    throw ApiException(std::move(e));
  }
  if (remove)
    exchange->respond(json_response(200, {{"id", id}, {"object", "response.deleted"}, {"deleted", true}}));
  else
    exchange->respond(json_response(200, entry->response));
}

}  // namespace mxs::server
