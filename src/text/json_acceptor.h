// Incremental byte-level acceptor of one JSON object (RFC 8259's grammar, the top-level value an object): the state
// behind response_format json_object. feed() takes one byte and says whether the bytes so far are still a prefix of
// some valid document; complete() says the object is closed. Bounded so that a model cannot loop inside the grammar:
// at most kMaxDepth nested containers and kMaxWhitespaceRun whitespace bytes in a row. Strings are checked as JSON
// (no raw control bytes, valid escapes) and as UTF-8 (well-formed sequences only: no overlongs, surrogates or bytes
// past U+10FFFF), byte by byte, so a token may end inside a character. Nothing may follow the closing brace (not even
// whitespace), nor precede the opening one: the answer is the object, from its first byte to its last. A plain value
// type (~48 bytes): copy it to try bytes without committing.
#pragma once
#include <cstdint>
#include <string_view>

#include "text/json_lexer.h"

namespace mxs {

class JsonAcceptor {
 public:
  static constexpr int kMaxDepth = 32;
  static constexpr int kMaxWhitespaceRun = 16;

  // Consumes c if the document can continue with it. On false the acceptor is left unspecified: feed a copy when the
  // caller needs the state back.
  bool feed(uint8_t c);
  bool feed(std::string_view bytes) {
    for (char c : bytes)
      if (!feed(uint8_t(c))) return false;
    return true;
  }
  bool complete() const { return mode_ == Mode::kDone; }
  // Inside a string with no escape or UTF-8 continuation pending: any well-formed UTF-8 text without '"', '\\' and
  // control bytes keeps it there.
  bool in_plain_string() const { return mode_ == Mode::kString && str_.plain(); }
  // Whether the two accept the same continuations (the same state up to fields the mode does not read): e.g. every
  // position inside one string, where a mask computed once serves the whole string.
  bool equivalent(const JsonAcceptor& o) const;

 private:
  enum class Mode : uint8_t {
    kStart,       // before the top-level '{'
    kValue,       // a value (after ':' or ',' in an array)
    kArrayFirst,  // a value or ']' (after '[')
    kObjectFirst, // a key or '}' (after '{')
    kKey,         // a key (after ',' in an object)
    kColon,       // ':' (after a key)
    kAfter,       // ',' or the container's closing bracket (after a value)
    kString,      // inside a string (key_ says whether it is a key; str_ where in it)
    kNumber,      // inside a number (num_)
    kLiteral,     // inside true / false / null
    kDone,        // the top-level object is closed
  };
  bool value_start(uint8_t c);
  bool close(uint8_t c);
  bool end_number(uint8_t c);  // a byte that ends a number: handled as in kAfter

  Mode mode_ = Mode::kStart;
  bool key_ = false;         // kString: the string is an object key
  uint8_t depth_ = 0;
  uint8_t ws_run_ = 0;       // whitespace bytes in a row
  uint8_t literal_ = 0;      // kLiteral: which one (0 true, 1 false, 2 null)
  uint8_t literal_pos_ = 0;  // kLiteral: bytes of it read
  JsonStringLexer str_;      // kString
  JsonNumberLexer num_;      // kNumber
  char stack_[kMaxDepth] = {};  // 'o' object, 'a' array
};

}  // namespace mxs
