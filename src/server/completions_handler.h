// POST /v1/completions: a raw prompt (text, or token ids) straight to the engine, no harmony. The text is
// encoded with special-token strings recognised, so a client may write harmony by hand; stop strings are the
// engine's (matched on the generated text).
#pragma once
#include <memory>

#include "server/http_server.h"
#include "server/serving_context.h"

namespace mxs::server {

// Throws ApiException for a request it refuses before any response (400/404/429/503).
void handle_completions(ServingContext& ctx, HttpRequest&& request, std::shared_ptr<HttpExchange> exchange);

}  // namespace mxs::server
