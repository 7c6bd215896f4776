// response_format json_object as a TokenConstraint: the answer is one JSON object (text/json_acceptor.h), then a
// stop token. Two framings:
//   - plain (completions): the object from the first generated token;
//   - harmony (chat): free until the final channel's header (<|channel|>final<|message|>: the reasoning and any
//     tool-call messages are not constrained, but <|return|> cannot end the turn before the answer), then the object,
//     then only <|return|>.
// After the object only the end tokens are allowed, so the model cannot trail text or whitespace.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/token_constraint.h"
#include "text/json_acceptor.h"
#include "text/json_token_mask.h"

namespace mxs {

class JsonObjectConstraint : public TokenConstraint {
 public:
  // end_tokens: what may follow the object (plain: the request's stop tokens; harmony: <|return|>).
  JsonObjectConstraint(std::shared_ptr<const JsonTokenMask> masks, bool harmony, std::vector<int32_t> end_tokens);

  bool allowed(std::vector<uint32_t>* mask) override;
  bool accept(int32_t token) override;

  bool in_object() const { return phase_ == Phase::kObject; }
  bool object_complete() const { return json_.complete(); }
  // A factory for Request::constraint (each sequence gets its own state; the masks are shared).
  static TokenConstraintFactory factory(std::shared_ptr<const JsonTokenMask> masks, bool harmony,
                                        std::vector<int32_t> end_tokens);

 private:
  enum class Phase { kFree, kHeader, kObject, kEnded };
  std::shared_ptr<const JsonTokenMask> masks_;
  bool harmony_;
  std::vector<int32_t> end_tokens_;
  Phase phase_;
  std::string channel_;  // kHeader: the header text after <|channel|> so far
  JsonAcceptor json_;
  // The last object-phase mask and its state: inside a string every token leaves an equivalent state, so the mask is
  // computed once per string (~80 us) and copied after (~2 us).
  bool cached_ = false;
  JsonAcceptor cached_state_;
  std::vector<uint32_t> cached_mask_;
};

}  // namespace mxs
