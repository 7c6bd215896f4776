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
    : masks_(std::move(masks)), tools_(std::move(tools)) {
  MXS_CHECK(masks_ != nullptr && tools_ != nullptr, "ToolCallConstraint: no token masks or tools");
  set_header(std::move(header));
  if (start == Start::kRequired) {
    MXS_CHECK(!tools_->empty(), "ToolCallConstraint: tool_choice required without tools");
    phase_ = Phase::kName;
  }
  if (start == Start::kArguments) {
    MXS_CHECK(header_tool_ != nullptr, "ToolCallConstraint: the prefilled header '" + header_ + "' calls no known tool");
    open_arguments(*header_tool_);
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

void ToolCallConstraint::set_header(std::string header) {
  header_ = std::move(header);
  header_tool_ = called_tool(header_);
}

bool ToolCallConstraint::name_allows(int32_t token) const {
  // The targets: "NAME " for each tool, then (after <|constrain|>) "json"; a complete one allows only the special
  // that follows it.
  const auto complete = [&](const std::string& target) { return typed_ == target; };
  const auto extends = [&](const std::string& target, std::string_view b) {
    return typed_.size() + b.size() <= target.size() && target.compare(0, typed_.size(), typed_) == 0 &&
           target.compare(typed_.size(), b.size(), b) == 0;
  };
  if (token < 0 || token >= masks_->vocab()) return false;
  const std::string_view b = masks_->bytes(token);
  if (constrained_) return complete("json") ? token == tok::kMessage : !b.empty() && extends("json", b);
  for (const ToolArguments& t : *tools_)
    if (complete(t.name + " ")) return token == tok::kConstrain;
  if (b.empty()) return false;
  for (const ToolArguments& t : *tools_)
    if (extends(t.name + " ", b)) return true;
  return false;
}

void ToolCallConstraint::name_mask(std::vector<uint32_t>* mask) const {
  mask->assign(size_t(masks_->words()), 0u);
  for (int32_t t = 0; t < masks_->vocab(); ++t)
    if (name_allows(t)) (*mask)[size_t(t) / 32] |= 1u << (t % 32);
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
        set_header(token == tok::kChannel ? std::string(1, ' ') : std::string());
      }
      return true;
    case Phase::kHeader:
      if (token == tok::kMessage) {
        if (header_tool_)
          open_arguments(*header_tool_);
        else
          phase_ = Phase::kBody;
      } else if (token == tok::kStart) {
        set_header("");
      } else if (token == tok::kChannel || token == tok::kConstrain) {
        if (header_.size() < kMaxHeader) set_header(header_ + ' ');
      } else if (token < 0 || token >= masks_->vocab() || masks_->bytes(token).empty()) {
        phase_ = Phase::kBody;  // another special: no header
      } else if (header_.size() < kMaxHeader) {
        set_header(header_ + std::string(masks_->bytes(token)));
      }
      return true;
    case Phase::kName: {
      if (!name_allows(token)) return false;
      if (token == tok::kConstrain) {
        constrained_ = true;
        set_header(header_ + typed_ + ' ');
        typed_.clear();
      } else if (token == tok::kMessage) {
        set_header(header_ + typed_);
        MXS_CHECK(header_tool_ != nullptr, "ToolCallConstraint: a required call's header '" + header_ + "' names no tool");
        open_arguments(*header_tool_);
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
