// A per-request restriction of the tokens a sequence may sample (structured outputs: response_format json_object,
// engine/json_constraint.h). The engine makes one instance per sequence from Request::constraint, asks it for the
// allowed set before each step that samples the sequence, and hands it every sampled token. Under async scheduling the
// mask of a step whose input is the sample still in flight is asked for once that sample has been accepted, while the
// runner computes the step's forward pass (SequenceStep::allowed_tokens_deferred, ModelRunner::supply_masks).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace mxs {

class TokenConstraint {
 public:
  virtual ~TokenConstraint() = default;
  // The allowed tokens as bitmask words over the model's vocabulary (bit t % 32 of word t / 32), or false when this
  // step is unrestricted (mask left as it was).
  virtual bool allowed(std::vector<uint32_t>* mask) = 0;
  // A sampled token. false: it breaks the constraint (the request then fails; allowed() never lets one through).
  virtual bool accept(int32_t token) = 0;
  // Whether allowed() could restrict anything after one more token, whichever it is. false lets async scheduling give
  // the step after the token in flight no mask at all (no deferred mask: the row keeps the fast sampling paths).
  virtual bool may_restrict_after_next() const { return true; }
};

using TokenConstraintFactory = std::function<std::unique_ptr<TokenConstraint>()>;

}  // namespace mxs
