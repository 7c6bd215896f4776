// The tokens that can extend a JsonAcceptor state (response_format json_object), as a bitmask over the model's
// vocabulary: token t is allowed when the acceptor takes all of its bytes. Special tokens never are. Built once per
// tokenizer (a byte trie of the ordinary tokens, and the set of tokens that are plain string content); a query costs
//   - inside a string: a copy of the plain-content set plus a check of the few tokens holding '"', '\\', a control
//     byte or part of a UTF-8 character (~0.1 ms on the real vocabulary);
//   - elsewhere: a walk of the trie that stops at the first byte the state refuses, so a token is visited only when
//     its prefix is still JSON (a check of every token whose first byte is accepted took 0.5-1.1 ms: ~40% of the
//     vocabulary starts with a space).
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
  void insert(std::string_view bytes, int32_t t);
  uint32_t child(uint32_t node, uint8_t c);
  uint32_t new_node(uint8_t c);

  int vocab_;
  std::string text_;              // every ordinary token's bytes, concatenated
  std::vector<uint32_t> offsets_;  // [vocab + 1] token t's bytes: text_[offsets_[t], offsets_[t + 1])
  // The byte trie: node 0 is the root; children in a sibling list (root's: by byte in root_child_).
  struct TrieNode {
    uint32_t first_child = 0, next_sibling = 0;  // 0: none (the root is never a child)
    int32_t token = -1;                          // the token whose bytes end here
    uint8_t byte = 0;
  };
  std::vector<TrieNode> trie_;
  std::array<uint32_t, 256> root_child_{};
  std::vector<uint32_t> plain_string_;  // words(): plain string content (whole UTF-8, no '"', '\\', control bytes)
  std::vector<int32_t> string_special_;  // ordinary tokens that are not plain string content
};

}  // namespace mxs
