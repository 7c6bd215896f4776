// POST /v1/responses: OpenAI's Responses API over the chat path (responses_schema.h translates the request; the
// prompt, tool_choice prefill and structured-output constraint are the chat's, chat_handler.h plan_chat). The harmony
// output becomes output items, in the order the model wrote them:
//   analysis text        -> {type: "reasoning", id: "rs_...", summary: [], content: [{type: "reasoning_text", text}]}
//   final / preamble     -> {type: "message", id: "msg_...", role: "assistant", status,
//                            content: [{type: "output_text", text, annotations: [], logprobs: []}]}
//   a call to functions. -> {type: "function_call", id: "fc_...", call_id: "call_...", name, arguments, status}
// A run of one kind of text is one item. status "completed", or "incomplete" with incomplete_details.reason
// "max_output_tokens" (and the item it cut "incomplete"). Streaming sends the API's typed events (`event: <type>` + data with "type" and
// "sequence_number"): response.created, response.in_progress, per item output_item.added, content_part.added,
// reasoning_text / output_text delta + done, function_call_arguments delta + done, content_part.done,
// output_item.done, then response.completed or response.incomplete; no [DONE]. A failure after the headers is an
// `error` event. usage: input_tokens (+ cached), output_tokens (+ reasoning), total_tokens. With `store` (the default)
// the response and its conversation are kept for previous_response_id and GET /v1/responses/{id} (response_store.h).
#pragma once
#include <memory>

#include "server/http_server.h"
#include "server/serving_context.h"

namespace mxs::server {

// Throws ApiException for a request it refuses before any response (400/404/429/503).
void handle_responses(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);
// GET /v1/responses/{id}: a stored response object; DELETE: removes it ({"id", "object": "response.deleted",
// "deleted": true}). 404 for an id the store does not hold.
void handle_stored_response(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

}  // namespace mxs::server
