// Tokenizer building blocks without the real tokenizer.json: BPE merge loops vs a naive reference on a
// synthetic vocab, the byte-level alphabet, UTF-8 helpers and the pre-tokenizer regex translation.
#include <gtest/gtest.h>

#include <climits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "text/bpe_byte_level.h"
#include "text/bpe_model.h"
#include "text/pretokenizer.h"
#include "text/utf8.h"

namespace mxs::text {
namespace {

// Synthetic byte-level vocab: the 256 bytes plus random merges over {a, b, c}; several merges may build the
// same token from different splits (as in o200k), which is where "lowest merge rank" must be honoured.
struct SyntheticBpe {
  std::vector<std::string> vocab;
  std::vector<std::pair<int32_t, int32_t>> merges;
  explicit SyntheticBpe(uint32_t seed) {
    std::mt19937 rng(seed);
    for (int b = 0; b < 256; ++b) vocab.emplace_back(1, static_cast<char>(b));
    std::map<std::string, int32_t> ids;
    for (int32_t i = 0; i < 256; ++i) ids[vocab[i]] = i;
    std::set<std::pair<int32_t, int32_t>> seen;
    std::vector<int32_t> abc = {'a', 'b', 'c'};
    while (merges.size() < 120) {
      const int32_t l = abc[rng() % abc.size()], r = abc[rng() % abc.size()];
      if (!seen.insert({l, r}).second) continue;
      const std::string joined = vocab[l] + vocab[r];
      if (joined.size() > 6) continue;
      auto it = ids.find(joined);
      if (it == ids.end()) {
        it = ids.emplace(joined, static_cast<int32_t>(vocab.size())).first;
        vocab.push_back(joined);
        abc.push_back(it->second);
      }
      merges.emplace_back(l, r);
    }
  }
  // Reference: merge the lowest-rank adjacent pair (leftmost on ties) until none applies, re-scanning
  // every pair after each merge.
  std::vector<int32_t> naive(const std::string& s) const {
    std::vector<int32_t> sym;
    for (unsigned char c : s) sym.push_back(c);
    for (;;) {
      int best_rank = INT_MAX;
      size_t best = 0;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        for (size_t r = 0; r < merges.size() && int(r) < best_rank; ++r) {
          if (merges[r] == std::make_pair(sym[i], sym[i + 1])) {
            best_rank = int(r);
            best = i;
          }
        }
      }
      if (best_rank == INT_MAX) return sym;
      const std::string joined = vocab[sym[best]] + vocab[sym[best + 1]];
      int32_t id = -1;
      for (size_t k = 0; k < vocab.size(); ++k) {
        if (vocab[k] == joined) id = int32_t(k);
      }
      sym[best] = id;
      sym.erase(sym.begin() + best + 1);
    }
  }
};

TEST(BpeModel, MergeLoopsMatchNaiveReference) {
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    SyntheticBpe syn(seed);
    BpeModel model(syn.vocab, "synthetic");
    model.set_merges(syn.merges, "synthetic");
    std::mt19937 rng(seed * 77);
    for (int i = 0; i < 300; ++i) {
      std::string s(1 + rng() % 90, 'a');
      for (auto& c : s) c = "abcab c"[rng() % 7];
      const auto expected = syn.naive(s);
      std::vector<int32_t> got_long, got_piece;
      model.merge_long(s, got_long);
      EXPECT_EQ(got_long, expected) << s;
      if (s.size() <= BpeModel::kShortPiece) {
        std::vector<int32_t> got_short;
        model.merge_short(s, got_short);
        EXPECT_EQ(got_short, expected) << s;
      }
      // encode_piece: a whole-token piece stays one token (ignore_merges), otherwise the merge result.
      model.encode_piece(s, got_piece);
      const int32_t whole = model.find(s);
      EXPECT_EQ(got_piece, whole >= 0 ? std::vector<int32_t>{whole} : expected) << s;
    }
  }
}

TEST(BpeModel, RejectsInconsistentVocab) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.emplace_back(1, static_cast<char>(b));
  auto missing_byte = vocab;
  missing_byte[7] = "xy";
  EXPECT_THROW(BpeModel(missing_byte, "t"), Error);
  auto duplicate = vocab;
  duplicate.push_back("a");
  EXPECT_THROW(BpeModel(duplicate, "t"), Error);
  BpeModel model(vocab, "t");
  EXPECT_THROW(model.set_merges({{'a', 'b'}}, "t"), Error);  // "ab" is not a token
  EXPECT_THROW(model.set_merges({{'a', 999}}, "t"), Error);
}

TEST(ByteLevel, AlphabetRoundTrips) {
  std::set<char32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = byte_to_code_point(static_cast<unsigned char>(b));
    EXPECT_TRUE(seen.insert(cp).second);
    std::string utf8;  // code points here are < 0x800: one or two bytes
    if (cp < 0x80) {
      utf8 = std::string(1, static_cast<char>(cp));
    } else {
      utf8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
    EXPECT_EQ(byte_level_to_bytes(utf8), std::string(1, static_cast<char>(b)));
  }
  EXPECT_EQ(byte_to_code_point(' '), U'\u0120');  // 'Ġ'
  EXPECT_EQ(byte_to_code_point('\n'), U'\u010A');  // 'Ċ'
  EXPECT_EQ(byte_level_to_bytes("\xC4\xA0hello"), " hello");
  EXPECT_EQ(byte_level_to_bytes(" "), std::nullopt);       // a raw space is not in the alphabet
  EXPECT_EQ(byte_level_to_bytes("\xE4\xB8\xAD"), std::nullopt);  // nor is CJK
}

TEST(Utf8, LossyMatchesMaximalSubpartPolicy) {
  auto lossy = [](std::string_view s) {
    std::string out;
    utf8::append_lossy(out, s);
    return out;
  };
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(lossy("abc"), "abc");
  EXPECT_EQ(lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
  EXPECT_EQ(lossy("\xE4\xB8"), R);              // truncated: one replacement for the prefix
  EXPECT_EQ(lossy("\xE4\xB8x"), R + "x");
  EXPECT_EQ(lossy("\x80\x80"), R + R);          // lone continuation bytes: one each
  EXPECT_EQ(lossy("\xC0\xAF"), R + R);          // overlong lead is never valid
  EXPECT_EQ(lossy("\xED\xA0\x80"), R + R + R);  // surrogate: ED then A0 is already wrong
  EXPECT_EQ(lossy("\xF4\x90\x80\x80"), R + R + R + R);
  EXPECT_EQ(lossy("\xF0\x9F\x98"), R);
  EXPECT_EQ(lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
  EXPECT_TRUE(utf8::is_valid("\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(utf8::is_valid("\xF4\x90\x80\x80"));
}

TEST(Utf8, CompletePrefixHoldsBackOnlyIncompleteTail) {
  EXPECT_EQ(utf8::complete_prefix_length(""), 0u);
  EXPECT_EQ(utf8::complete_prefix_length("ab"), 2u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xF0"), 2u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(utf8::complete_prefix_length("ab\xF0\x9F\x98\x80"), 6u);
  EXPECT_EQ(utf8::complete_prefix_length("\xE4\xB8\xAD\xE4"), 3u);
  EXPECT_EQ(utf8::complete_prefix_length("a\xE4x"), 3u);     // broken, not incomplete: emit (as U+FFFD)
  EXPECT_EQ(utf8::complete_prefix_length("\x80\x80\x80"), 3u);
  EXPECT_EQ(utf8::complete_prefix_length("\xED\xA0"), 2u);   // can never become valid
}

TEST(Pretokenizer, TranslatesWhitespaceClassOnly) {
  const std::string t = Pretokenizer::translate_for_pcre2("a\\s+b[^\\s\\p{L}]\\S(?!\\S)\\\\s[\\]\\s]");
  EXPECT_EQ(t.find("\\s"), t.find("\\\\s") + 1);  // only the escaped backslash + 's' remains
  EXPECT_EQ(t.find("\\S"), std::string::npos);
  EXPECT_NE(t.find("[^\\t\\n"), std::string::npos);
  EXPECT_THROW(Pretokenizer::translate_for_pcre2("[\\S]"), Error);
}

std::vector<std::string> pieces(const Pretokenizer& pre, std::string_view text) {
  std::vector<std::string> out;
  Pretokenizer::Scanner sc(pre, text);
  std::string_view p;
  while (sc.next(p)) out.emplace_back(p);
  return out;
}

TEST(Pretokenizer, IsolatedSplitKeepsGapsAndInvalidBytes) {
  Pretokenizer pre("\\p{L}+|\\s+", "test");
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces(pre, "ab  cd"), (V{"ab", "  ", "cd"}));
  EXPECT_EQ(pieces(pre, "ab12cd"), (V{"ab", "12", "cd"}));         // unmatched text is its own piece
  EXPECT_EQ(pieces(pre, "ab\xFF\xFE" "cd"), (V{"ab", "\xFF\xFE", "cd"}));  // ill-formed bytes never match
  EXPECT_EQ(pieces(pre, "\xE1\xA0\x8E"), (V{"\xE1\xA0\x8E"}));       // U+180E is not \s here
  EXPECT_EQ(pieces(pre, ""), V{});
  EXPECT_THROW(Pretokenizer("(unclosed", "bad.json"), Error);
}

}  // namespace
}  // namespace mxs::text
