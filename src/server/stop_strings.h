// Stop strings on a text stream (chat content): text is released as it arrives except for a tail that could
// still be the start of a stop string (longest stop - 1 bytes, cut at a UTF-8 boundary); on a match the
// stream ends right before the stop string. Used where the engine's own stop strings (matched on the whole
// detokenized output, harmony headers included) would see the wrong text.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace mxs::server {

class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops);

  // Appends `text`; returns what may be released now ("" after a match).
  std::string feed(std::string_view text);
  // End of the stream: the held-back tail (nothing after a match).
  std::string flush();
  bool matched() const { return matched_; }
  bool active() const { return !stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  size_t holdback_ = 0;
  std::string pending_;
  bool matched_ = false;
};

}  // namespace mxs::server
