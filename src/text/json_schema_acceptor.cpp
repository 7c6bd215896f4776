#include "text/json_schema_acceptor.h"

#include <set>

#include "common/error.h"

namespace mxs {
namespace {

using Json = nlohmann::json;

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

constexpr std::string_view kLiterals[3] = {"true", "false", "null"};

// Frame kinds and their phases.
enum Kind : uint8_t { kObj, kArr, kStr, kNum, kLit };
enum ObjPhase : uint8_t { kObjOpen, kObjKey, kObjColon, kObjValue, kObjAfter, kObjNext };
enum ArrPhase : uint8_t { kArrOpen, kArrAfter, kArrNext };

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error("json_schema: " + (path.empty() ? std::string("/") : path) + ": " + what);
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::compile(const nlohmann::json& schema) {
  auto s = std::make_shared<JsonSchema>();
  s->add(schema, "", 0);
  const Node& top = s->nodes_[0];
  if (top.types != kObject || !top.enum_texts.empty()) bad("", "the top level must be {\"type\": \"object\", ...}");
  return s;
}

int JsonSchema::add(const Json& s, const std::string& path, int depth) {
  if (depth >= JsonSchemaAcceptor::kMaxDepth)
    bad(path, strfmt("nested deeper than %d levels", JsonSchemaAcceptor::kMaxDepth));
  if (!s.is_object()) bad(path, "a schema must be an object");
  static const std::set<std::string> known = {"type",  "properties", "required", "additionalProperties", "items",
                                              "enum",  "const",      "description", "title", "$schema",
                                              "default", "examples", "strict"};
  for (auto it = s.begin(); it != s.end(); ++it)
    if (!known.count(it.key())) bad(path, "keyword '" + it.key() + "' is not supported");
  const int idx = int(nodes_.size());
  nodes_.emplace_back();
  Node n;
  if (s.contains("enum") || s.contains("const")) {
    if (s.contains("const")) n.enum_texts.push_back(s["const"].dump());
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) bad(path, "enum must be a non-empty array");
      for (const Json& v : s["enum"]) n.enum_texts.push_back(v.dump());
    }
    if (n.enum_texts.size() > size_t(kMaxEnum)) bad(path, strfmt("more than %d enum values", kMaxEnum));
    nodes_[size_t(idx)] = std::move(n);
    return idx;
  }
  if (!s.contains("type")) bad(path, "needs a type (or enum / const)");
  std::vector<std::string> names;
  if (s["type"].is_string()) {
    names.push_back(s["type"].get<std::string>());
  } else if (s["type"].is_array()) {
    for (const Json& t : s["type"]) {
      if (!t.is_string()) bad(path, "type must be a string or an array of strings");
      names.push_back(t.get<std::string>());
    }
  } else {
    bad(path, "type must be a string or an array of strings");
  }
  for (const std::string& t : names) {
    const uint8_t bit = t == "object" ? kObject : t == "array" ? kArray : t == "string" ? kString
                      : t == "number" ? kNumber : t == "integer" ? kInteger : t == "boolean" ? kBoolean
                      : t == "null" ? kNull : 0;
    if (bit == 0) bad(path, "type '" + t + "' is not a JSON Schema type");
    n.types |= bit;
  }
  if (n.types & kObject) {
    if (s.contains("additionalProperties") && s["additionalProperties"] != Json(false))
      bad(path, "additionalProperties may only be false");
    if (s.contains("properties")) {
      const Json& props = s["properties"];
      if (!props.is_object()) bad(path, "properties must be an object");
      if (props.size() > size_t(kMaxProperties)) bad(path, strfmt("more than %d properties", kMaxProperties));
      for (auto it = props.begin(); it != props.end(); ++it) {
        n.keys.push_back(Json(it.key()).dump());
        n.props.push_back(add(it.value(), path + "/properties/" + it.key(), depth + 1));
      }
    }
    if (s.contains("required")) {
      if (!s["required"].is_array()) bad(path, "required must be an array of property names");
      for (const Json& r : s["required"]) {
        const std::string key = r.is_string() ? Json(r.get<std::string>()).dump() : "";
        size_t i = 0;
        while (i < n.keys.size() && n.keys[i] != key) ++i;
        if (i == n.keys.size()) bad(path, "required names '" + r.dump() + "', which is not in properties");
        n.required |= uint64_t(1) << i;
      }
    }
  }
  if (n.types & kArray) {
    if (!s.contains("items")) bad(path, "an array needs items");
    n.items = add(s["items"], path + "/items", depth + 1);
  }
  nodes_[size_t(idx)] = std::move(n);
  return idx;
}

bool JsonSchemaAcceptor::in_plain_string() const {
  if (depth_ == 0) return false;
  const Frame& f = stack_[depth_ - 1];
  return f.kind == kStr && f.str.plain();
}

bool JsonSchemaAcceptor::equivalent(const JsonSchemaAcceptor& o) const {
  if (schema_ != o.schema_ || depth_ != o.depth_ || ws_run_ != o.ws_run_ || started_ != o.started_ ||
      done_ != o.done_)
    return false;
  for (int i = 0; i < depth_; ++i)
    if (!(stack_[i] == o.stack_[i])) return false;
  return true;
}

bool JsonSchemaAcceptor::between() const {
  if (depth_ == 0) return false;
  const Frame& f = stack_[depth_ - 1];
  return (f.kind == kObj && f.phase != kObjKey) || f.kind == kArr;
}

bool JsonSchemaAcceptor::start_value(int node_index, uint8_t c) {
  if (depth_ == kMaxDepth) return false;
  const JsonSchema::Node& n = schema_->node(node_index);
  Frame f;
  f.node = uint16_t(node_index);
  if (!n.enum_texts.empty()) {  // an enum: its texts, matched byte by byte
    for (size_t i = 0; i < n.enum_texts.size(); ++i)
      if (uint8_t(n.enum_texts[i][0]) == c) f.cand |= uint64_t(1) << i;
    if (f.cand == 0) return false;
    f.kind = kLit, f.aux = 0, f.pos = 1;
  } else if (c == '{' && (n.types & JsonSchema::kObject)) {
    f.kind = kObj, f.phase = kObjOpen;
  } else if (c == '[' && (n.types & JsonSchema::kArray)) {
    f.kind = kArr, f.phase = kArrOpen;
  } else if (c == '"' && (n.types & JsonSchema::kString)) {
    f.kind = kStr;
  } else if ((n.types & (JsonSchema::kNumber | JsonSchema::kInteger)) &&
             f.num.start(c, /*integer_only=*/!(n.types & JsonSchema::kNumber))) {
    f.kind = kNum;
  } else if ((c == 't' || c == 'f') && (n.types & JsonSchema::kBoolean)) {
    f.kind = kLit, f.aux = 1, f.pos = 1, f.cand = c == 't' ? 1 : 2;
  } else if (c == 'n' && (n.types & JsonSchema::kNull)) {
    f.kind = kLit, f.aux = 1, f.pos = 1, f.cand = 4;
  } else {
    return false;
  }
  stack_[depth_++] = f;
  return true;
}

bool JsonSchemaAcceptor::value_done() {
  --depth_;
  if (depth_ == 0) {
    done_ = true;
    return true;
  }
  Frame& p = stack_[depth_ - 1];
  if (p.kind == kObj) {
    p.done |= uint64_t(1) << p.key;
    p.phase = kObjAfter;
  } else {
    p.phase = kArrAfter;
  }
  return true;
}

bool JsonSchemaAcceptor::feed(uint8_t c) {
  if (done_) return false;
  if (!started_) {
    if (c != '{') return false;
    started_ = true;
    return start_value(0, c);
  }
  if (is_ws(c) && between()) return ++ws_run_ <= kMaxWhitespaceRun;
  ws_run_ = 0;
  return feed_frame(c);
}

bool JsonSchemaAcceptor::feed_frame(uint8_t c) {
  Frame& f = stack_[depth_ - 1];
  const JsonSchema::Node& n = schema_->node(f.node);
  switch (f.kind) {
    case kObj: {
      const uint64_t all = n.keys.size() == 64 ? ~uint64_t(0) : (uint64_t(1) << n.keys.size()) - 1;
      switch (f.phase) {
        case kObjOpen:
        case kObjNext:
          if (c == '}' && f.phase == kObjOpen && (f.done & n.required) == n.required) return value_done();
          if (c != '"' || (all & ~f.done) == 0) return false;
          f.phase = kObjKey, f.cand = all & ~f.done, f.pos = 1;
          return true;
        case kObjKey: {
          uint64_t left = 0;
          int complete = -1;
          for (size_t i = 0; i < n.keys.size(); ++i) {
            if (!(f.cand >> i & 1)) continue;
            const std::string& k = n.keys[i];
            if (f.pos < k.size() && uint8_t(k[f.pos]) == c) {
              left |= uint64_t(1) << i;
              if (size_t(f.pos) + 1 == k.size()) complete = int(i);  // (JSON strings are prefix-free: at most one)
            }
          }
          if (left == 0) return false;
          f.cand = left, ++f.pos;
          if (complete >= 0) f.key = int8_t(complete), f.phase = kObjColon;
          return true;
        }
        case kObjColon:
          if (c != ':') return false;
          f.phase = kObjValue;
          return true;
        case kObjValue:
          return start_value(n.props[size_t(f.key)], c);
        case kObjAfter:
          if (c == ',') {
            if ((all & ~f.done) == 0) return false;
            f.phase = kObjNext;
            return true;
          }
          return c == '}' && (f.done & n.required) == n.required && value_done();
      }
      return false;
    }
    case kArr:
      if (f.phase == kArrOpen && c == ']') return value_done();
      if (f.phase == kArrAfter) {
        if (c == ',') {
          f.phase = kArrNext;
          return true;
        }
        return c == ']' && value_done();
      }
      return start_value(n.items, c);
    case kStr:
      switch (f.str.feed(c)) {
        case LexStep::kTaken: return true;
        case LexStep::kRejected: return false;
        case LexStep::kDone: return value_done();
      }
      return false;
    case kNum:
      switch (f.num.feed(c)) {
        case LexStep::kTaken: return true;
        case LexStep::kRejected: return false;
        case LexStep::kDone: return value_done() && feed(c);  // the number ended before c
      }
      return false;
    case kLit: {
      uint64_t left = 0;
      bool complete = false;
      const size_t count = f.aux ? 3 : n.enum_texts.size();
      for (size_t i = 0; i < count; ++i) {
        if (!(f.cand >> i & 1)) continue;
        const std::string_view t = f.aux ? kLiterals[i] : std::string_view(n.enum_texts[i]);
        if (f.pos < t.size() && uint8_t(t[f.pos]) == c) left |= uint64_t(1) << i;
        if (f.pos == t.size()) complete = true;
      }
      if (left != 0) {
        f.cand = left, ++f.pos;
        return true;
      }
      return complete && value_done() && feed(c);  // the value ended before c
    }
  }
  return false;
}

}  // namespace mxs
