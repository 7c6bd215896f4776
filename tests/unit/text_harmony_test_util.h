// Helpers for the harmony tests: a byte-level fake Tokenizer (one token per byte, so every UTF-8 split
// happens; the o200k_harmony special ids) and the real tokenizer.json when it is available.
#pragma once
#include <array>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "common/paths.h"
#include "text/harmony.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs::test {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kVocab = 201088;  // like the model's padded vocab: everything >= 256 is special
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::vector<int32_t> encode_with_specials(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < text.size();) {
      bool matched = false;
      if (text[i] == '<') {
        for (int32_t id : kSpecials) {
          const std::string_view s = harmony::special_token_text(id);
          if (text.substr(i, s.size()) == s) {
            ids.push_back(id);
            i += s.size();
            matched = true;
            break;
          }
        }
      }
      if (!matched) ids.push_back(static_cast<unsigned char>(text[i++]));
    }
    return ids;
  }
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string out;
    for (int32_t id : ids)
      if (!(skip_special && is_special(id))) out += token_bytes(id);
    return out;
  }
  std::string_view token_bytes(int32_t id) const override {
    static const std::array<char, 256> kBytes = [] {
      std::array<char, 256> b{};
      for (int i = 0; i < 256; ++i) b[i] = static_cast<char>(i);
      return b;
    }();
    if (id >= 0 && id < 256) return std::string_view(&kBytes[id], 1);
    return harmony::special_token_text(id);
  }
  bool is_special(int32_t id) const override { return id >= 256 && id < kVocab; }
  std::optional<int32_t> special_id(std::string_view text) const override {
    for (int32_t id : kSpecials)
      if (harmony::special_token_text(id) == text) return id;
    return std::nullopt;
  }
  int vocab_size() const override { return kVocab; }

  static constexpr int32_t kSpecials[] = {tok::kStartOfText, tok::kEndOfText, tok::kReturn, tok::kConstrain,
                                          tok::kChannel,     tok::kStart,     tok::kEnd,    tok::kMessage,
                                          tok::kCall};

};

// The real o200k_harmony tokenizer (MXSERVE_TOKENIZER, else the fetch-tokenizer.sh cache), loaded once;
// nullptr when absent.
inline const Tokenizer* real_tokenizer() {
  static std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    std::string path;
    if (const char* env = std::getenv("MXSERVE_TOKENIZER"); env && *env) path = env;
    else path = join_path(join_path(cache_dir(), "tokenizer"), "tokenizer.json");
    if (!file_exists(path)) return nullptr;
    return Tokenizer::from_file(path);
  }();
  return tok.get();
}

}  // namespace mxs::test
