// Pre-tokenizer: splits text into pieces with the tokenizer.json Split regex (behavior "Isolated": every
// match is a piece, and so is every gap between matches), run by PCRE2 in UTF + UCP mode with JIT.
// Invalid UTF-8 never fails: PCRE2_MATCH_INVALID_UTF makes ill-formed bytes unmatchable, so they end up
// in gap pieces (byte-level BPE still encodes them, and decode gives the bytes back).
#pragma once
#include <memory>
#include <string>
#include <string_view>

namespace mxs::text {

class Pretokenizer {
 public:
  // Throws mxs::Error (naming `source`) when the pattern does not compile.
  Pretokenizer(std::string_view pattern, std::string_view source);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  // Iterates over the pieces of one text. Holds its own PCRE2 match data, so one Scanner per thread/call;
  // the Pretokenizer itself is shared read-only.
  class Scanner {
   public:
    Scanner(const Pretokenizer& pre, std::string_view text);
    ~Scanner();
    Scanner(const Scanner&) = delete;
    Scanner& operator=(const Scanner&) = delete;
    // Next piece (non-empty, contiguous, in order); false at the end of the text.
    bool next(std::string_view& piece);

   private:
    const Pretokenizer& pre_;
    std::string_view text_;
    size_t pos_ = 0;          // start of the next piece
    size_t match_begin_ = 0;  // pending match [match_begin_, match_end_) after a gap; valid when has_match_
    size_t match_end_ = 0;
    bool has_match_ = false;
    struct MatchData;
    std::unique_ptr<MatchData> md_;
  };

  // The pattern actually compiled (see translate_for_pcre2).
  const std::string& compiled_pattern() const { return compiled_pattern_; }

  // Rewrites `\s`/`\S` to an explicit class of the Unicode White_Space code points, which is what `\s`
  // means in Oniguruma (HF tokenizers), Rust regex (tiktoken) and JavaScript. PCRE2's UCP `\s` also
  // matches U+180E MONGOLIAN VOWEL SEPARATOR (White_Space until Unicode 6.3), which would split it
  // differently from the reference tokenizers.
  static std::string translate_for_pcre2(std::string_view pattern);

 private:
  struct Code;
  std::unique_ptr<Code> code_;
  std::string compiled_pattern_;
};

}  // namespace mxs::text
