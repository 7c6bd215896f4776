// Tokenizer::from_file: the gpt-oss (o200k_harmony) tokenizer.json loaded into a BpeModel + Pretokenizer,
// with the added tokens as specials. Ids: [0, n_ordinary) BPE tokens; added tokens (199998..200018);
// [vocab_size(), kPaddedVocab) the model's padded embedding rows, named <|reserved_N|> as in harmony.
#include "text/tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "common/error.h"
#include "text/bpe_byte_level.h"
#include "text/bpe_model.h"
#include "text/pretokenizer.h"
#include "text/utf8.h"

namespace mxs {

namespace {

using nlohmann::json;

// gpt-oss embedding/unembedding rows (config vocab_size): ids past the tokenizer.json that a model could
// still sample. harmony/tiktoken name them <|reserved_N|>; we treat them as specials with that text.
constexpr int32_t kPaddedVocab = 201088;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw Error(path + ": " + what + " (expected a gpt-oss tokenizer.json: byte-level BPE with merges, "
                                   "a Split regex pre-tokenizer and added special tokens)");
}

const json& require(const json& j, const char* key, const std::string& path, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail(path, "missing \"" + where + key + "\"");
  return *it;
}

std::string bytes_of(const std::string& spelled, const std::string& path, const char* what) {
  auto bytes = text::byte_level_to_bytes(spelled);
  if (!bytes) fail(path, std::string(what) + " \"" + spelled + "\" is not in the byte-level alphabet");
  return std::move(*bytes);
}

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    encode_ordinary(text, ids);
    return ids;
  }
  std::vector<int32_t> encode_with_specials(std::string_view text) const override;
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;
  std::string_view token_bytes(int32_t id) const override {
    if (id >= 0 && id < n_ordinary_) return bpe_->token_bytes(id);
    if (id >= n_ordinary_ && id < kPaddedVocab) return special_text_[id - n_ordinary_];
    return {};
  }
  bool is_special(int32_t id) const override { return id >= n_ordinary_ && id < kPaddedVocab; }
  std::optional<int32_t> special_id(std::string_view text) const override {
    auto it = special_by_text_.find(std::string(text));
    if (it == special_by_text_.end()) return std::nullopt;
    return it->second;
  }
  int vocab_size() const override { return vocab_size_; }

 private:
  void encode_ordinary(std::string_view text, std::vector<int32_t>& ids) const {
    text::Pretokenizer::Scanner scanner(*pre_, text);
    std::string_view piece;
    while (scanner.next(piece)) {
      if (ignore_merges_) {
        bpe_->encode_piece(piece, ids);
      } else if (piece.size() <= text::BpeModel::kShortPiece) {
        bpe_->merge_short(piece, ids);
      } else {
        bpe_->merge_long(piece, ids);
      }
    }
  }

  std::unique_ptr<text::BpeModel> bpe_;
  std::unique_ptr<text::Pretokenizer> pre_;
  bool ignore_merges_ = true;
  int32_t n_ordinary_ = 0;   // BPE vocab size; specials start here
  int32_t vocab_size_ = 0;   // highest tokenizer.json id + 1
  std::vector<std::string> special_text_;  // [kPaddedVocab - n_ordinary_]
  std::unordered_map<std::string, int32_t> special_by_text_;
  // Added tokens that encode_with_specials splits on (the tokenizer.json added_tokens, as HF does), longest
  // first so that the first hit at a position is the leftmost-longest one.
  std::vector<std::pair<std::string, int32_t>> added_;
  bool added_first_byte_[256] = {};
};

json parse_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(path + ": cannot open tokenizer file (missing or unreadable)");
  std::ostringstream buf;
  buf << file.rdbuf();
  try {
    return json::parse(std::move(buf).str());  // ~0.3 s and ~150 MB transient for the 27 MB file
  } catch (const json::exception& e) {
    fail(path, std::string("invalid JSON: ") + e.what());
  }
}

BpeTokenizer::BpeTokenizer(const std::string& path) {
  const json j = parse_file(path);
  if (!j.is_object()) fail(path, "top level is not an object");

  try {
    const json& model = require(j, "model", path, "");
    if (model.value("type", std::string()) != "BPE") fail(path, "model.type is not \"BPE\"");
    ignore_merges_ = model.value("ignore_merges", false);
    for (const char* key : {"dropout", "continuing_subword_prefix", "end_of_word_suffix"}) {
      if (model.contains(key) && !model[key].is_null()) fail(path, std::string("model.") + key + " is not supported");
    }
    if (j.contains("normalizer") && !j["normalizer"].is_null()) fail(path, "a normalizer is not supported");

    // Vocab: byte-level spelled token -> id, ids dense from 0.
    const json& vocab_json = require(model, "vocab", path, "model.");
    if (!vocab_json.is_object() || vocab_json.empty()) fail(path, "model.vocab is not a non-empty object");
    std::vector<std::string> vocab(vocab_json.size());
    std::vector<bool> seen(vocab.size(), false);
    for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
      if (!it.value().is_number_integer()) fail(path, "model.vocab[\"" + it.key() + "\"] is not an integer id");
      const int64_t id = it.value().get<int64_t>();
      if (id < 0 || id >= int64_t(vocab.size()) || seen[id]) {
        fail(path, strfmt("model.vocab ids must be 0..%zu without gaps (bad id %lld)", vocab.size() - 1,
                          static_cast<long long>(id)));
      }
      seen[id] = true;
      vocab[id] = bytes_of(it.key(), path, "vocab token");
    }
    bpe_ = std::make_unique<text::BpeModel>(std::move(vocab), path);
    n_ordinary_ = bpe_->size();

    // Merges: [["a", "b"], ...] (tokenizers >= 0.20) or ["a b", ...]; rank = position.
    const json& merges_json = require(model, "merges", path, "model.");
    if (!merges_json.is_array()) fail(path, "model.merges is not an array");
    std::vector<std::pair<int32_t, int32_t>> merges;
    merges.reserve(merges_json.size());
    for (const json& m : merges_json) {
      std::string a, b;
      if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else if (m.is_string() && m.get<std::string>().find(' ') != std::string::npos) {
        const std::string s = m.get<std::string>();
        a = s.substr(0, s.find(' '));
        b = s.substr(s.find(' ') + 1);
      } else {
        fail(path, strfmt("model.merges[%zu] is neither [\"a\", \"b\"] nor \"a b\"", merges.size()));
      }
      const int32_t left = bpe_->find(bytes_of(a, path, "merge part"));
      const int32_t right = bpe_->find(bytes_of(b, path, "merge part"));
      if (left < 0 || right < 0) fail(path, strfmt("model.merges[%zu] names a token not in model.vocab", merges.size()));
      merges.emplace_back(left, right);
    }
    bpe_->set_merges(merges, path);

    // Pre-tokenizer: Split(Regex, Isolated) then ByteLevel without its own regex.
    const json& pre = require(j, "pre_tokenizer", path, "");
    std::vector<const json*> steps;
    if (pre.value("type", std::string()) == "Sequence") {
      for (const json& p : require(pre, "pretokenizers", path, "pre_tokenizer.")) steps.push_back(&p);
    } else {
      steps.push_back(&pre);
    }
    const json* split = nullptr;
    for (const json* p : steps) {
      const std::string type = p->value("type", std::string());
      if (type == "Split" && !split) {
        split = p;
      } else if (type == "ByteLevel") {
        if (p->value("use_regex", true) || p->value("add_prefix_space", false)) {
          fail(path, "pre_tokenizer ByteLevel with use_regex or add_prefix_space is not supported");
        }
      } else {
        fail(path, "unsupported pre_tokenizer step \"" + type + "\"");
      }
    }
    if (!split) fail(path, "pre_tokenizer has no Split step");
    const json& pattern = require(*split, "pattern", path, "pre_tokenizer Split.");
    if (!pattern.contains("Regex") || !pattern["Regex"].is_string()) fail(path, "Split pattern is not a Regex");
    if (split->value("behavior", std::string()) != "Isolated" || split->value("invert", false)) {
      fail(path, "only Split behavior \"Isolated\" without invert is supported");
    }
    pre_ = std::make_unique<text::Pretokenizer>(pattern["Regex"].get<std::string>(), path);

    // Added tokens: all treated as specials (gpt-oss has only special ones).
    vocab_size_ = n_ordinary_;
    special_text_.assign(kPaddedVocab - n_ordinary_, std::string());
    for (const json& t : require(j, "added_tokens", path, "")) {
      const int64_t id = require(t, "id", path, "added_tokens[].").get<int64_t>();
      const std::string content = require(t, "content", path, "added_tokens[].").get<std::string>();
      if (id < n_ordinary_ || id >= kPaddedVocab || content.empty()) {
        fail(path, strfmt("added token \"%s\" has id %lld outside %d..%d (or is empty)", content.c_str(),
                          static_cast<long long>(id), n_ordinary_, kPaddedVocab - 1));
      }
      if (!special_text_[id - n_ordinary_].empty() || special_by_text_.count(content)) {
        fail(path, "added token \"" + content + "\" or its id is listed twice");
      }
      special_text_[id - n_ordinary_] = content;
      special_by_text_[content] = static_cast<int32_t>(id);
      added_.emplace_back(content, static_cast<int32_t>(id));
      added_first_byte_[static_cast<uint8_t>(content[0])] = true;
      vocab_size_ = std::max(vocab_size_, static_cast<int32_t>(id) + 1);
    }
    for (int32_t id = n_ordinary_; id < kPaddedVocab; ++id) {
      std::string& text = special_text_[id - n_ordinary_];
      if (!text.empty()) continue;
      text = strfmt("<|reserved_%d|>", id);
      special_by_text_.emplace(text, id);
    }
    std::stable_sort(added_.begin(), added_.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  } catch (const json::exception& e) {
    fail(path, std::string("unexpected JSON structure: ") + e.what());
  }
}

std::vector<int32_t> BpeTokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  size_t start = 0;  // start of the ordinary text not encoded yet
  for (size_t i = 0; i < text.size(); ++i) {
    if (!added_first_byte_[static_cast<uint8_t>(text[i])]) continue;
    for (const auto& [content, id] : added_) {
      if (text.compare(i, content.size(), content) != 0) continue;
      encode_ordinary(text.substr(start, i - start), ids);
      ids.push_back(id);
      start = i + content.size();
      i = start - 1;
      break;
    }
  }
  encode_ordinary(text.substr(start), ids);
  return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  bytes.reserve(ids.size() * 4);
  for (const int32_t id : ids) {
    if (id >= 0 && id < n_ordinary_) {
      bytes += bpe_->token_bytes(id);
    } else if (is_special(id)) {
      if (!skip_special) bytes += special_text_[id - n_ordinary_];
    } else {
      throw Error(strfmt("decode: token id %d is out of range (valid ids are 0..%d)", id, kPaddedVocab - 1));
    }
  }
  if (utf8::is_valid(bytes)) return bytes;
  std::string text;
  text.reserve(bytes.size() + 16);
  utf8::append_lossy(text, bytes);
  return text;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_file(const std::string& path) {
  return std::make_unique<BpeTokenizer>(path);
}

}  // namespace mxs
