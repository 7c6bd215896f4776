// OutputText: incremental detokenization + stop-string matching with hold-back (see output_text.h).
#include "engine/output_text.h"

#include <algorithm>

namespace mxs {

void OutputText::init(const Tokenizer* tokenizer, std::vector<std::string> stop_strings) {
  if (tokenizer) detok_.emplace(*tokenizer);
  stop_strings_.clear();
  for (auto& s : stop_strings)
    if (!s.empty()) stop_strings_.push_back(std::move(s));
  holdback_ = 0;
  for (const auto& s : stop_strings_) holdback_ = std::max(holdback_, s.size() - 1);
}

std::string OutputText::feed(int32_t token) {
  if (!detok_ || stopped()) return {};
  const size_t old_size = text_.size();
  text_ += detok_->feed(token);
  if (text_.size() == old_size) return {};
  // A match must end inside the new text, so it starts at most holdback_ bytes before it.
  const size_t search_from = old_size > holdback_ ? old_size - holdback_ : 0;
  size_t best = std::string::npos;
  for (size_t i = 0; i < stop_strings_.size(); ++i) {
    const size_t pos = text_.find(stop_strings_[i], search_from);
    if (pos != std::string::npos && pos < best) {
      best = pos;
      matched_ = int(i);
    }
  }
  if (stopped()) {
    text_.resize(best);
    std::string out = text_.substr(released_);
    released_ = text_.size();
    return out;
  }
  return release();
}

std::string OutputText::release() {
  size_t end = text_.size() > holdback_ ? text_.size() - holdback_ : 0;
  // Never split a UTF-8 character: move back to a lead byte.
  while (end > released_ && end < text_.size() && (uint8_t(text_[end]) & 0xC0) == 0x80) --end;
  if (end <= released_) return {};
  std::string out = text_.substr(released_, end - released_);
  released_ = end;
  return out;
}

std::string OutputText::flush() {
  if (!detok_ || stopped()) return {};
  text_ += detok_->flush();
  std::string out = text_.substr(released_);
  released_ = text_.size();
  return out;
}

}  // namespace mxs
