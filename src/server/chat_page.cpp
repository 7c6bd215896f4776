// Embeds the chat page (src/server/chat_page_html.inc, a raw string literal) into the binary.
#include "server/chat_page.h"

namespace mxs::server {

std::string_view chat_page_html() {
  static constexpr std::string_view kHtml =
#include "server/chat_page_html.inc"
      ;
  return kHtml;
}

}  // namespace mxs::server
