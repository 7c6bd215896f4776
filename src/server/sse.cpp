// SSE and chunked-encoding framing (see sse.h).
#include "server/sse.h"

#include <cstdio>

namespace mxs::server {

std::string sse_event(std::string_view payload) {
  std::string out;
  out.reserve(payload.size() + 16);
  size_t start = 0;
  while (true) {
    size_t nl = payload.find_first_of("\r\n", start);
    out += "data: ";
    out.append(payload.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
    out += "\n";
    if (nl == std::string_view::npos) break;
    // CRLF counts as one line break.
    start = (payload[nl] == '\r' && nl + 1 < payload.size() && payload[nl + 1] == '\n') ? nl + 2 : nl + 1;
  }
  out += "\n";
  return out;
}

std::string chunked_frame(std::string_view data) {
  if (data.empty()) return {};
  char head[24];
  const int n = std::snprintf(head, sizeof head, "%zx\r\n", data.size());
  std::string out;
  out.reserve(size_t(n) + data.size() + 2);
  out.append(head, size_t(n));
  out.append(data);
  out += "\r\n";
  return out;
}

}  // namespace mxs::server
