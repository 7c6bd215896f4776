// The built-in chat page served at GET /: one self-contained HTML document (inline CSS and JS, no external
// resource) that talks to this server's /v1/models and streaming /v1/chat/completions (or /v1/completions).
#pragma once
#include <string_view>

namespace mxs::server {

std::string_view chat_page_html();

}  // namespace mxs::server
