// Server-sent events framing for OpenAI streaming: each event is `data: <one line of JSON>\n\n` and the
// stream ends with `data: [DONE]\n\n`. JSON from nlohmann::json::dump() never contains a raw newline, so
// one `data:` line per event is always enough; sse_event() still splits defensively.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace mxs::server {

// One event whose data is `payload` (split into several `data:` lines if it contains newlines).
std::string sse_event(std::string_view payload);
inline std::string sse_json(const nlohmann::json& j) {
  return sse_event(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}
inline std::string sse_done() {
  return "data: [DONE]\n\n";
}

// HTTP/1.1 chunked transfer coding of one chunk (`<hex size>\r\n<data>\r\n`); empty data is not a chunk,
// the terminating chunk is chunked_end().
std::string chunked_frame(std::string_view data);
inline std::string chunked_end() {
  return "0\r\n\r\n";
}

}  // namespace mxs::server
