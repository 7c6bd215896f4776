#include "text/json_token_mask.h"

#include <algorithm>

#include "common/error.h"

namespace mxs {

void JsonTokenMask::insert(std::string_view b, int32_t t) {
  uint32_t& top = root_child_[uint8_t(b[0])];
  if (top == 0) top = new_node(uint8_t(b[0]));
  uint32_t node = top;
  for (size_t i = 1; i < b.size(); ++i) node = child(node, uint8_t(b[i]));
  MXS_CHECK(trie_[node].token < 0, strfmt("JsonTokenMask: tokens %d and %d have the same bytes", trie_[node].token, t));
  trie_[node].token = t;
}

// The child of `node` with byte c, appended to its sibling list when missing.
uint32_t JsonTokenMask::child(uint32_t node, uint8_t c) {
  uint32_t prev = 0;
  for (uint32_t ch = trie_[node].first_child; ch != 0; prev = ch, ch = trie_[ch].next_sibling)
    if (trie_[ch].byte == c) return ch;
  const uint32_t n = new_node(c);
  if (prev == 0)
    trie_[node].first_child = n;
  else
    trie_[prev].next_sibling = n;
  return n;
}

uint32_t JsonTokenMask::new_node(uint8_t c) {
  trie_.push_back(TrieNode{});
  trie_.back().byte = c;
  return uint32_t(trie_.size() - 1);
}

JsonTokenMask::JsonTokenMask(const Tokenizer& tokenizer, int vocab) : vocab_(vocab) {
  MXS_CHECK(vocab > 0, "JsonTokenMask: empty vocabulary");
  trie_.emplace_back();  // the root
  plain_string_.assign(size_t(words()), 0u);
  offsets_.reserve(size_t(vocab) + 1);
  offsets_.push_back(0);
  const int n_tok = std::min(vocab, tokenizer.vocab_size());
  for (int32_t t = 0; t < vocab; ++t) {
    if (t < n_tok && !tokenizer.is_special(t)) {
      const std::string_view b = tokenizer.token_bytes(t);
      if (!b.empty()) {
        text_.append(b);
        insert(b, t);
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
  // Depth-first over the trie, each node's state the acceptor after its bytes; a refused byte prunes its subtree.
  struct Item {
    uint32_t node;
    JsonAcceptor state;
  };
  std::vector<Item> stack;
  for (int c = 0; c < 256; ++c)
    if (root_child_[size_t(c)] != 0) stack.push_back({root_child_[size_t(c)], state});
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    const TrieNode& n = trie_[it.node];
    if (!it.state.feed(n.byte)) continue;
    if (n.token >= 0) set(n.token);
    for (uint32_t ch = n.first_child; ch != 0; ch = trie_[ch].next_sibling) stack.push_back({ch, it.state});
  }
}

}  // namespace mxs
