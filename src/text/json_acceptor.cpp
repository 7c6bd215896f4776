#include "text/json_acceptor.h"

namespace mxs {
namespace {

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
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
      mode_ = Mode::kString, key_ = false, str_ = {};
      return true;
    case 't':
    case 'f':
    case 'n':
      mode_ = Mode::kLiteral, literal_ = c == 't' ? 0 : c == 'f' ? 1 : 2, literal_pos_ = 1;
      return true;
    default:
      if (!num_.start(c, /*integer_only=*/false)) return false;
      mode_ = Mode::kNumber;
      return true;
  }
}

// '}' or ']' closing the innermost container (kObjectFirst / kArrayFirst: an empty one; kAfter: after a value).
bool JsonAcceptor::close(uint8_t c) {
  if (depth_ == 0 || stack_[depth_ - 1] != (c == '}' ? 'o' : 'a')) return false;
  --depth_;
  mode_ = depth_ == 0 ? Mode::kDone : Mode::kAfter;
  return true;
}

bool JsonAcceptor::equivalent(const JsonAcceptor& o) const {
  if (mode_ != o.mode_ || key_ != o.key_ || depth_ != o.depth_ || ws_run_ != o.ws_run_) return false;
  if (mode_ == Mode::kString && !(str_ == o.str_)) return false;
  if (mode_ == Mode::kNumber && !(num_ == o.num_)) return false;
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
      mode_ = Mode::kString, key_ = true, str_ = {};
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
      switch (str_.feed(c)) {
        case LexStep::kTaken: return true;
        case LexStep::kRejected: return false;
        case LexStep::kDone: mode_ = key_ ? Mode::kColon : Mode::kAfter; return true;
      }
      return false;
    case Mode::kNumber:
      switch (num_.feed(c)) {
        case LexStep::kTaken: return true;
        case LexStep::kRejected: return false;
        case LexStep::kDone: return end_number(c);
      }
      return false;
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
