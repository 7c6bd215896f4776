// o200k_harmony tokenizer: byte-level BPE loaded from a Hugging Face tokenizer.json (merges/vocab, added
// tokens, the Split pre-tokenizer regex run through PCRE2 with JIT). Works on raw bytes with HF merge ranks.
// Thread-safe for concurrent encode/decode after construction.
// Ids: [0, 199998) BPE tokens; 199998..200018 the tokenizer.json added tokens (all special); ids from
// vocab_size() up to 201087 (the model's padded embedding rows) are specials named <|reserved_N|> as in
// harmony. Ill-formed UTF-8 input is encoded byte-exactly (never an error). Implementation: tokenizer.cpp,
// bpe_model.*, pretokenizer.*, utf8.*.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mxs {

class Tokenizer {
 public:
  // Throws mxs::Error naming the file when it is missing or not a gpt-oss tokenizer.json.
  static std::unique_ptr<Tokenizer> from_file(const std::string& path);
  virtual ~Tokenizer() = default;

  // Plain text: special-token strings like "<|start|>" are encoded as ordinary text (never as specials).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Chat rendering: added/special token strings in `text` become their ids.
  virtual std::vector<int32_t> encode_with_specials(std::string_view text) const = 0;
  // Concatenated token bytes, UTF-8 errors replaced by U+FFFD; specials as their text unless skipped.
  // Throws mxs::Error for an id outside [0, 201088).
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special = false) const = 0;
  // Raw bytes of an ordinary token (may be a partial UTF-8 sequence); the literal text of a special one.
  virtual std::string_view token_bytes(int32_t id) const = 0;
  virtual bool is_special(int32_t id) const = 0;
  virtual std::optional<int32_t> special_id(std::string_view text) const = 0;
  virtual int vocab_size() const = 0;  // highest id + 1 that has a token
};

// Streaming decode for one sequence: feed token ids, get text that is always whole UTF-8 characters.
// Special tokens produce no text. flush() returns what is left (incomplete bytes as U+FFFD).
// feed() of every id then flush() == decode(ids, /*skip_special=*/true). feed() throws mxs::Error for an
// id outside [0, 201088).
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tokenizer) : tok_(tokenizer) {}
  std::string feed(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;  // bytes of an incomplete UTF-8 sequence
};

}  // namespace mxs
