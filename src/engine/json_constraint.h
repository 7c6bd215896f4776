// response_format json_object / json_schema as a TokenConstraint: the answer is one JSON document accepted by the
// Acceptor (text/json_acceptor.h: any object; text/json_schema_acceptor.h: an object of a schema), then a stop token.
// Two framings:
//   - plain (completions): the document from the first generated token;
//   - harmony (chat): free until the final channel's header (<|channel|>final<|message|>: the reasoning and any
//     tool-call messages are not constrained, but <|return|> cannot end the turn before the answer), then the
//     document, then only <|return|>.
// After the document only the end tokens are allowed, so the model cannot trail text or whitespace.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/token_constraint.h"
#include "text/json_acceptor.h"
#include "text/json_schema_acceptor.h"
#include "text/json_token_mask.h"

namespace mxs {

// A document state's mask (JsonTokenMask::allowed), recomputed only when the state changes: inside a string every token
// leaves an equivalent state, so the mask is computed once per string (~80 us on the real vocabulary) and copied after
// (~2 us).
template <class Acceptor>
class CachedDocumentMask {
 public:
  void get(const JsonTokenMask& masks, const Acceptor& state, std::vector<uint32_t>* mask) {
    if (!state_ || !state_->equivalent(state)) {
      masks.allowed(state, &mask_);
      state_ = state;
    }
    *mask = mask_;
  }

 private:
  std::optional<Acceptor> state_;
  std::vector<uint32_t> mask_;
};

template <class Acceptor>
class JsonConstraint : public TokenConstraint {
 public:
  // start: the acceptor before the document; end_tokens: what may follow it (plain: the request's stop tokens;
  // harmony: <|return|>); keep_alive: what `start` points into (a JsonSchema), held as long as the constraint.
  JsonConstraint(std::shared_ptr<const JsonTokenMask> masks, Acceptor start, bool harmony,
                 std::vector<int32_t> end_tokens, std::shared_ptr<const void> keep_alive = nullptr);

  bool allowed(std::vector<uint32_t>* mask) override;
  bool accept(int32_t token) override;

  bool in_document() const { return phase_ == Phase::kDocument; }
  bool document_complete() const { return doc_.complete(); }

 private:
  enum class Phase { kFree, kHeader, kDocument, kEnded };
  std::shared_ptr<const JsonTokenMask> masks_;
  std::shared_ptr<const void> keep_alive_;
  std::vector<int32_t> end_tokens_;
  Phase phase_;
  std::string channel_;  // kHeader: the header text after <|channel|> so far
  Acceptor doc_;
  CachedDocumentMask<Acceptor> doc_mask_;
};

using JsonObjectConstraint = JsonConstraint<JsonAcceptor>;
using JsonSchemaConstraint = JsonConstraint<JsonSchemaAcceptor>;

// Factories for Request::constraint (each sequence gets its own state; the masks and the schema are shared).
TokenConstraintFactory json_object_constraint(std::shared_ptr<const JsonTokenMask> masks, bool harmony,
                                              std::vector<int32_t> end_tokens);
TokenConstraintFactory json_schema_constraint(std::shared_ptr<const JsonTokenMask> masks,
                                              std::shared_ptr<const JsonSchema> schema, bool harmony,
                                              std::vector<int32_t> end_tokens);

}  // namespace mxs
