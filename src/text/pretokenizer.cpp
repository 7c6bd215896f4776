// PCRE2 (8-bit, UTF + UCP, JIT) implementation of the Split pre-tokenizer. Matching uses the JIT when it
// is available, falling back to the interpreter; a JIT stack overflow (only on pathological inputs) is
// retried with a larger JIT stack.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretokenizer.h"

#include <pcre2.h>

#include <cstdint>

#include "common/error.h"

namespace mxs::text {

namespace {

// Unicode White_Space (PropList.txt, Unicode 6.3+): 25 code points.
constexpr std::string_view kWhiteSpaceItems =
    "\\t\\n\\x{0B}\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

struct Pretokenizer::Code {
  pcre2_code* code = nullptr;
  // Read-only after construction, shared by all scanners: lifts PCRE2's default match limit (10M steps),
  // which a single 20 MB run of capital letters exceeds while backtracking linearly.
  pcre2_match_context* ctx = nullptr;
  bool jit = false;
  ~Code() {
    pcre2_match_context_free(ctx);
    pcre2_code_free(code);
  }
};

struct Pretokenizer::Scanner::MatchData {
  pcre2_match_data* md = nullptr;
  pcre2_match_context* ctx = nullptr;  // the shared one, or this scanner's own after a JIT stack overflow
  pcre2_jit_stack* stack = nullptr;
  ~MatchData() {
    pcre2_match_data_free(md);
    if (stack) pcre2_match_context_free(ctx);  // own context only when it got its own stack
    pcre2_jit_stack_free(stack);
  }
};

std::string Pretokenizer::translate_for_pcre2(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 256);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        if (in_class) {
          out.append(kWhiteSpaceItems);
        } else {
          out.append("[").append(kWhiteSpaceItems).append("]");
        }
      } else if (e == 'S') {
        MXS_CHECK(!in_class, "tokenizer regex: \\S inside a character class is not supported");
        out.append("[^").append(kWhiteSpaceItems).append("]");
      } else {
        out.push_back('\\');
        out.push_back(e);
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out.push_back(c);
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out.push_back(p[++i]);
      if (i + 1 < p.size() && p[i + 1] == ']') out.push_back(p[++i]);
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out.push_back(c);
  }
  return out;
}

Pretokenizer::Pretokenizer(std::string_view pattern, std::string_view source)
    : code_(std::make_unique<Code>()), compiled_pattern_(translate_for_pcre2(pattern)) {
  int err = 0;
  PCRE2_SIZE err_offset = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled_pattern_.data()), compiled_pattern_.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &err_offset, nullptr);
  if (!code_->code) {
    throw Error(strfmt("%.*s: pre-tokenizer regex does not compile at offset %zu: %s", int(source.size()),
                       source.data(), size_t(err_offset), pcre2_message(err).c_str()));
  }
  // Without JIT support (a PCRE2 built without it) the interpreter gives the same pieces, only slower.
  code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
  code_->ctx = pcre2_match_context_create(nullptr);
  MXS_CHECK(code_->ctx != nullptr, "pre-tokenizer: out of memory for the PCRE2 match context");
  pcre2_set_match_limit(code_->ctx, UINT32_MAX);
  pcre2_set_depth_limit(code_->ctx, UINT32_MAX);
}

Pretokenizer::~Pretokenizer() = default;

Pretokenizer::Scanner::Scanner(const Pretokenizer& pre, std::string_view text)
    : pre_(pre), text_(text), md_(std::make_unique<MatchData>()) {
  md_->md = pcre2_match_data_create_from_pattern(pre.code_->code, nullptr);
  MXS_CHECK(md_->md != nullptr, "pre-tokenizer: out of memory for PCRE2 match data");
  md_->ctx = pre.code_->ctx;
}

Pretokenizer::Scanner::~Scanner() = default;

bool Pretokenizer::Scanner::next(std::string_view& piece) {
  if (pos_ >= text_.size()) return false;
  if (!has_match_) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text_.data());
    const Code& code = *pre_.code_;
    int rc;
    for (;;) {
      rc = code.jit ? pcre2_jit_match(code.code, subject, text_.size(), pos_, 0, md_->md, md_->ctx)
                    : pcre2_match(code.code, subject, text_.size(), pos_, 0, md_->md, md_->ctx);
      if (rc != PCRE2_ERROR_JIT_STACKLIMIT || md_->stack) break;
      // Default JIT stack (32 KiB) exhausted: give this scanner a 64 MiB one and retry.
      md_->stack = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, nullptr);
      MXS_CHECK(md_->stack != nullptr, "pre-tokenizer: out of memory for the PCRE2 JIT stack");
      md_->ctx = pcre2_match_context_copy(code.ctx);
      MXS_CHECK(md_->ctx != nullptr, "pre-tokenizer: out of memory for a PCRE2 match context");
      pcre2_jit_stack_assign(md_->ctx, nullptr, md_->stack);
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
      match_begin_ = match_end_ = text_.size();
    } else if (rc < 0) {
      throw Error("pre-tokenizer: PCRE2 match failed: " + pcre2_message(rc));
    } else {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md_->md);
      match_begin_ = ov[0];
      match_end_ = ov[1];
      // The pattern cannot match empty; if a different pattern did, take one byte so we always advance.
      if (match_end_ == match_begin_) match_end_ = match_begin_ + 1;
    }
    has_match_ = true;
  }
  if (pos_ < match_begin_) {  // gap before the match (only ill-formed UTF-8 for the o200k pattern)
    piece = text_.substr(pos_, match_begin_ - pos_);
    pos_ = match_begin_;
    return true;
  }
  piece = text_.substr(match_begin_, match_end_ - match_begin_);
  pos_ = match_end_;
  has_match_ = false;
  return true;
}

}  // namespace mxs::text
