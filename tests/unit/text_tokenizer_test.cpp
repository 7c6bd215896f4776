// Tokenizer exactness and behaviour on the real gpt-oss tokenizer.json: reference vectors (HF tokenizers or
// npm oracles, tests/data/tokenizer_vectors.jsonl), specials, decode, ill-formed UTF-8, errors, streaming.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/paths.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace mxs {
namespace {

std::string tokenizer_path() {
  if (const char* env = std::getenv("MXSERVE_TOKENIZER")) return env;
  return join_path(cache_dir(), "tokenizer/tokenizer.json");
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (file_exists(tokenizer_path())) tok_ = Tokenizer::from_file(tokenizer_path()).release();
  }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << "no tokenizer.json at " << tokenizer_path() << " (run scripts/fetch-tokenizer.sh)";
  }
  const Tokenizer& tok() const { return *tok_; }
  int32_t byte_token(unsigned char b) const {  // the single-byte token (encode of one byte is that token)
    const auto ids = tok().encode(std::string(1, static_cast<char>(b)));
    EXPECT_EQ(ids.size(), 1u);
    return ids[0];
  }
  std::string concat_bytes(const std::vector<int32_t>& ids) const {
    std::string s;
    for (int32_t id : ids) s += tok().token_bytes(id);
    return s;
  }
  static Tokenizer* tok_;
};
Tokenizer* TokenizerTest::tok_ = nullptr;

struct Vector {
  std::string category, text;
  std::vector<int32_t> ids, ids_with_specials;
};

std::vector<Vector> load_vectors(std::string* oracle) {
  std::ifstream in(std::string(MXS_TEST_DATA) + "/tokenizer_vectors.jsonl");
  EXPECT_TRUE(in.good()) << "missing tests/data/tokenizer_vectors.jsonl";
  std::vector<Vector> out;
  std::string line;
  bool header = true;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (header) {
      *oracle = j.at("oracle").get<std::string>();
      header = false;
      continue;
    }
    Vector v{j.at("category"), j.at("text"), j.at("ids"), {}};
    v.ids_with_specials = j.contains("ids_with_specials") ? j["ids_with_specials"].get<std::vector<int32_t>>() : v.ids;
    out.push_back(std::move(v));
  }
  return out;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += std::to_string(id) + " ";
  return s;
}

TEST_F(TokenizerTest, MatchesReferenceVectors) {
  std::string oracle;
  const auto vectors = load_vectors(&oracle);
  ASSERT_GE(vectors.size(), 300u);
  int failures = 0;
  for (const auto& v : vectors) {
    const auto ids = tok().encode(v.text);
    const auto ids_sp = tok().encode_with_specials(v.text);
    const bool ok = ids == v.ids && ids_sp == v.ids_with_specials && tok().decode(ids) == v.text &&
                    tok().decode(ids_sp) == v.text;
    if (!ok && ++failures <= 20) {
      ADD_FAILURE() << "[" << v.category << "] " << nlohmann::json(v.text).dump() << "\n  expected " << ids_str(v.ids)
                    << "\n  got      " << ids_str(ids) << "\n  with specials expected " << ids_str(v.ids_with_specials)
                    << "\n  got      " << ids_str(ids_sp);
    }
  }
  EXPECT_EQ(failures, 0) << "of " << vectors.size() << " vectors from " << oracle;
}

// gpt-oss-spec.md §4.7: a typical completion and its token ids (harmony format.md).
TEST_F(TokenizerTest, HarmonyCompletionExample) {
  const std::string text =
      "<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.<|end|>"
      "<|start|>assistant<|channel|>final<|message|>2 + 2 = 4.<|return|>";
  const std::vector<int32_t> expected = {200005, 35644, 200008, 1844,  31064,  25,     392,    4827,   382,
                                         220,    17,    659,    220,   17,     16842,  12295,  81645,  13,
                                         51441,  6052,  13,     200007, 200006, 173781, 200005, 17196,  200008,
                                         17,     659,   220,    17,    314,    220,    19,     13,     200002};
  EXPECT_EQ(tok().encode_with_specials(text), expected);
  EXPECT_EQ(tok().decode(expected), text);
  // Plain encode never produces a special token, even for their exact strings (no prompt injection).
  for (int32_t id : tok().encode(text)) EXPECT_FALSE(tok().is_special(id)) << id;
  EXPECT_EQ(tok().decode(tok().encode(text)), text);
}

TEST_F(TokenizerTest, SpecialTokens) {
  EXPECT_EQ(tok().vocab_size(), 200019);
  const std::pair<const char*, int32_t> named[] = {
      {"<|startoftext|>", tok::kStartOfText}, {"<|endoftext|>", tok::kEndOfText}, {"<|return|>", tok::kReturn},
      {"<|constrain|>", tok::kConstrain},     {"<|channel|>", tok::kChannel},     {"<|start|>", tok::kStart},
      {"<|end|>", tok::kEnd},                 {"<|message|>", tok::kMessage},     {"<|call|>", tok::kCall},
      {"<|endofprompt|>", tok::kEndOfPrompt}};
  for (const auto& [text, id] : named) {
    EXPECT_EQ(tok().special_id(text), id) << text;
    EXPECT_TRUE(tok().is_special(id));
    EXPECT_EQ(tok().token_bytes(id), text);
    EXPECT_EQ(tok().encode_with_specials(text), std::vector<int32_t>{id});
  }
  EXPECT_EQ(tok().token_bytes(200000), "<|reserved_200000|>");
  // Padded embedding rows past the tokenizer.json: specials named as in harmony, never text when skipped.
  EXPECT_TRUE(tok().is_special(201087));
  EXPECT_EQ(tok().token_bytes(200500), "<|reserved_200500|>");
  EXPECT_EQ(tok().special_id("<|reserved_200500|>"), 200500);
  EXPECT_FALSE(tok().is_special(201088));
  EXPECT_FALSE(tok().is_special(199997));
  EXPECT_FALSE(tok().is_special(-1));
  EXPECT_EQ(tok().special_id("<|nope|>"), std::nullopt);
  EXPECT_EQ(tok().special_id("analysis"), std::nullopt);
  EXPECT_EQ(tok().token_bytes(35644), "analysis");
  EXPECT_EQ(tok().token_bytes(220), " ");
  EXPECT_EQ(tok().token_bytes(201088), "");
}

TEST_F(TokenizerTest, EncodeWithSpecialsSplitsAroundThem) {
  const auto ids = tok().encode_with_specials("hi<|end|><|end|> there<|endoftext|>");
  std::vector<int32_t> expected = tok().encode("hi");
  expected.insert(expected.end(), {tok::kEnd, tok::kEnd});
  for (int32_t id : tok().encode(" there")) expected.push_back(id);
  expected.push_back(tok::kEndOfText);
  EXPECT_EQ(ids, expected);
  // Near misses stay text.
  for (const char* s : {"<|end|", "<|end |>", "<|END|>", "<|reserved_200500|>"}) {
    EXPECT_EQ(tok().encode_with_specials(s), tok().encode(s)) << s;
  }
}

TEST_F(TokenizerTest, DecodeSkipsSpecialsAndReplacesBrokenUtf8) {
  std::vector<int32_t> ids = {tok::kStart};
  for (int32_t id : tok().encode("Hi")) ids.push_back(id);
  ids.push_back(tok::kEnd);
  EXPECT_EQ(tok().decode(ids), "<|start|>Hi<|end|>");
  EXPECT_EQ(tok().decode(ids, /*skip_special=*/true), "Hi");
  // Half of an emoji: its maximal valid prefix becomes one U+FFFD (as Rust's from_utf8_lossy).
  const std::vector<int32_t> half = {byte_token(0xF0), byte_token(0x9F), byte_token('a'), byte_token(0xFF)};
  EXPECT_EQ(tok().decode(half), "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD");
  EXPECT_THROW(tok().decode(std::vector<int32_t>{5, 201088}), Error);
  EXPECT_THROW(tok().decode(std::vector<int32_t>{-3}), Error);
}

// Ill-formed UTF-8 input never crashes and keeps every byte: the tokens' bytes concatenate to the input.
TEST_F(TokenizerTest, IllFormedUtf8RoundTripsBytes) {
  const std::vector<std::string> cases = {
      "\xFF", "\xC3", "abc\xE2\x82", "\xED\xA0\x80 surrogate", "\xC0\xAF overlong", "\xF4\x90\x80\x80 > U+10FFFF",
      "x\x80y", "\xE4\xB8 half CJK \xE4\xB8\xAD", "  \xFE\xFE  \n\xFF\n", "caf\xC3", std::string("nul\0inside", 10)};
  for (const auto& s : cases) {
    const auto ids = tok().encode(s);
    EXPECT_EQ(concat_bytes(ids), s) << nlohmann::json::binary_t::container_type(s.begin(), s.end()).size();
    EXPECT_EQ(concat_bytes(tok().encode_with_specials(s)), s);
    EXPECT_TRUE(utf8::is_valid(tok().decode(ids)));
  }
  std::mt19937 rng(12345);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 40, '\0');
    for (auto& c : s) c = static_cast<char>(rng() % 4 == 0 ? 0x80 + rng() % 128 : rng() % 256);
    ASSERT_EQ(concat_bytes(tok().encode(s)), s) << "random case " << i;
  }
}

// Long pieces take the O(n log n) merge path and long runs must not exhaust PCRE2's JIT stack.
TEST_F(TokenizerTest, LongInputs) {
  std::string mixed;
  for (int i = 0; i < 20000; ++i) mixed += (i % 7 == 0) ? "\r\n" : (i % 3 == 0) ? "\t " : "  ";
  for (const std::string& s : {std::string(200000, ' '), std::string(100000, 'x'), std::string(50000, '\n'), mixed,
                               std::string(300000, ' ') + "x", std::string(20000, '!') + "\n\n\n/"}) {
    const auto ids = tok().encode(s);
    EXPECT_EQ(tok().decode(ids), s) << s.size();
  }
}

TEST_F(TokenizerTest, ConcurrentEncodeIsDeterministic) {
  std::string text;
  for (int i = 0; i < 200; ++i) text += "Thread-safe encode " + std::to_string(i) + " — ünïcödé 中文 😀\n";
  const auto expected = tok().encode(text);
  std::vector<std::vector<int32_t>> got(4);
  std::vector<std::thread> threads;
  for (auto& g : got) threads.emplace_back([&] { g = tok().encode(text); });
  for (auto& t : threads) t.join();
  for (const auto& g : got) EXPECT_EQ(g, expected);
}

TEST(TokenizerLoad, ClearErrors) {
  const std::string dir = std::string(MXS_CACHE_DIR) + "/tokenizer_test";
  make_dirs(dir);
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      Tokenizer::from_file(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error(dir + "/does_not_exist.json", "cannot open");
  write_file_atomic(dir + "/bad.json", "{\"model\": [1, 2");
  expect_error(dir + "/bad.json", "invalid JSON");
  write_file_atomic(dir + "/nomodel.json", "{\"added_tokens\": []}");
  expect_error(dir + "/nomodel.json", "model");
  write_file_atomic(dir + "/wordpiece.json", "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
  expect_error(dir + "/wordpiece.json", "BPE");
  write_file_atomic(dir + "/normalizer.json",
                    "{\"normalizer\": {\"type\": \"NFC\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {}}}");
  expect_error(dir + "/normalizer.json", "normalizer");
  write_file_atomic(dir + "/notbytelevel.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a b\": 0}}}");
  expect_error(dir + "/notbytelevel.json", "byte-level");
}

// ---- IncrementalDetokenizer ----

TEST_F(TokenizerTest, DetokenizerHoldsBackSplitCharacters) {
  IncrementalDetokenizer detok(tok());
  const unsigned char smile[] = {0xF0, 0x9F, 0x98, 0x80};  // U+1F600 fed one byte token at a time
  EXPECT_EQ(detok.feed(byte_token(smile[0])), "");
  EXPECT_EQ(detok.feed(byte_token(smile[1])), "");
  EXPECT_EQ(detok.feed(tok::kChannel), "");  // a special in between: no text, pending bytes kept
  EXPECT_EQ(detok.feed(byte_token(smile[2])), "");
  EXPECT_EQ(detok.feed(byte_token(smile[3])), "\xF0\x9F\x98\x80");
  EXPECT_EQ(detok.flush(), "");
  // A truncated sequence is flushed as one U+FFFD; a broken one is replaced as soon as it is known.
  EXPECT_EQ(detok.feed(byte_token(0xE4)), "");
  EXPECT_EQ(detok.feed(byte_token(0xB8)), "");
  EXPECT_EQ(detok.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(detok.feed(byte_token(0xE4)), "");
  EXPECT_EQ(detok.feed(byte_token('a')), "\xEF\xBF\xBD" "a");
  EXPECT_EQ(detok.feed(tok::kReturn), "");
  EXPECT_THROW(detok.feed(300000), Error);
}

// Real tokenizations of emoji/CJK/etc. where some token is not whole UTF-8: every chunk is valid UTF-8 and
// the chunks add up to the text.
TEST_F(TokenizerTest, DetokenizerStreamsMultiByteText) {
  const std::vector<std::string> texts = {"👍🏽👨‍👩‍👧‍👦 ok", "𠀀𠀁𠀂 CJK Ext B", "🇺🇸🇯🇵", "ꯃꯅꯤꯄꯨꯔ", "🫠🫶🪿 new emoji",
                                          "ᚠᛇᚻ᛫ᛒᛦᚦ runes", "中文 and 日本語のテキスト"};
  int split_chars = 0;
  for (const auto& text : texts) {
    const auto ids = tok().encode(text);
    IncrementalDetokenizer detok(tok());
    std::string streamed;
    for (int32_t id : ids) {
      if (!utf8::is_valid(tok().token_bytes(id))) ++split_chars;
      const std::string chunk = detok.feed(id);
      EXPECT_TRUE(utf8::is_valid(chunk)) << text;
      streamed += chunk;
    }
    streamed += detok.flush();
    EXPECT_EQ(streamed, text);
  }
  EXPECT_GT(split_chars, 5) << "the texts should exercise tokens that end inside a character";
}

// feed() over all ids + flush() == decode(ids, skip_special=true), on every reference vector.
TEST_F(TokenizerTest, DetokenizerMatchesDecodeOnVectors) {
  std::string oracle;
  for (const auto& v : load_vectors(&oracle)) {
    IncrementalDetokenizer detok(tok());
    std::string streamed;
    for (int32_t id : v.ids_with_specials) streamed += detok.feed(id);
    streamed += detok.flush();
    EXPECT_EQ(streamed, tok().decode(v.ids_with_specials, /*skip_special=*/true)) << v.text;
  }
}

}  // namespace
}  // namespace mxs
