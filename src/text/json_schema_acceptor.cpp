#include "text/json_schema_acceptor.h"

#include <set>

#include "common/error.h"
#include "text/json_acceptor.h"

namespace mxs {
namespace {

using Json = nlohmann::json;

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
bool is_hex(uint8_t c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

constexpr std::string_view kLiterals[3] = {"true", "false", "null"};

// Frame kinds and their phases.
enum Kind : uint8_t { kObj, kArr, kStr, kNum, kLit };
enum ObjPhase : uint8_t { kObjOpen, kObjKey, kObjColon, kObjValue, kObjAfter, kObjNext };
enum ArrPhase : uint8_t { kArrOpen, kArrAfter, kArrNext };
enum StrPhase : uint8_t { kStrIn, kStrEscape, kStrUnicode };
enum NumPhase : uint8_t { kMinus, kZero, kInt, kDot, kFrac, kExp, kExpSign, kExpDigits };

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
  return f.kind == kStr && f.phase == kStrIn && f.aux == 0;
}

bool JsonSchemaAcceptor::equivalent(const JsonSchemaAcceptor& o) const {
  if (schema_ != o.schema_ || depth_ != o.depth_ || ws_run_ != o.ws_run_ || started_ != o.started_ ||
      done_ != o.done_)
    return false;
  for (int i = 0; i < depth_; ++i) {
    const Frame &a = stack_[i], &b = o.stack_[i];
    if (a.node != b.node || a.kind != b.kind || a.phase != b.phase || a.aux != b.aux || a.lo != b.lo ||
        a.hi != b.hi || a.pos != b.pos || a.key != b.key || a.done != b.done || a.cand != b.cand)
      return false;
  }
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
    f.kind = kStr, f.phase = kStrIn;
  } else if ((c == '-' || is_digit(c)) && (n.types & (JsonSchema::kNumber | JsonSchema::kInteger))) {
    f.kind = kNum, f.aux = (n.types & JsonSchema::kNumber) ? 0 : 1;
    f.phase = c == '-' ? kMinus : c == '0' ? kZero : kInt;
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
      switch (f.phase) {
        case kStrIn:
          if (f.aux > 0) {
            if (c < f.lo || c > f.hi) return false;
            --f.aux, f.lo = 0x80, f.hi = 0xBF;
            return true;
          }
          if (c == '"') return value_done();
          if (c == '\\') {
            f.phase = kStrEscape;
            return true;
          }
          if (c < 0x20) return false;
          return c < 0x80 || utf8_lead_byte(c, &f.aux, &f.lo, &f.hi);
        case kStrEscape:
          if (c == 'u') {
            f.phase = kStrUnicode, f.pos = 0;
            return true;
          }
          if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't') {
            f.phase = kStrIn;
            return true;
          }
          return false;
        case kStrUnicode:
          if (!is_hex(c)) return false;
          if (++f.pos == 4) f.phase = kStrIn, f.pos = 0;
          return true;
      }
      return false;
    case kNum: {
      const bool integer = f.aux != 0;
      switch (f.phase) {
        case kMinus:
          if (!is_digit(c)) return false;
          f.phase = c == '0' ? kZero : kInt;
          return true;
        case kZero:
        case kInt:
          if (is_digit(c) && f.phase == kInt) return true;
          if (!integer && c == '.') {
            f.phase = kDot;
            return true;
          }
          if (!integer && (c == 'e' || c == 'E')) {
            f.phase = kExp;
            return true;
          }
          break;  // the number ends before c
        case kDot:
          if (!is_digit(c)) return false;
          f.phase = kFrac;
          return true;
        case kFrac:
          if (is_digit(c)) return true;
          if (c == 'e' || c == 'E') {
            f.phase = kExp;
            return true;
          }
          break;
        case kExp:
          if (c == '+' || c == '-') {
            f.phase = kExpSign;
            return true;
          }
          [[fallthrough]];
        case kExpSign:
          if (!is_digit(c)) return false;
          f.phase = kExpDigits;
          return true;
        case kExpDigits:
          if (is_digit(c)) return true;
          break;
      }
      return value_done() && feed(c);
    }
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
