#include "text/json_token_mask.h"

#include <algorithm>

#include "common/error.h"

namespace mxs {

JsonTokenMask::JsonTokenMask(const Tokenizer& tokenizer, int vocab) : vocab_(vocab) {
  MXS_CHECK(vocab > 0, "JsonTokenMask: empty vocabulary");
  plain_string_.assign(size_t(words()), 0u);
  offsets_.reserve(size_t(vocab) + 1);
  offsets_.push_back(0);
  const int n_tok = std::min(vocab, tokenizer.vocab_size());
  for (int32_t t = 0; t < vocab; ++t) {
    if (t < n_tok && !tokenizer.is_special(t)) {
      const std::string_view b = tokenizer.token_bytes(t);
      if (!b.empty()) {
        text_.append(b);
        by_first_[uint8_t(b[0])].push_back(t);
        // Plain string content: none of '"', '\\', control bytes, and whole UTF-8 characters (fed inside a string it
        // leaves the string plain): valid in every plain string state, and leaves it plain.
        JsonAcceptor probe;
        probe.feed(std::string_view("{\"", 2));
        const bool plain = std::none_of(b.begin(), b.end(), [](char ch) {
          const uint8_t c = uint8_t(ch);
          return c == '"' || c == '\\' || c < 0x20;
        }) && probe.feed(b) && probe.in_plain_string();
        if (plain)
          plain_string_[size_t(t) / 32] |= 1u << (t % 32);
        else
          string_special_.push_back(t);
      }
    }
    offsets_.push_back(uint32_t(text_.size()));
  }
}

bool JsonTokenMask::extends(const JsonAcceptor& state, int32_t t) const {
  if (t < 0 || t >= vocab_) return false;
  const std::string_view b = bytes(t);
  if (b.empty()) return false;
  JsonAcceptor s = state;
  return s.feed(b);
}

void JsonTokenMask::allowed(const JsonAcceptor& state, std::vector<uint32_t>* mask) const {
  auto set = [&](int32_t t) { (*mask)[size_t(t) / 32] |= 1u << (t % 32); };
  if (state.in_plain_string()) {
    *mask = plain_string_;
    for (int32_t t : string_special_)
      if (extends(state, t)) set(t);
    return;
  }
  mask->assign(size_t(words()), 0u);
  for (int c = 0; c < 256; ++c) {
    if (by_first_[size_t(c)].empty()) continue;
    JsonAcceptor first = state;
    if (!first.feed(uint8_t(c))) continue;
    for (int32_t t : by_first_[size_t(c)]) {
      const std::string_view rest = bytes(t).substr(1);
      JsonAcceptor s = first;
      if (s.feed(rest)) set(t);
    }
  }
}

}  // namespace mxs
