// POST /v1/chat/completions: OpenAI messages -> harmony prompt -> engine -> harmony output parser ->
// content / reasoning (as both `reasoning_content` and `reasoning`) / tool calls, non-streaming or as SSE.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/request.h"
#include "server/http_server.h"
#include "server/openai_schema.h"
#include "server/serving_context.h"

namespace mxs::server {

// A chat request made ready for the engine (shared with POST /v1/responses): the harmony prompt, ending with the
// tool_choice prefill (`prefill_ids`: a named call's header, or `<|channel|>commentary to=functions.` for
// "required"; the output parser is fed them first), the sampling and length options, and the structured-output
// constraint. Throws ApiException (400) for a prompt or options the model cannot take.
struct ChatPlan {
  Request request;
  std::vector<int32_t> prefill_ids;
};
ChatPlan plan_chat(ServingContext& ctx, const ChatCompletionRequest& r);

// Throws ApiException for a request it refuses before any response (400/404/429/503).
void handle_chat_completions(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

}  // namespace mxs::server
