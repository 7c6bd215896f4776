// response_format json_schema: a JSON Schema subset compiled to a graph of nodes (JsonSchema), and a byte-level
// acceptor of the documents it describes (JsonSchemaAcceptor: the same interface as JsonAcceptor, so JsonTokenMask and
// the engine's constraint take either). The subset covers what OpenAI's strict mode and the schema generators of the
// client libraries (zod, pydantic) emit; it is checked at compile time, and anything else is an Error naming the
// keyword and its path:
//   - type: "object" | "array" | "string" | "number" | "integer" | "boolean" | "null", or a list of them;
//   - object: properties (at most 64), required; additionalProperties may only be false (extra keys are never
//     generated, with it or without it); keys come in any order, each at most once; '}' only once every required
//     key is there;
//   - array: items (required: the schema of every element), minItems, maxItems;
//   - string: minLength, maxLength (in code points; a \u surrogate pair is one);
//   - integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (exact, any int64 bounds);
//   - number: the same bounds, on plain decimals: no exponent, at most kMaxNumberDigits digits before and after the
//     point (a bounded number is written out, e.g. 0.25, not 2.5e-1);
//   - enum / const: any JSON values (at most 64), generated as their compact JSON text;
//   - anyOf / oneOf: alternatives whose values begin with different bytes (a string and null, an object and null, a
//     number and a string...), so the first byte of a value picks its alternative; overlapping ones are refused
//     (and oneOf then means anyOf: no value can match two of them);
//   - allOf with one schema: that schema;
//   - $ref to "#" or any JSON pointer into the document ("#/$defs/name", "#/definitions/name"), recursion included;
//   - ignored: description, title, $schema, $comment, $defs / definitions (reached through $ref), default, examples,
//     deprecated, readOnly, writeOnly, strict.
// The top level must be an object. Strings are checked as JsonAcceptor checks them (escapes, strict UTF-8); numbers
// by JSON's grammar (integer: no fraction or exponent). Whitespace: between tokens, at most kMaxWhitespaceRun bytes in
// a row; none before the top-level '{' or after its '}'. At most kMaxDepth nested values (a recursive schema that
// requires more cannot close: the constraint then fails the request).
#pragma once
#include <bitset>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "text/json_lexer.h"

namespace mxs {

class JsonSchema {
 public:
  enum Type : uint8_t {
    kObject = 1, kArray = 2, kString = 4, kNumber = 8, kInteger = 16, kBoolean = 32, kNull = 64,
  };
  static constexpr uint32_t kUnbounded = std::numeric_limits<uint32_t>::max();
  struct Node {
    uint8_t types = 0;                    // Type bits; 0 with enum_texts: an enum; 0 with any_of: a union
    std::vector<std::string> enum_texts;  // enum / const: each value's compact JSON text
    std::vector<int> any_of;              // anyOf / oneOf: the alternatives (their `first` sets are disjoint)
    std::vector<std::string> keys;        // object: each property's key as JSON text, quotes included
    std::vector<int> props;               // object: each property's node
    uint64_t required = 0;                // object: bit i = keys[i] is required
    int items = -1;                       // array: the items' node
    uint32_t min_items = 0, max_items = kUnbounded;    // array
    uint32_t min_length = 0, max_length = kUnbounded;  // string, in code points
    bool int_bounded = false;             // integer: minimum <= value <= maximum
    int64_t minimum = std::numeric_limits<int64_t>::min(), maximum = std::numeric_limits<int64_t>::max();
    bool num_bounded = false;             // number: lo <(=) value <(=) hi, plain decimals (no exponent)
    double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
    bool lo_exclusive = false, hi_exclusive = false;
    std::bitset<256> first;               // the bytes a value of this node can begin with
    bool string_bounded() const { return min_length > 0 || max_length != kUnbounded; }
  };
  static constexpr int kMaxProperties = 64;
  static constexpr int kMaxEnum = 64;
  static constexpr int kMaxNodes = 4096;
  static constexpr int kMaxNumberDigits = 15;  // bounded numbers: digits before, and after, the point

  // Throws mxs::Error "json_schema: <path>: <what>" for what the subset does not hold.
  static std::shared_ptr<const JsonSchema> compile(const nlohmann::json& schema);
  const Node& node(int i) const { return nodes_[size_t(i)]; }
  int root() const { return root_; }

 private:
  int add(const nlohmann::json& s, const std::string& path, int depth);
  void fill(int index, const nlohmann::json& s, const std::string& path, int depth);
  const nlohmann::json& resolve(const nlohmann::json& ref, const std::string& path) const;
  void compute_first_sets();

  std::vector<Node> nodes_;
  int root_ = 0;
  const nlohmann::json* document_ = nullptr;        // while compiling: the whole schema ($ref targets)
  std::map<const nlohmann::json*, int> ref_nodes_;  // $ref target -> its node (compiled once: recursion)
  std::vector<std::pair<int, std::string>> unions_;  // anyOf nodes and their paths (checked after compile)
};

class JsonSchemaAcceptor {
 public:
  static constexpr int kMaxDepth = 16;
  static constexpr int kMaxWhitespaceRun = 16;

  // `schema` must outlive the acceptor and its copies (the constraint that makes them holds it).
  explicit JsonSchemaAcceptor(const JsonSchema* schema) : schema_(schema) {}

  // As JsonAcceptor: false leaves the acceptor unspecified (feed a copy to try).
  bool feed(uint8_t c);
  bool feed(std::string_view bytes) {
    for (char c : bytes)
      if (!feed(uint8_t(c))) return false;
    return true;
  }
  bool complete() const { return done_; }
  // Inside a free string (type "string"), no escape or UTF-8 continuation pending.
  bool in_plain_string() const;
  bool equivalent(const JsonSchemaAcceptor& o) const;

 private:
  // One open value. kind: what it is; phase: where in it.
  struct Frame {
    uint16_t node = 0;
    uint8_t kind = 0, phase = 0;  // phase: objects and arrays
    uint8_t aux = 0;              // literal: 1 = true / false / null, 0 = the node's enum texts; bounded string:
                                  // the surrogate-pair bits of json_schema_acceptor.cpp
    bool neg = false;             // bounded integer: a '-' came
    uint8_t digits = 0;           // bounded integer: digits so far
    uint32_t count = 0;           // array: elements; bounded string: code points (saturated at the minimum
                                  // when there is no maximum, so that equivalent states compare equal)
    uint64_t mag = 0;             // bounded integer / number: the integer digits' value
    uint64_t frac = 0;            // bounded number: the fraction digits' value
    uint8_t frac_digits = 0;      // bounded number: fraction digits so far
    bool dot = false;             // bounded number: the point came
    uint8_t pos = 0;              // key / literal: bytes matched
    int8_t key = -1;              // object: the key whose value comes or is open
    JsonStringLexer str;          // string
    JsonNumberLexer num;          // number
    uint64_t done = 0;            // object: keys already given
    uint64_t cand = 0;            // object key / literal: the texts still matching
    bool operator==(const Frame&) const = default;
  };
  bool start_value(int node, uint8_t c);  // a value of `node` starting with c (pushes its frame)
  bool value_done();                      // the top frame's value is complete: pop it, tell the parent
  bool feed_frame(uint8_t c);
  bool count_string_byte(Frame& f, const JsonSchema::Node& n, uint8_t c);  // minLength / maxLength
  bool bounded_number_byte(Frame& f, const JsonSchema::Node& n, uint8_t c);  // a number's bounds
  bool between() const;                   // whitespace may come now

  const JsonSchema* schema_;
  Frame stack_[kMaxDepth];
  uint8_t depth_ = 0;
  uint8_t ws_run_ = 0;
  bool started_ = false, done_ = false;
};

}  // namespace mxs
