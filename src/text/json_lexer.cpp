#include "text/json_lexer.h"

namespace mxs {
namespace {

bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

enum NumPhase : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigits };

}  // namespace

LexStep JsonStringLexer::feed(uint8_t c) {
  switch (phase) {
    case 0:
      if (need > 0) {
        if (c < lo || c > hi) return LexStep::kRejected;
        --need, lo = 0x80, hi = 0xBF;
        return LexStep::kTaken;
      }
      if (c == '"') return LexStep::kDone;
      if (c == '\\') {
        phase = 1;
        return LexStep::kTaken;
      }
      if (c < 0x20) return LexStep::kRejected;
      if (c < 0x80) return LexStep::kTaken;
      // A UTF-8 lead byte: the continuation bytes due and the range of the first (Unicode's well-formed sequences,
      // table 3-7: no overlongs, surrogates or code points past U+10FFFF).
      if (c >= 0xC2 && c <= 0xDF) need = 1;
      else if (c == 0xE0) need = 2, lo = 0xA0;
      else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
      else if (c == 0xED) need = 2, hi = 0x9F;
      else if (c == 0xF0) need = 3, lo = 0x90;
      else if (c >= 0xF1 && c <= 0xF3) need = 3;
      else if (c == 0xF4) need = 3, hi = 0x8F;
      else return LexStep::kRejected;
      return LexStep::kTaken;
    case 1:
      if (c == 'u') {
        phase = 2, hex = 0;
        return LexStep::kTaken;
      }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        phase = 0;
        return LexStep::kTaken;
      }
      return LexStep::kRejected;
    default:
      if (!is_hex(c)) return LexStep::kRejected;
      if (++hex == 4) phase = 0, hex = 0;
      return LexStep::kTaken;
  }
}

bool JsonNumberLexer::start(uint8_t c, bool integer_only) {
  integer = integer_only;
  if (c == '-') phase = kMinus;
  else if (c == '0') phase = kZero;
  else if (c >= '1' && c <= '9') phase = kInt;
  else return false;
  return true;
}

LexStep JsonNumberLexer::feed(uint8_t c) {
  switch (phase) {
    case kMinus:
      if (!is_digit(c)) return LexStep::kRejected;
      phase = c == '0' ? kZero : kInt;
      return LexStep::kTaken;
    case kZero:
    case kInt:
      if (is_digit(c) && phase == kInt) return LexStep::kTaken;
      if (!integer && c == '.') {
        phase = kDot;
        return LexStep::kTaken;
      }
      if (!integer && (c == 'e' || c == 'E')) {
        phase = kExp;
        return LexStep::kTaken;
      }
      return LexStep::kDone;
    case kDot:
      if (!is_digit(c)) return LexStep::kRejected;
      phase = kFrac;
      return LexStep::kTaken;
    case kFrac:
      if (is_digit(c)) return LexStep::kTaken;
      if (c == 'e' || c == 'E') {
        phase = kExp;
        return LexStep::kTaken;
      }
      return LexStep::kDone;
    case kExp:
      if (c == '+' || c == '-') {
        phase = kExpSign;
        return LexStep::kTaken;
      }
      [[fallthrough]];
    case kExpSign:
      if (!is_digit(c)) return LexStep::kRejected;
      phase = kExpDigits;
      return LexStep::kTaken;
    default:  // kExpDigits
      return is_digit(c) ? LexStep::kTaken : LexStep::kDone;
  }
}

}  // namespace mxs
