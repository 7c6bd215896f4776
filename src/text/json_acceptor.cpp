#include "text/json_acceptor.h"

namespace mxs {
namespace {

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
constexpr std::string_view kLiterals[3] = {"true", "false", "null"};

}  // namespace

bool JsonAcceptor::value_start(uint8_t c) {
  switch (c) {
    case '{':
    case '[':
      if (depth_ == kMaxDepth) return false;
      stack_[depth_++] = c == '{' ? 'o' : 'a';
      mode_ = c == '{' ? Mode::kObjectFirst : Mode::kArrayFirst;
      return true;
    case '"':
      mode_ = Mode::kString, key_ = false;
      return true;
    case '-':
      mode_ = Mode::kMinus;
      return true;
    case '0':
      mode_ = Mode::kZero;
      return true;
    case 't':
    case 'f':
    case 'n':
      mode_ = Mode::kLiteral, literal_ = c == 't' ? 0 : c == 'f' ? 1 : 2, literal_pos_ = 1;
      return true;
    default:
      if (c >= '1' && c <= '9') {
        mode_ = Mode::kInt;
        return true;
      }
      return false;
  }
}

// '}' or ']' closing the innermost container (kObjectFirst / kArrayFirst: an empty one; kAfter: after a value).
bool JsonAcceptor::close(uint8_t c) {
  if (depth_ == 0 || stack_[depth_ - 1] != (c == '}' ? 'o' : 'a')) return false;
  --depth_;
  mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfter;
  return true;
}

bool utf8_lead_byte(uint8_t c, uint8_t* need, uint8_t* lo, uint8_t* hi) {
  *lo = 0x80, *hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) *need = 1;
  else if (c == 0xE0) *need = 2, *lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) *need = 2;
  else if (c == 0xED) *need = 2, *hi = 0x9F;
  else if (c == 0xF0) *need = 3, *lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) *need = 3;
  else if (c == 0xF4) *need = 3, *hi = 0x8F;
  else return false;
  return true;
}

bool JsonAcceptor::equivalent(const JsonAcceptor& o) const {
  if (mode_ != o.mode_ || key_ != o.key_ || depth_ != o.depth_ || ws_run_ != o.ws_run_ ||
      utf8_need_ != o.utf8_need_ || utf8_lo_ != o.utf8_lo_ || utf8_hi_ != o.utf8_hi_)
    return false;
  if (mode_ == Mode::kUnicode && hex_ != o.hex_) return false;
  if (mode_ == Mode::kLiteral && (literal_ != o.literal_ || literal_pos_ != o.literal_pos_)) return false;
  for (int i = 0; i < depth_; ++i)
    if (stack_[i] != o.stack_[i]) return false;
  return true;
}

bool JsonAcceptor::end_number(uint8_t c) {
  mode_ = Mode::kAfter;
  return feed(c);
}

bool JsonAcceptor::feed(uint8_t c) {
  // Whitespace between tokens (not before the object: the answer starts with '{'; not inside strings, numbers or
  // literals; not after the end).
  const bool between = mode_ == Mode::kValue || mode_ == Mode::kArrayFirst ||
                       mode_ == Mode::kObjectFirst || mode_ == Mode::kKey || mode_ == Mode::kColon ||
                       mode_ == Mode::kAfter;
  if (between && is_ws(c)) return ++ws_run_ <= kMaxWhitespaceRun;
  ws_run_ = 0;
  switch (mode_) {
    case Mode::kStart:
      if (c != '{') return false;
      stack_[depth_++] = 'o';
      mode_ = Mode::kObjectFirst;
      return true;
    case Mode::kValue:
      return value_start(c);
    case Mode::kArrayFirst:
      return c == ']' ? close(c) : value_start(c);
    case Mode::kObjectFirst:
      if (c == '}') return close(c);
      [[fallthrough]];
    case Mode::kKey:
      if (c != '"') return false;
      mode_ = Mode::kString, key_ = true;
      return true;
    case Mode::kColon:
      if (c != ':') return false;
      mode_ = Mode::kValue;
      return true;
    case Mode::kAfter:
      if (c == ',') {
        mode_ = stack_[depth_ - 1] == 'o' ? Mode::kKey : Mode::kValue;
        return true;
      }
      return (c == '}' || c == ']') && close(c);
    case Mode::kString:
      if (utf8_need_ > 0) {
        if (c < utf8_lo_ || c > utf8_hi_) return false;
        --utf8_need_, utf8_lo_ = 0x80, utf8_hi_ = 0xBF;
        return true;
      }
      if (c >= 0x80) return utf8_lead_byte(c, &utf8_need_, &utf8_lo_, &utf8_hi_);
      if (c == '"') {
        mode_ = key_ ? Mode::kColon : Mode::kAfter;
        return true;
      }
      if (c == '\\') {
        mode_ = Mode::kEscape;
        return true;
      }
      return c >= 0x20;
    case Mode::kEscape:
      if (c == 'u') {
        mode_ = Mode::kUnicode, hex_ = 0;
        return true;
      }
      if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
        mode_ = Mode::kString;
        return true;
      }
      return false;
    case Mode::kUnicode:
      if (!is_hex(c)) return false;
      if (++hex_ == 4) mode_ = Mode::kString;
      return true;
    case Mode::kMinus:
      if (!is_digit(c)) return false;
      mode_ = c == '0' ? Mode::kZero : Mode::kInt;
      return true;
    case Mode::kZero:
    case Mode::kInt:
      if (is_digit(c) && mode_ == Mode::kInt) return true;
      if (c == '.') {
        mode_ = Mode::kDot;
        return true;
      }
      if (c == 'e' || c == 'E') {
        mode_ = Mode::kExp;
        return true;
      }
      return end_number(c);
    case Mode::kDot:
      if (!is_digit(c)) return false;
      mode_ = Mode::kFrac;
      return true;
    case Mode::kFrac:
      if (is_digit(c)) return true;
      if (c == 'e' || c == 'E') {
        mode_ = Mode::kExp;
        return true;
      }
      return end_number(c);
    case Mode::kExp:
      if (c == '+' || c == '-') {
        mode_ = Mode::kExpSign;
        return true;
      }
      [[fallthrough]];
    case Mode::kExpSign:
      if (!is_digit(c)) return false;
      mode_ = Mode::kExpDigits;
      return true;
    case Mode::kExpDigits:
      return is_digit(c) || end_number(c);
    case Mode::kLiteral: {
      const std::string_view lit = kLiterals[literal_];
      if (c != uint8_t(lit[literal_pos_])) return false;
      if (++literal_pos_ == lit.size()) mode_ = Mode::kAfter;
      return true;
    }
    case Mode::kDone:
      return false;
  }
  return false;
}

}  // namespace mxs
