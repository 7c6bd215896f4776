// POST /v1/responses (OpenAI's Responses API) requests, translated to the chat path's request: harmony was designed
// after this API, so every Responses concept the server supports has a chat-completions twin.
//   instructions                    -> the developer message's instructions (before any system / developer input)
//   input: a string                 -> one user message
//   input: items                    -> messages, in order:
//     {type?: "message", role, content: string | [{type: input_text | output_text | text, text}]}
//                                   -> a message of that role (user, system, developer, assistant)
//     {type: "reasoning", content: [{type: "reasoning_text", text}]}
//                                   -> the reasoning of the assistant turn it opens (kept before tool calls, dropped
//                                      before a final answer, as harmony wants)
//     {type: "function_call", call_id, name, arguments}
//                                   -> a tool call of the current assistant turn
//     {type: "function_call_output", call_id, output}
//                                   -> a tool message answering that call
//   tools: [{type: "function", name, description, parameters}]; tool_choice "auto" | "none" | "required" |
//     {type: "function", name}; reasoning.effort; max_output_tokens; temperature; top_p; text.format (text,
//     json_object, json_schema {name, schema, description, strict}); and the vLLM sampling extensions the chat path
//     takes (top_k, min_p, penalties, seed, logit_bias...).
//   store (default true) and previous_response_id: the response is kept (response_store.h), and a follow-up's input
//     continues the stored conversation of its previous_response_id (that response's input items, then its output
//     items; its instructions are not carried over, as OpenAI does).
// Not supported, each a 400 naming it: conversation, background, input images / files / audio, tool types other than
// function, top_logprobs / include, truncation "auto" (a prompt past the context is a 400, never cut).
#pragma once
#include <nlohmann/json.hpp>

#include "server/openai_schema.h"
#include "server/response_store.h"

namespace mxs::server {

struct ResponsesRequest {
  ChatCompletionRequest chat;     // what runs: the chat path's request
  nlohmann::ordered_json conversation;  // the input as items (a stored previous conversation first)
  bool store = true;              // keep the response (and `conversation` + its output) for follow-ups
  nlohmann::ordered_json echo;    // the fields the response object repeats (instructions, tools, tool_choice, text,
                                  // reasoning, max_output_tokens, temperature, top_p, metadata, ...)
};

// Throws ApiException (400) naming the Responses parameter ("input[2].content", "text.format", ...).
// `store`: the stored responses (previous_response_id; null: none are kept).
ResponsesRequest parse_responses_request(const nlohmann::ordered_json& body, ResponseStore* store = nullptr);

// An error from the chat path, with the chat's parameter names (messages, max_completion_tokens / max_tokens,
// reasoning_effort, response_format) replaced by the Responses API's (input, max_output_tokens, reasoning.effort,
// text.format), in `param` and in the message.
void rename_chat_params(ApiError& e);

}  // namespace mxs::server
