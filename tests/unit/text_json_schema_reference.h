// The json_schema tests' helpers: the reference validator (does a parsed document match a schema of the subset of
// text/json_schema_acceptor.h; written directly on nlohmann values, independently of the acceptor), how many bytes of
// a text an acceptor takes, and the message of a schema's compile error.
#pragma once
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "text/json_schema_acceptor.h"

namespace mxs::test {

// Code points of a UTF-8 string (nlohmann decodes \u escapes, pairs included, to UTF-8).
inline size_t code_points(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// v against schema s; root: the whole schema ($ref targets).
inline bool conforms(const nlohmann::json& v, const nlohmann::json& s, const nlohmann::json& root) {
  using Json = nlohmann::json;
  if (s.contains("$ref"))
    return conforms(v, root.at(Json::json_pointer(s["$ref"].get<std::string>().substr(1))), root);
  if (s.contains("allOf")) {
    for (const Json& a : s["allOf"])
      if (!conforms(v, a, root)) return false;
    return true;
  }
  for (const char* u : {"anyOf", "oneOf"}) {
    if (!s.contains(u)) continue;
    int matches = 0;
    for (const Json& a : s[u]) matches += conforms(v, a, root);
    return std::string(u) == "anyOf" ? matches > 0 : matches == 1;
  }
  if (s.contains("enum") || s.contains("const")) {
    if (s.contains("const") && v == s["const"]) return true;
    if (s.contains("enum"))
      for (const Json& e : s["enum"])
        if (v == e && v.type() == e.type()) return true;
    return false;
  }
  std::vector<std::string> types;
  if (s["type"].is_string()) types.push_back(s["type"]);
  else for (const Json& t : s["type"]) types.push_back(t);
  const auto in_bounds = [&](double x) {
    return !(s.contains("minimum") && x < s["minimum"].get<double>()) &&
           !(s.contains("maximum") && x > s["maximum"].get<double>()) &&
           !(s.contains("exclusiveMinimum") && x <= s["exclusiveMinimum"].get<double>()) &&
           !(s.contains("exclusiveMaximum") && x >= s["exclusiveMaximum"].get<double>());
  };
  for (const std::string& t : types) {
    if (t == "string" && v.is_string()) {
      const size_t n = code_points(v.get<std::string>());
      if (n >= s.value("minLength", size_t(0)) && n <= s.value("maxLength", size_t(-1))) return true;
    }
    // (an integer past 64 bits parses as a double: the text has no fraction or exponent either way)
    if (t == "integer" && v.is_number() && std::floor(v.get<double>()) == v.get<double>() && in_bounds(v.get<double>()))
      return true;
    if (t == "number" && v.is_number() && in_bounds(v.get<double>())) return true;
    if (t == "boolean" && v.is_boolean()) return true;
    if (t == "null" && v.is_null()) return true;
    if (t == "array" && v.is_array() && v.size() >= s.value("minItems", size_t(0)) &&
        v.size() <= s.value("maxItems", size_t(-1))) {
      bool all = true;
      for (const Json& x : v) all = all && conforms(x, s["items"], root);
      if (all) return true;
    }
    if (t == "object" && v.is_object()) {
      const Json props = s.value("properties", Json::object());
      bool ok = true;
      for (auto it = v.begin(); it != v.end(); ++it)
        ok = ok && props.contains(it.key()) && conforms(it.value(), props[it.key()], root);
      for (const Json& r : s.value("required", Json::array())) ok = ok && v.contains(r.get<std::string>());
      if (ok) return true;
    }
  }
  return false;
}

inline bool conforms(const nlohmann::json& v, const nlohmann::json& schema) { return conforms(v, schema, schema); }

// Bytes of `s` a fresh acceptor of `schema` takes (s.size() when all), and whether it is then complete.
inline size_t taken(const JsonSchema* schema, std::string_view s, bool* complete = nullptr) {
  JsonSchemaAcceptor a(schema);
  for (size_t i = 0; i < s.size(); ++i) {
    JsonSchemaAcceptor next = a;
    if (!next.feed(uint8_t(s[i]))) return i;
    a = next;
  }
  if (complete) *complete = a.complete();
  return s.size();
}

// A document of the schema: the reference agrees, and a fresh acceptor takes it whole and is then complete.
inline void expect_document(const JsonSchema* schema, const nlohmann::json& schema_json, std::string_view doc) {
  ASSERT_TRUE(conforms(nlohmann::json::parse(doc), schema_json)) << doc;
  bool complete = false;
  EXPECT_EQ(taken(schema, doc, &complete), doc.size()) << doc;
  EXPECT_TRUE(complete) << doc;
}

// A text that leaves the schema at byte `at`.
struct Refusal {
  std::string text;
  size_t at;
};
inline void expect_refusals(const JsonSchema* schema, std::initializer_list<Refusal> cases) {
  for (const Refusal& c : cases) EXPECT_EQ(taken(schema, c.text), c.at) << c.text;
}

// JsonSchema::compile's error message for a schema text ("" when it compiles).
inline std::string compile_error(const std::string& schema) {
  try {
    JsonSchema::compile(nlohmann::json::parse(schema));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace mxs::test
