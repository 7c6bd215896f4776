// Stop-string matching with hold-back (see stop_strings.h). A match that starts inside released text is
// impossible: released text ends at least (longest stop - 1) bytes before the newest byte.
#include "server/stop_strings.h"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace mxs::server {

StopStringFilter::StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
  for (const auto& s : stops_) holdback_ = std::max(holdback_, s.size() - 1);
}

std::string StopStringFilter::feed(std::string_view text) {
  if (matched_) return {};
  pending_.append(text);
  if (stops_.empty()) return std::exchange(pending_, {});
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    matched_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  if (pending_.size() <= holdback_) return {};
  size_t cut = pending_.size() - holdback_;
  while (cut > 0 && (uint8_t(pending_[cut]) & 0xC0) == 0x80) --cut;  // never split a UTF-8 character
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string StopStringFilter::flush() {
  if (matched_) return {};
  return std::exchange(pending_, {});
}

}  // namespace mxs::server
