// The tokens that can extend a JsonAcceptor or JsonSchemaAcceptor state (response_format json_object / json_schema),
// as a bitmask over the model's vocabulary: token t is allowed when the acceptor takes all of its bytes. Special tokens never are. Built once per
// tokenizer: a byte trie of the ordinary tokens, the set of tokens that are plain string content (whole UTF-8, no '"',
// '\\' or control bytes) and a second trie of the others. A query walks a trie depth-first and stops at the first
// byte the state refuses, so a token is visited only while its prefix is still JSON:
//   - inside a string: a copy of the plain-content set, and a walk of the other tokens' trie;
//   - elsewhere: a walk of the whole trie (few prefixes survive: whitespace, one of {}[],:", digits, literals).
// Host times per query on the real vocabulary: docs/PERF.md session 32.
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
  // words() words: bit t % 32 of word t / 32 set when token t can extend `state`. Acceptor: JsonAcceptor or
  // JsonSchemaAcceptor (explicitly instantiated; their free strings take the same bytes, so one plain-content set
  // serves both).
  template <class Acceptor>
  void allowed(const Acceptor& state, std::vector<uint32_t>* mask) const;
  // Whether every byte of token t extends `state` (false for specials and ids without bytes).
  template <class Acceptor>
  bool extends(const Acceptor& state, int32_t t) const;
  // The bytes of an ordinary token ("" for specials).
  std::string_view bytes(int32_t t) const {
    return std::string_view(text_).substr(offsets_[size_t(t)], offsets_[size_t(t) + 1] - offsets_[size_t(t)]);
  }

 private:
  // A byte trie of token ids: node 0 is the root; children in sibling lists (the root's by byte in root_child).
  struct Trie {
    struct Node {
      uint32_t first_child = 0, next_sibling = 0;  // 0: none (the root is never a child)
      int32_t token = -1;                          // the token whose bytes end here
      uint8_t byte = 0;
    };
    std::vector<Node> nodes{Node{}};
    std::array<uint32_t, 256> root_child{};
    void insert(std::string_view bytes, int32_t t);
    uint32_t child(uint32_t node, uint8_t c);
    // Sets the bit of every token of the trie whose bytes all extend `state`.
    template <class Acceptor>
    void walk(const Acceptor& state, std::vector<uint32_t>* mask) const;
  };

  int vocab_;
  std::string text_;               // every ordinary token's bytes, concatenated
  std::vector<uint32_t> offsets_;  // [vocab + 1] token t's bytes: text_[offsets_[t], offsets_[t + 1])
  Trie all_;                       // every ordinary token
  Trie string_special_;            // the ordinary tokens that are not plain string content
  std::vector<uint32_t> plain_string_;  // words(): the tokens that are
};

}  // namespace mxs
