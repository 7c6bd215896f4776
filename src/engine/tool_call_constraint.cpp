#include "engine/tool_call_constraint.h"

#include <sstream>

#include "common/error.h"
#include "text/special_tokens.h"

namespace mxs {
namespace {

constexpr size_t kMaxHeader = 256;  // header bytes kept (a real header is a few dozen)

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

}  // namespace

ToolCallConstraint::ToolCallConstraint(std::shared_ptr<const JsonTokenMask> masks,
                                       std::shared_ptr<const std::vector<ToolArguments>> tools, std::string header,
                                       Start start)
    : masks_(std::move(masks)), tools_(std::move(tools)), header_(std::move(header)) {
  MXS_CHECK(masks_ != nullptr && tools_ != nullptr, "ToolCallConstraint: no token masks or tools");
  if (start == Start::kRequired) {
    MXS_CHECK(!tools_->empty(), "ToolCallConstraint: tool_choice required without tools");
    phase_ = Phase::kName;
  }
  if (start == Start::kArguments) {
    const ToolArguments* tool = called_tool(header_);
    MXS_CHECK(tool != nullptr, "ToolCallConstraint: the prefilled header '" + header_ + "' calls no known tool");
    open_arguments(*tool);
  }
}

const ToolArguments* ToolCallConstraint::called_tool(const std::string& header) const {
  // As the output parser reads a header: the recipient is the word after "to=", else a bare "functions.x" word.
  std::istringstream words(header);
  std::string word, recipient;
  while (words >> word) {
    if (starts_with(word, "to=")) {
      recipient = word.substr(3);
      break;
    }
    if (recipient.empty() && starts_with(word, "functions.")) recipient = word;
  }
  if (!starts_with(recipient, "functions.")) return nullptr;
  const std::string name = recipient.substr(10);
  for (const ToolArguments& t : *tools_)
    if (t.name == name) return &t;
  return nullptr;
}

void ToolCallConstraint::open_arguments(const ToolArguments& tool) {
  if (tool.schema)
    args_ = JsonSchemaAcceptor(tool.schema.get());
  else
    args_ = JsonAcceptor{};
  phase_ = Phase::kArguments;
}

bool ToolCallConstraint::arguments_complete() const {
  return std::visit([](const auto& a) { return a.complete(); }, args_);
}

std::vector<std::string> ToolCallConstraint::name_targets() const {
  if (constrained_) return {"json"};
  std::vector<std::string> targets;
  for (const ToolArguments& t : *tools_) targets.push_back(t.name + " ");
  return targets;
}

void ToolCallConstraint::name_mask(std::vector<uint32_t>* mask) const {
  mask->assign(size_t(masks_->words()), 0u);
  const std::vector<std::string> targets = name_targets();
  bool complete = false;
  for (const std::string& target : targets) complete |= typed_ == target;
  if (complete) {  // "NAME " -> <|constrain|>; "json" -> <|message|>
    const int32_t next = constrained_ ? tok::kMessage : tok::kConstrain;
    (*mask)[size_t(next) / 32] |= 1u << (next % 32);
    return;
  }
  for (int32_t t = 0; t < masks_->vocab(); ++t) {
    const std::string_view b = masks_->bytes(t);
    if (b.empty()) continue;
    for (const std::string& target : targets) {
      if (typed_.size() + b.size() <= target.size() && target.compare(typed_.size(), b.size(), b) == 0 &&
          target.compare(0, typed_.size(), typed_) == 0) {
        (*mask)[size_t(t) / 32] |= 1u << (t % 32);
        break;
      }
    }
  }
}

bool ToolCallConstraint::allowed(std::vector<uint32_t>* mask) {
  if (phase_ == Phase::kName) {
    name_mask(mask);
    return true;
  }
  if (phase_ != Phase::kArguments) return false;  // between calls: free
  if (arguments_complete()) {  // the call's end
    mask->assign(size_t(masks_->words()), 0u);
    (*mask)[size_t(tok::kCall) / 32] |= 1u << (tok::kCall % 32);
    return true;
  }
  if (auto* s = std::get_if<JsonSchemaAcceptor>(&args_))
    schema_mask_.get(*masks_, *s, mask);
  else
    object_mask_.get(*masks_, std::get<JsonAcceptor>(args_), mask);
  return true;
}

bool ToolCallConstraint::accept(int32_t token) {
  switch (phase_) {
    case Phase::kBody:
      if (token == tok::kStart || token == tok::kChannel) {  // (<|channel|> in a body: a new header, a slip)
        phase_ = Phase::kHeader;
        header_.clear();
        if (token == tok::kChannel) header_ += ' ';
      }
      return true;
    case Phase::kHeader:
      if (token == tok::kMessage) {
        const ToolArguments* tool = called_tool(header_);
        if (tool)
          open_arguments(*tool);
        else
          phase_ = Phase::kBody;
      } else if (token == tok::kStart) {
        header_.clear();
      } else if (token == tok::kChannel || token == tok::kConstrain) {
        if (header_.size() < kMaxHeader) header_ += ' ';
      } else if (token < 0 || token >= masks_->vocab() || masks_->bytes(token).empty()) {
        phase_ = Phase::kBody;  // another special: no header
      } else if (header_.size() < kMaxHeader) {
        header_ += masks_->bytes(token);
      }
      return true;
    case Phase::kName: {
      std::vector<uint32_t> mask;  // (a few steps per request: the scan is cheap enough to repeat here)
      name_mask(&mask);
      if (token < 0 || token >= masks_->vocab() || !(mask[size_t(token) / 32] >> (token % 32) & 1u)) return false;
      if (token == tok::kConstrain) {
        constrained_ = true;
        header_ += typed_ + ' ';
        typed_.clear();
      } else if (token == tok::kMessage) {
        header_ += typed_;
        const ToolArguments* tool = called_tool(header_);
        MXS_CHECK(tool != nullptr, "ToolCallConstraint: a required call's header '" + header_ + "' names no tool");
        open_arguments(*tool);
      } else {
        typed_ += masks_->bytes(token);
      }
      return true;
    }
    case Phase::kArguments:
      if (arguments_complete()) {
        phase_ = Phase::kCallEnd;
        return token == tok::kCall;
      }
      if (token < 0 || token >= masks_->vocab() || masks_->bytes(token).empty()) return false;
      return std::visit(
          [&](auto& a) {
            auto next = a;
            if (!next.feed(masks_->bytes(token))) return false;
            a = next;
            return true;
          },
          args_);
    case Phase::kCallEnd:
      return false;  // (<|call|> ends the generation)
  }
  return false;
}

TokenConstraintFactory tool_call_constraint(std::shared_ptr<const JsonTokenMask> masks,
                                            std::shared_ptr<const std::vector<ToolArguments>> tools,
                                            std::string header, ToolCallConstraint::Start start) {
  MXS_CHECK(masks != nullptr && tools != nullptr, "tool_call_constraint: no token masks or tools");
  return [masks, tools, header, start] { return std::make_unique<ToolCallConstraint>(masks, tools, header, start); };
}

}  // namespace mxs
