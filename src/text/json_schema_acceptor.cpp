#include "text/json_schema_acceptor.h"

#include <algorithm>
#include <cctype>
#include <cmath>
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

// Bounded strings: where a \u surrogate pair stands (Frame::aux), so that a pair counts as one code point.
enum SurrogateBits : uint8_t {
  kHighDone = 1,  // the last character was a \u escape of a high surrogate (D800-DBFF)
  kDeferred = 2,  // this escape came right after one: counted once it turns out not to be the low half
  kFirstD = 4,    // this \u escape's first hex digit is d / D
  kIsHigh = 8,    // this \u escape is a high surrogate
};

// Whether an integer that begins with the prefix ['-'] digits (value mag) can end in [lo, hi]. The values it can
// become: mag itself, then mag * 10^k + [0, 10^k) for more digits (none after a lone 0), negated after '-'.
bool integer_prefix_viable(bool neg, uint64_t mag, int digits, int64_t lo, int64_t hi) {
  using I = __int128;
  if (digits == 0) return lo <= 0;              // "-": -0, or any negative
  if (mag == 0) return lo <= 0 && 0 <= hi;      // "0" / "-0": nothing can follow
  const I a = neg ? -I(hi) : I(lo), b = neg ? -I(lo) : I(hi);  // the range of magnitudes
  I p = 1;
  for (int k = 0; k + digits <= 19; ++k, p *= 10) {
    const I low = I(mag) * p, high = low + p - 1;
    if (low > b) return false;
    if (high >= a) return true;
  }
  return false;
}

// Whether a plain decimal that begins with the prefix ['-'] int [. frac] can end inside the node's bounds. The values
// the prefix can become, as magnitudes: with a fraction of d digits [v, v + 10^-d); after the point [int, int + 1);
// before it [int, int + 1) and, with more integer digits, [int * 10^k, (int + 1) * 10^k) (none after a lone 0).
// Negative prefixes mirror the bounds. Long double: exact for the at most 15 + 15 digits a bounded number may have.
bool number_prefix_viable(bool neg, uint64_t mag, int digits, bool dot, uint64_t frac, int frac_digits, double lo,
                          bool lo_excl, double hi, bool hi_excl) {
  using L = long double;
  if (neg) {  // x in [lo, hi] <=> -x in [-hi, -lo]
    std::swap(lo, hi), std::swap(lo_excl, hi_excl);
    lo = -lo, hi = -hi;
  }
  // Whether [a, b) meets the bounds.
  const auto meets = [&](L a, L b) { return (hi_excl ? a < L(hi) : a <= L(hi)) && b > L(lo); };
  if (digits == 0) return meets(0, std::numeric_limits<L>::infinity());  // "-": any magnitude
  if (dot) {
    L p = 1;
    for (int i = 0; i < frac_digits; ++i) p *= 10;
    const L v = L(mag) + L(frac) / p;
    return meets(v, frac_digits == 0 ? v + 1 : v + 1 / p);
  }
  if (mag == 0) return meets(0, 1);
  L p = 1;
  for (int k = 0; k + digits <= JsonSchema::kMaxNumberDigits; ++k, p *= 10)
    if (meets(L(mag) * p, L(mag + 1) * p)) return true;
  return false;
}

[[noreturn]] void bad(const std::string& path, const std::string& what) {
  throw Error("json_schema: " + (path.empty() ? std::string("/") : path) + ": " + what);
}

}  // namespace

std::shared_ptr<const JsonSchema> JsonSchema::compile(const nlohmann::json& schema) {
  auto s = std::make_shared<JsonSchema>();
  s->document_ = &schema;
  s->root_ = s->add(schema, "", 0);
  s->document_ = nullptr;
  s->ref_nodes_.clear();
  const Node& top = s->nodes_[size_t(s->root_)];
  if (top.types != kObject || !top.enum_texts.empty() || !top.any_of.empty())
    bad("", "the top level must be {\"type\": \"object\", ...}");
  s->compute_first_sets();
  return s;
}

namespace {

// Keywords that say nothing about which documents match.
bool is_annotation(const std::string& k) {
  static const std::set<std::string> annotations = {"description", "title",   "$schema",    "$comment",
                                                    "default",     "examples", "deprecated", "readOnly",
                                                    "writeOnly",   "strict",   "$defs",      "definitions"};
  return annotations.count(k) > 0;
}

// A "$ref" or "allOf" must stand alone (beside annotations): the subset has no intersection of schemas.
void check_alone(const Json& s, const std::string& keyword, const std::string& path) {
  for (auto it = s.begin(); it != s.end(); ++it)
    if (it.key() != keyword && !is_annotation(it.key()))
      bad(path, "'" + keyword + "' beside '" + it.key() + "' is not supported");
}

// RFC 6901 reference token of a URI fragment: %XX decoded first (clients percent-encode names), then ~1 and ~0.
std::string decode_fragment(const std::string& f) {
  std::string out;
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i] == '%' && i + 2 < f.size() && std::isxdigit(uint8_t(f[i + 1])) && std::isxdigit(uint8_t(f[i + 2]))) {
      out += char(std::stoi(f.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += f[i];
    }
  }
  return out;
}

// A bound of an integer node as an int64 (saturated): `lower` rounds up, else down; exclusive moves it one further.
int64_t integer_bound(const Json& v, bool lower, bool exclusive, const std::string& path, const std::string& key) {
  if (!v.is_number()) bad(path, key + " must be a number");
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min(), kMax = std::numeric_limits<int64_t>::max();
  long double x = v.is_number_integer() ? (long double)v.get<int64_t>()
                  : v.is_number_unsigned() ? (long double)v.get<uint64_t>() : (long double)v.get<double>();
  if (v.is_number_integer() && !v.is_number_unsigned()) {  // exact
    const int64_t i = v.get<int64_t>();
    if (!exclusive) return i;
    if (lower) return i == kMax ? kMax : i + 1;
    return i == kMin ? kMin : i - 1;
  }
  if (!std::isfinite(double(x))) bad(path, key + " must be finite");
  long double r = lower ? std::ceil(x) : std::floor(x);
  if (exclusive && r == x) r += lower ? 1 : -1;
  if (r >= (long double)kMax) return kMax;
  if (r <= (long double)kMin) return kMin;
  return int64_t(r);
}

uint32_t count_bound(const Json& v, const std::string& path, const std::string& key) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0))
    bad(path, key + " must be a non-negative integer");
  return uint32_t(std::min<uint64_t>(v.get<uint64_t>(), JsonSchema::kUnbounded));
}

}  // namespace

const Json& JsonSchema::resolve(const Json& ref, const std::string& path) const {
  if (!ref.is_string()) bad(path, "$ref must be a string");
  const std::string r = ref.get<std::string>();
  if (r.empty() || r[0] != '#') bad(path, "$ref '" + r + "': only references into this schema (\"#...\") are supported");
  try {
    return document_->at(Json::json_pointer(decode_fragment(r.substr(1))));
  } catch (const std::exception&) {
    bad(path, "$ref '" + r + "' points to nothing in the schema");
  }
}

int JsonSchema::add(const Json& s, const std::string& path, int depth) {
  if (depth >= JsonSchemaAcceptor::kMaxDepth)
    bad(path, strfmt("nested deeper than %d levels", JsonSchemaAcceptor::kMaxDepth));
  if (!s.is_object()) bad(path, "a schema must be an object");
  if (s.contains("$ref")) {
    check_alone(s, "$ref", path);
    const Json& target = resolve(s["$ref"], path);
    // A reference to a reference (or to an allOf): followed, one level deeper each time (a cycle ends as too deep).
    if (target.is_object() && (target.contains("$ref") || target.contains("allOf")))
      return add(target, s["$ref"].get<std::string>(), depth + 1);
    if (auto it = ref_nodes_.find(&target); it != ref_nodes_.end()) return it->second;  // (recursion ends here)
    if (nodes_.size() >= size_t(kMaxNodes)) bad(path, strfmt("more than %d subschemas", kMaxNodes));
    const int idx = int(nodes_.size());
    nodes_.emplace_back();
    ref_nodes_[&target] = idx;
    fill(idx, target, s["$ref"].get<std::string>(), depth + 1);
    return idx;
  }
  if (s.contains("allOf")) {
    check_alone(s, "allOf", path);
    if (!s["allOf"].is_array() || s["allOf"].size() != 1) bad(path, "allOf must hold exactly one schema");
    return add(s["allOf"][0], path + "/allOf/0", depth);
  }
  if (nodes_.size() >= size_t(kMaxNodes)) bad(path, strfmt("more than %d subschemas", kMaxNodes));
  const int idx = int(nodes_.size());
  nodes_.emplace_back();
  fill(idx, s, path, depth);
  return idx;
}

void JsonSchema::fill(int idx, const Json& s, const std::string& path, int depth) {
  if (!s.is_object()) bad(path, "a schema must be an object");
  static const std::set<std::string> known = {
      "type",      "properties", "required", "additionalProperties", "items",   "enum",    "const",
      "anyOf",     "oneOf",      "minItems", "maxItems",             "minLength", "maxLength", "minimum",
      "maximum",   "exclusiveMinimum",      "exclusiveMaximum"};
  for (auto it = s.begin(); it != s.end(); ++it)
    if (!known.count(it.key()) && !is_annotation(it.key()))
      bad(path, "keyword '" + it.key() + "' is not supported");
  Node n;
  if (s.contains("enum") || s.contains("const")) {
    if (s.contains("const")) n.enum_texts.push_back(s["const"].dump());
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) bad(path, "enum must be a non-empty array");
      for (const Json& v : s["enum"]) n.enum_texts.push_back(v.dump());
    }
    if (n.enum_texts.size() > size_t(kMaxEnum)) bad(path, strfmt("more than %d enum values", kMaxEnum));
    nodes_[size_t(idx)] = std::move(n);
    return;
  }
  for (const char* u : {"anyOf", "oneOf"}) {
    if (!s.contains(u)) continue;
    for (auto it = s.begin(); it != s.end(); ++it)
      if (it.key() != u && !is_annotation(it.key()))
        bad(path, std::string("'") + u + "' beside '" + it.key() + "' is not supported");
    const Json& alts = s[u];
    if (!alts.is_array() || alts.empty()) bad(path, std::string(u) + " must be a non-empty array of schemas");
    if (alts.size() > size_t(kMaxEnum)) bad(path, strfmt("%s has more than %d alternatives", u, kMaxEnum));
    for (size_t i = 0; i < alts.size(); ++i)
      n.any_of.push_back(add(alts[i], path + "/" + u + "/" + std::to_string(i), depth + 1));
    unions_.emplace_back(idx, path + "/" + u);
    nodes_[size_t(idx)] = std::move(n);
    return;
  }
  if (!s.contains("type")) bad(path, "needs a type (or enum / const / anyOf / $ref)");
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
    if (s.contains("minItems")) n.min_items = count_bound(s["minItems"], path, "minItems");
    if (s.contains("maxItems")) n.max_items = count_bound(s["maxItems"], path, "maxItems");
    if (n.min_items > n.max_items) bad(path, "minItems is above maxItems");
  }
  if (n.types & kString) {
    if (s.contains("minLength")) n.min_length = count_bound(s["minLength"], path, "minLength");
    if (s.contains("maxLength")) n.max_length = count_bound(s["maxLength"], path, "maxLength");
    if (n.min_length > n.max_length) bad(path, "minLength is above maxLength");
  }
  if (n.types & kNumber) {  // (integers are numbers: the number's bounds hold for both)
    for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
      if (!s.contains(k)) continue;
      const std::string key = k;
      if (!s[k].is_number() || !std::isfinite(s[k].get<double>())) bad(path, key + " must be a finite number");
      const double b = s[k].get<double>();
      const bool exclusive = key.rfind("exclusive", 0) == 0;
      if (key == "minimum" || key == "exclusiveMinimum") {
        if (b > n.lo || (b == n.lo && exclusive)) n.lo = b, n.lo_exclusive = exclusive;
      } else if (b < n.hi || (b == n.hi && exclusive)) {
        n.hi = b, n.hi_exclusive = exclusive;
      }
      n.num_bounded = true;
    }
    if (n.lo > n.hi || (n.lo == n.hi && (n.lo_exclusive || n.hi_exclusive))) bad(path, "the number bounds leave no value");
  } else if (n.types & kInteger) {
    for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}) {
      if (!s.contains(k)) continue;
      const std::string key = k;
      const bool lower = key == "minimum" || key == "exclusiveMinimum";
      const int64_t b = integer_bound(s[k], lower, key.rfind("exclusive", 0) == 0, path, key);
      if (lower) n.minimum = std::max(n.minimum, b);
      else n.maximum = std::min(n.maximum, b);
      n.int_bounded = true;
    }
    if (n.minimum > n.maximum) bad(path, "the integer bounds leave no value");
  }
  nodes_[size_t(idx)] = std::move(n);
}

void JsonSchema::compute_first_sets() {
  for (Node& n : nodes_) {
    for (const std::string& t : n.enum_texts) n.first.set(uint8_t(t[0]));
    if (n.types & kObject) n.first.set('{');
    if (n.types & kArray) n.first.set('[');
    if (n.types & kString) n.first.set('"');
    if (n.types & (kNumber | kInteger)) {
      n.first.set('-');
      for (int c = '0'; c <= '9'; ++c) n.first.set(size_t(c));
    }
    if (n.types & kBoolean) n.first.set('t'), n.first.set('f');
    if (n.types & kNull) n.first.set('n');
  }
  // A union's set is its alternatives' (which may be unions, through $ref even of itself): to a fixed point.
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [u, path] : unions_) {
      std::bitset<256> f;
      for (int a : nodes_[size_t(u)].any_of) f |= nodes_[size_t(a)].first;
      if (f != nodes_[size_t(u)].first) nodes_[size_t(u)].first = f, changed = true;
    }
  }
  for (const auto& [u, path] : unions_) {
    const std::vector<int>& alts = nodes_[size_t(u)].any_of;
    for (size_t i = 0; i < alts.size(); ++i) {
      if (nodes_[size_t(alts[i])].first.none()) bad(path + "/" + std::to_string(i), "can never match");
      for (size_t j = 0; j < i; ++j)
        if ((nodes_[size_t(alts[i])].first & nodes_[size_t(alts[j])].first).any())
          bad(path, strfmt("alternatives %zu and %zu can begin with the same byte; the alternatives must be of "
                           "different JSON types (e.g. a string and null)", j, i));
    }
  }
  unions_.clear();
}

bool JsonSchemaAcceptor::in_plain_string() const {
  if (depth_ == 0) return false;
  const Frame& f = stack_[depth_ - 1];
  return f.kind == kStr && f.str.plain() && schema_->node(f.node).max_length == JsonSchema::kUnbounded;
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
  if (!n.any_of.empty()) {  // the one alternative that can begin with c (compile() made them disjoint)
    for (int a : n.any_of)
      if (schema_->node(a).first.test(c)) return start_value(a, c);
    return false;
  }
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
    if (n.int_bounded || n.num_bounded) {
      f.neg = c == '-';
      if (!f.neg) f.mag = uint64_t(c - '0'), f.digits = 1;
      if (n.num_bounded ? !number_prefix_viable(f.neg, f.mag, f.digits, false, 0, 0, n.lo, n.lo_exclusive, n.hi,
                                                n.hi_exclusive)
                        : !integer_prefix_viable(f.neg, f.mag, f.digits, n.minimum, n.maximum))
        return false;
    }
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
    return start_value(schema_->root(), c);
  }
  if (is_ws(c) && between()) return ++ws_run_ <= kMaxWhitespaceRun;
  ws_run_ = 0;
  return feed_frame(c);
}

bool JsonSchemaAcceptor::count_string_byte(Frame& f, const JsonSchema::Node& n, uint8_t c) {
  // A code point is counted at its first byte, except an escape right after a high surrogate's, which is counted only
  // once it turns out not to be the pair's low half (the lexer's state is the one before c).
  const auto count_one = [&] {
    if (f.count >= n.max_length) return false;
    if (n.max_length != JsonSchema::kUnbounded || f.count < n.min_length) ++f.count;  // (saturated: see Frame)
    return true;
  };
  const JsonStringLexer& lex = f.str;
  if (lex.phase == 0 && lex.need == 0) {  // a character starts, or the string ends
    if (c == '"') return f.count >= n.min_length;
    if (c == '\\' && (f.aux & kHighDone)) {
      f.aux = kDeferred;
      return true;
    }
    f.aux = 0;
    return count_one();
  }
  if (lex.phase == 1) {  // after the backslash
    if ((f.aux & kDeferred) && c != 'u') {
      f.aux = 0;
      return count_one();
    }
    return true;
  }
  if (lex.phase == 2) {  // inside \u, lex.hex digits read
    bool ok = true;
    if (lex.hex == 0) {
      if (c == 'd' || c == 'D') f.aux |= kFirstD;
      else if (f.aux & kDeferred) f.aux &= uint8_t(~kDeferred), ok = count_one();
    } else if (lex.hex == 1 && (f.aux & kFirstD)) {
      const bool high = (c >= '8' && c <= '9') || (c >= 'a' && c <= 'b') || (c >= 'A' && c <= 'B');
      const bool low = (c >= 'c' && c <= 'f') || (c >= 'C' && c <= 'F');
      if (high) f.aux |= kIsHigh;
      if (f.aux & kDeferred) {
        f.aux &= uint8_t(~kDeferred);
        if (!low) ok = count_one();  // (low: the pair's one code point was counted at the high half)
      }
    }
    if (lex.hex == 3) f.aux = (f.aux & kIsHigh) ? kHighDone : 0;  // the escape ends with c
    return ok;
  }
  return true;  // a UTF-8 continuation byte
}

bool JsonSchemaAcceptor::bounded_number_byte(Frame& f, const JsonSchema::Node& n, uint8_t c) {
  if (c == 'e' || c == 'E') return false;  // (plain decimals only)
  switch (f.num.feed(c)) {
    case LexStep::kRejected:
      return false;
    case LexStep::kTaken:
      if (c == '.') {
        f.dot = true;
      } else if (f.dot) {
        if (f.frac_digits >= JsonSchema::kMaxNumberDigits) return false;
        f.frac = f.frac * 10 + uint64_t(c - '0'), ++f.frac_digits;
      } else {
        if (f.digits >= JsonSchema::kMaxNumberDigits) return false;
        f.mag = f.mag * 10 + uint64_t(c - '0'), ++f.digits;
      }
      return number_prefix_viable(f.neg, f.mag, f.digits, f.dot, f.frac, f.frac_digits, n.lo, n.lo_exclusive, n.hi,
                                  n.hi_exclusive);
    case LexStep::kDone: {  // the number ended before c: its value must lie in the bounds
      long double p = 1;
      for (int i = 0; i < f.frac_digits; ++i) p *= 10;
      const long double m = (long double)f.mag + (long double)f.frac / p, v = f.neg ? -m : m;
      const bool ok = (n.lo_exclusive ? v > n.lo : v >= n.lo) && (n.hi_exclusive ? v < n.hi : v <= n.hi);
      return ok && value_done() && feed(c);
    }
  }
  return false;
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
    case kArr: {
      if (f.phase == kArrOpen && c == ']') return n.min_items == 0 && value_done();
      if (f.phase == kArrAfter) {
        if (c == ',') {
          if (f.count >= n.max_items) return false;
          f.phase = kArrNext;
          return true;
        }
        return c == ']' && f.count >= n.min_items && value_done();
      }
      if (f.count >= n.max_items) return false;
      if (n.max_items != JsonSchema::kUnbounded || f.count < n.min_items) ++f.count;  // (saturated: see Frame)
      return start_value(n.items, c);
    }
    case kStr:
      if (n.string_bounded() && !count_string_byte(f, n, c)) return false;
      switch (f.str.feed(c)) {
        case LexStep::kTaken: return true;
        case LexStep::kRejected: return false;
        case LexStep::kDone: return value_done();
      }
      return false;
    case kNum:
      if (n.num_bounded) return bounded_number_byte(f, n, c);
      switch (f.num.feed(c)) {
        case LexStep::kTaken:
          if (!n.int_bounded) return true;
          if (f.digits >= 19) return false;  // (past int64 either way)
          f.mag = f.mag * 10 + uint64_t(c - '0'), ++f.digits;
          return integer_prefix_viable(f.neg, f.mag, f.digits, n.minimum, n.maximum);
        case LexStep::kRejected: return false;
        case LexStep::kDone:  // the number ended before c
          if (n.int_bounded) {
            const __int128 v = f.neg ? -__int128(f.mag) : __int128(f.mag);
            if (v < n.minimum || v > n.maximum) return false;
          }
          return value_done() && feed(c);
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
