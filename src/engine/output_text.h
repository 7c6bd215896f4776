// Detokenized output of one request, with stop strings: text that could still be the start of a stop
// string is held back (at most the longest stop string minus one byte, at a UTF-8 boundary) so that a
// client never receives text that a later token turns into a stop match. On a match the text is cut
// right before the stop string.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace mxs {

class OutputText {
 public:
  // tokenizer == nullptr: no text at all (stop strings then need one: the engine rejects them earlier).
  void init(const Tokenizer* tokenizer, std::vector<std::string> stop_strings);

  // Appends one generated token; returns the text that may now be released. Specials add no text.
  // After a stop string matched, returns "" for any further token.
  std::string feed(int32_t token);
  // The end of the request: the held-back text (and incomplete UTF-8 as U+FFFD) unless a stop matched.
  std::string flush();

  bool stopped() const { return matched_ >= 0; }
  const std::string& matched_stop() const { return stop_strings_[size_t(matched_)]; }
  const std::string& text() const { return text_; }  // everything so far (cut at a stop match)

 private:
  std::string release();

  std::optional<IncrementalDetokenizer> detok_;
  std::vector<std::string> stop_strings_;
  size_t holdback_ = 0;  // longest stop string - 1, in bytes
  std::string text_;
  size_t released_ = 0;  // bytes of text_ already handed out
  int matched_ = -1;     // index into stop_strings_
};

}  // namespace mxs
