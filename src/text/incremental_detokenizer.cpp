// IncrementalDetokenizer: holds back the (at most 3) bytes of a UTF-8 sequence that a token left
// incomplete. feed() over all ids followed by flush() equals decode(ids, /*skip_special=*/true).
#include "common/error.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace mxs {

std::string IncrementalDetokenizer::feed(int32_t id) {
  if (tok_.is_special(id)) return {};  // specials never become text; pending bytes wait for the next token
  if (id < 0 || id >= tok_.vocab_size()) {
    throw Error(strfmt("detokenizer: token id %d is out of range", id));
  }
  pending_ += tok_.token_bytes(id);
  const size_t ready = utf8::complete_prefix_length(pending_);
  std::string out;
  if (ready == 0) return out;
  utf8::append_lossy(out, std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string IncrementalDetokenizer::flush() {
  std::string out;
  utf8::append_lossy(out, pending_);  // a truncated sequence becomes one U+FFFD
  pending_.clear();
  return out;
}

}  // namespace mxs
