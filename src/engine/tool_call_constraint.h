// Function-call arguments held to their tool's JSON Schema (chat and the Responses API with function tools). The
// model writes harmony: `<|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}
// <|call|>` (the recipient may also stand before <|channel|>). This constraint leaves everything free except a call's
// arguments: once a header names a known tool and <|message|> opens the call, the arguments must be one JSON object of
// that tool's `parameters` (JsonSchemaAcceptor when the json_schema subset compiles it, else any object: JsonAcceptor),
// and then only <|call|> may follow. Outside calls allowed() restricts nothing, so the sampler keeps its fast paths
// (and under async scheduling no mask is deferred: may_restrict_after_next() is false between messages).
//   tool_choice named:    the prompt ends with the call's header (prefilled): the arguments from the first token;
//   tool_choice required: the prompt ends with `<|channel|>commentary to=functions.`: the header continues with the
//                         name the model picks, held to `NAME <|constrain|>json<|message|>` for a NAME of the tools
//                         (a vocabulary scan per header token: a few steps);
//   tool_choice auto:     the prompt ends with `<|start|>assistant`: any call the model makes.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "engine/json_constraint.h"
#include "engine/token_constraint.h"
#include "text/json_acceptor.h"
#include "text/json_schema_acceptor.h"
#include "text/json_token_mask.h"

namespace mxs {

// A tool's arguments: its name and its compiled `parameters` (null: the subset cannot hold them; any JSON object).
struct ToolArguments {
  std::string name;
  std::shared_ptr<const JsonSchema> schema;
};

class ToolCallConstraint : public TokenConstraint {
 public:
  enum class Start {
    kAuto,       // the prompt ends with <|start|>assistant
    kRequired,   // ... with `<|channel|>commentary to=functions.`: a known tool's name and call header must follow
    kArguments,  // ... with a call's <|message|> (`header` names the tool)
  };
  // header: the header text the prompt already holds after its last <|start|>assistant ("" for kAuto; the prefill's
  // text, specials as spaces, otherwise).
  ToolCallConstraint(std::shared_ptr<const JsonTokenMask> masks, std::shared_ptr<const std::vector<ToolArguments>> tools,
                     std::string header, Start start);

  bool allowed(std::vector<uint32_t>* mask) override;
  bool accept(int32_t token) override;
  // A mask can follow one more token only inside a call, or when that token could be the <|message|> of a header
  // that already names a tool (the name cannot be completed and the call opened by one token).
  bool may_restrict_after_next() const override {
    return phase_ == Phase::kHeader ? header_tool_ != nullptr : phase_ != Phase::kBody;
  }
  bool naming() const { return phase_ == Phase::kName; }

  bool in_arguments() const { return phase_ == Phase::kArguments; }

 private:
  enum class Phase { kBody, kHeader, kName, kArguments, kCallEnd };
  // The tool a header calls ("to=functions.NAME", or a bare "functions.NAME", as the output parser reads it), or null.
  const ToolArguments* called_tool(const std::string& header) const;
  void open_arguments(const ToolArguments& tool);
  // kName (required): the header's text after "to=functions." must stay a prefix of "NAME " for a tool, then come
  // <|constrain|>, "json" and <|message|>: the ordinary tokens whose bytes keep `typed_` a prefix of a target.
  bool name_allows(int32_t token) const;
  void name_mask(std::vector<uint32_t>* mask) const;  // name_allows over the vocabulary
  void set_header(std::string header);                // header_ and header_tool_
  bool arguments_complete() const;

  std::shared_ptr<const JsonTokenMask> masks_;
  std::shared_ptr<const std::vector<ToolArguments>> tools_;
  Phase phase_ = Phase::kHeader;
  std::string header_;  // kHeader: the header's text since <|start|> (<|channel|>, <|constrain|> as spaces)
  const ToolArguments* header_tool_ = nullptr;  // called_tool(header_), kept with it (asked every step)
  std::string typed_;   // kName: the name part so far ("get_wea", "get_weather ", then "" after <|constrain|>, "js")
  bool constrained_ = false;  // kName: <|constrain|> came; `typed_` now spells "json"
  std::variant<JsonAcceptor, JsonSchemaAcceptor> args_;
  CachedDocumentMask<JsonAcceptor> object_mask_;
  CachedDocumentMask<JsonSchemaAcceptor> schema_mask_;
};

// The factory for Request::constraint (the masks and the compiled schemas are shared by every sequence).
TokenConstraintFactory tool_call_constraint(std::shared_ptr<const JsonTokenMask> masks,
                                            std::shared_ptr<const std::vector<ToolArguments>> tools,
                                            std::string header, ToolCallConstraint::Start start);

}  // namespace mxs
