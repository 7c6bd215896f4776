// POST /v1/chat/completions: OpenAI messages -> harmony prompt -> engine -> harmony output parser ->
// content / reasoning (as both `reasoning_content` and `reasoning`) / tool calls, non-streaming or as SSE.
#pragma once
#include <memory>

#include "server/http_server.h"
#include "server/serving_context.h"

namespace mxs::server {

// Throws ApiException for a request it refuses before any response (400/404/429/503).
void handle_chat_completions(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

}  // namespace mxs::server
