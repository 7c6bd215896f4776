// The tokens that can extend a JsonAcceptor state (response_format json_object), as a bitmask over the model's
// vocabulary: token t is allowed when the acceptor takes all of its bytes. Special tokens never are. Built once per
// tokenizer (the token bytes bucketed by first byte, and the tokens that are plain string content); a query costs
//   - inside a string: a copy of the plain-content set plus a check of the few tokens holding '"', '\\', a control
//     byte or part of a UTF-8 character;
//   - elsewhere: a check of only the tokens whose first byte the state takes (whitespace, one of {}[],:", a digit...).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/json_acceptor.h"
#include "text/tokenizer.h"

namespace mxs {

class JsonTokenMask {
 public:
  // vocab: the model's vocabulary (>= the tokenizer's; ids past the tokenizer's are never allowed).
  JsonTokenMask(const Tokenizer& tokenizer, int vocab);

  int vocab() const { return vocab_; }
  int words() const { return (vocab_ + 31) / 32; }
  // words() words: bit t % 32 of word t / 32 set when token t can extend `state`.
  void allowed(const JsonAcceptor& state, std::vector<uint32_t>* mask) const;
  // Whether every byte of token t extends `state` (false for specials and ids without bytes).
  bool extends(const JsonAcceptor& state, int32_t t) const;
  // The bytes of an ordinary token ("" for specials).
  std::string_view bytes(int32_t t) const {
    return std::string_view(text_).substr(offsets_[size_t(t)], offsets_[size_t(t) + 1] - offsets_[size_t(t)]);
  }

 private:
  int vocab_;
  std::string text_;              // every ordinary token's bytes, concatenated
  std::vector<uint32_t> offsets_;  // [vocab + 1] token t's bytes: text_[offsets_[t], offsets_[t + 1])
  std::array<std::vector<int32_t>, 256> by_first_;  // ordinary tokens by their first byte
  std::vector<uint32_t> plain_string_;  // words(): plain string content (whole UTF-8, no '"', '\\', control bytes)
  std::vector<int32_t> string_special_;  // ordinary tokens that are not plain string content
};

}  // namespace mxs
