#include "engine/json_constraint.h"

#include <algorithm>

#include "common/error.h"
#include "text/special_tokens.h"

namespace mxs {

template <class Acceptor>
JsonConstraint<Acceptor>::JsonConstraint(std::shared_ptr<const JsonTokenMask> masks, Acceptor start, bool harmony,
                                         std::vector<int32_t> end_tokens, std::shared_ptr<const void> keep_alive)
    : masks_(std::move(masks)),
      keep_alive_(std::move(keep_alive)),
      end_tokens_(std::move(end_tokens)),
      phase_(harmony ? Phase::kFree : Phase::kDocument),
      doc_(start) {
  MXS_CHECK(masks_ != nullptr, "JsonConstraint: no token masks");
  for (int32_t t : end_tokens_)
    MXS_CHECK(t >= 0 && t < masks_->vocab(), strfmt("JsonConstraint: end token %d outside the vocabulary", t));
}

template <class Acceptor>
bool JsonConstraint<Acceptor>::allowed(std::vector<uint32_t>* mask) {
  switch (phase_) {
    case Phase::kFree:
    case Phase::kHeader:
      // Anything but the end of the turn: <|return|> may only close the answer.
      mask->assign(size_t(masks_->words()), ~0u);
      if (masks_->vocab() % 32) mask->back() = (1u << (masks_->vocab() % 32)) - 1;
      (*mask)[size_t(tok::kReturn) / 32] &= ~(1u << (tok::kReturn % 32));
      return true;
    case Phase::kDocument:
      if (!doc_.complete()) {
        doc_mask_.get(*masks_, doc_, mask);
        return true;
      }
      [[fallthrough]];
    case Phase::kEnded:
      mask->assign(size_t(masks_->words()), 0u);
      for (int32_t t : end_tokens_) (*mask)[size_t(t) / 32] |= 1u << (t % 32);
      return true;
  }
  return false;
}

template <class Acceptor>
bool JsonConstraint<Acceptor>::accept(int32_t token) {
  switch (phase_) {
    case Phase::kFree:
      if (token == tok::kReturn) return false;
      if (token == tok::kChannel) phase_ = Phase::kHeader, channel_.clear();
      return true;
    case Phase::kHeader:
      if (token == tok::kReturn) return false;
      if (token == tok::kMessage) {
        // "final", or "final" with a recipient / constraint suffix the header may carry.
        const size_t end = channel_.find_first_of(" <");
        phase_ = channel_.substr(0, end) == "final" ? Phase::kDocument : Phase::kFree;
      } else if (token == tok::kConstrain) {
        channel_ += "<";  // (ends the channel name)
      } else if (token < 0 || token >= masks_->vocab() || masks_->bytes(token).empty()) {
        phase_ = token == tok::kChannel ? Phase::kHeader : Phase::kFree;  // another special: not a header
        channel_.clear();
      } else if (channel_.size() < 64) {
        channel_ += masks_->bytes(token);
      }
      return true;
    case Phase::kDocument:
      if (!doc_.complete()) {
        if (token < 0 || token >= masks_->vocab()) return false;
        const std::string_view b = masks_->bytes(token);
        Acceptor next = doc_;
        if (b.empty() || !next.feed(b)) return false;
        doc_ = next;
        return true;
      }
      phase_ = Phase::kEnded;
      return std::find(end_tokens_.begin(), end_tokens_.end(), token) != end_tokens_.end();
    case Phase::kEnded:
      return false;
  }
  return false;
}

template class JsonConstraint<JsonAcceptor>;
template class JsonConstraint<JsonSchemaAcceptor>;

TokenConstraintFactory json_object_constraint(std::shared_ptr<const JsonTokenMask> masks, bool harmony,
                                              std::vector<int32_t> end_tokens) {
  return [masks, harmony, end_tokens] {
    return std::make_unique<JsonObjectConstraint>(masks, JsonAcceptor{}, harmony, end_tokens);
  };
}

TokenConstraintFactory json_schema_constraint(std::shared_ptr<const JsonTokenMask> masks,
                                              std::shared_ptr<const JsonSchema> schema, bool harmony,
                                              std::vector<int32_t> end_tokens) {
  MXS_CHECK(schema != nullptr, "json_schema_constraint: no schema");
  return [masks, schema, harmony, end_tokens] {
    return std::make_unique<JsonSchemaConstraint>(masks, JsonSchemaAcceptor(schema.get()), harmony, end_tokens,
                                                  schema);
  };
}

}  // namespace mxs
