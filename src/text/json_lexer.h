// The lexical pieces both JSON acceptors share (json_acceptor.h, json_schema_acceptor.h), byte by byte: the inside of
// a string (after its opening quote: escapes, \u, strict UTF-8) and a number (JSON's grammar; integer-only on
// request). Plain value types, compared with == by the acceptors' equivalent().
#pragma once
#include <cstdint>

namespace mxs {

enum class LexStep : uint8_t {
  kTaken,     // c continues the token
  kRejected,  // c cannot come here
  kDone,      // the token is complete: a string's closing quote (consumed), or a byte after a number (NOT consumed)
};

struct JsonStringLexer {
  uint8_t phase = 0;  // 0 content, 1 after '\', 2 inside \u (hex digits read)
  uint8_t hex = 0;
  uint8_t need = 0;   // UTF-8 continuation bytes still due, the next one in [lo, hi]
  uint8_t lo = 0x80, hi = 0xBF;

  LexStep feed(uint8_t c);
  // No escape or UTF-8 character pending: any well-formed UTF-8 text without '"', '\\' and control bytes keeps it so.
  bool plain() const { return phase == 0 && need == 0; }
  bool operator==(const JsonStringLexer&) const = default;
};

struct JsonNumberLexer {
  uint8_t phase = 0;     // where in -int.frac(e|E)(+|-)exp (json_lexer.cpp)
  bool integer = false;  // no fraction, no exponent

  // A number starting with c ('-' or a digit); false for any other byte.
  bool start(uint8_t c, bool integer_only);
  LexStep feed(uint8_t c);
  bool operator==(const JsonNumberLexer&) const = default;
};

}  // namespace mxs
