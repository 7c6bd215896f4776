#include "text/json_token_mask.h"

#include <algorithm>

#include "common/error.h"
#include "text/json_schema_acceptor.h"

namespace mxs {

void JsonTokenMask::Trie::insert(std::string_view b, int32_t t) {
  uint32_t& top = root_child[uint8_t(b[0])];
  if (top == 0) {
    nodes.push_back(Node{});
    nodes.back().byte = uint8_t(b[0]);
    top = uint32_t(nodes.size() - 1);
  }
  uint32_t node = top;
  for (size_t i = 1; i < b.size(); ++i) node = child(node, uint8_t(b[i]));
  MXS_CHECK(nodes[node].token < 0, strfmt("JsonTokenMask: tokens %d and %d have the same bytes", nodes[node].token, t));
  nodes[node].token = t;
}

// The child of `node` with byte c, appended to its sibling list when missing.
uint32_t JsonTokenMask::Trie::child(uint32_t node, uint8_t c) {
  uint32_t prev = 0;
  for (uint32_t ch = nodes[node].first_child; ch != 0; prev = ch, ch = nodes[ch].next_sibling)
    if (nodes[ch].byte == c) return ch;
  nodes.push_back(Node{});
  nodes.back().byte = c;
  const uint32_t n = uint32_t(nodes.size() - 1);
  if (prev == 0)
    nodes[node].first_child = n;
  else
    nodes[prev].next_sibling = n;
  return n;
}

template <class Acceptor>
void JsonTokenMask::Trie::walk(const Acceptor& state, std::vector<uint32_t>* mask) const {
  struct Item {
    uint32_t node;
    Acceptor state;  // the acceptor before this node's byte
  };
  std::vector<Item> stack;
  for (uint32_t top : root_child)
    if (top != 0) stack.push_back({top, state});
  while (!stack.empty()) {
    Item it = stack.back();
    stack.pop_back();
    const Node& n = nodes[it.node];
    if (!it.state.feed(n.byte)) continue;  // (the whole subtree: no token below extends the state)
    if (n.token >= 0) (*mask)[size_t(n.token) / 32] |= 1u << (n.token % 32);
    for (uint32_t ch = n.first_child; ch != 0; ch = nodes[ch].next_sibling) stack.push_back({ch, it.state});
  }
}

JsonTokenMask::JsonTokenMask(const Tokenizer& tokenizer, int vocab) : vocab_(vocab) {
  MXS_CHECK(vocab > 0, "JsonTokenMask: empty vocabulary");
  plain_string_.assign(size_t(words()), 0u);
  offsets_.reserve(size_t(vocab) + 1);
  offsets_.push_back(0);
  JsonAcceptor in_string;  // a plain string state
  in_string.feed(std::string_view("{\"", 2));
  const int n_tok = std::min(vocab, tokenizer.vocab_size());
  for (int32_t t = 0; t < vocab; ++t) {
    if (t < n_tok && !tokenizer.is_special(t)) {
      const std::string_view b = tokenizer.token_bytes(t);
      if (!b.empty()) {
        text_.append(b);
        all_.insert(b, t);
        // Plain string content: no '"', '\\' or control bytes, and whole UTF-8 characters (fed inside a string it
        // leaves the string plain): valid in every plain string state, and leaves it plain.
        JsonAcceptor probe = in_string;
        const bool plain = std::none_of(b.begin(), b.end(), [](char ch) {
          const uint8_t c = uint8_t(ch);
          return c == '"' || c == '\\' || c < 0x20;
        }) && probe.feed(b) && probe.in_plain_string();
        if (plain)
          plain_string_[size_t(t) / 32] |= 1u << (t % 32);
        else
          string_special_.insert(b, t);
      }
    }
    offsets_.push_back(uint32_t(text_.size()));
  }
}

template <class Acceptor>
bool JsonTokenMask::extends(const Acceptor& state, int32_t t) const {
  if (t < 0 || t >= vocab_) return false;
  const std::string_view b = bytes(t);
  if (b.empty()) return false;
  Acceptor s = state;
  return s.feed(b);
}

template <class Acceptor>
void JsonTokenMask::allowed(const Acceptor& state, std::vector<uint32_t>* mask) const {
  if (state.in_plain_string()) {
    *mask = plain_string_;
    string_special_.walk(state, mask);
  } else {
    mask->assign(size_t(words()), 0u);
    all_.walk(state, mask);
  }
}

template void JsonTokenMask::allowed(const JsonAcceptor&, std::vector<uint32_t>*) const;
template void JsonTokenMask::allowed(const JsonSchemaAcceptor&, std::vector<uint32_t>*) const;
template bool JsonTokenMask::extends(const JsonAcceptor&, int32_t) const;
template bool JsonTokenMask::extends(const JsonSchemaAcceptor&, int32_t) const;

}  // namespace mxs
