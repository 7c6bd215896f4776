// The json_schema keywords past the first subset (text/json_schema_acceptor.h): anyOf / oneOf told apart by their
// first byte, allOf of one schema, $ref into the document (recursion included), string length in code points (a \u
// surrogate pair is one), array sizes, integer bounds. As engine_json_schema_test.cpp does for the first subset:
// compile errors name the keyword and path; the schema's documents and their prefixes are taken; others are refused at
// the byte that leaves the schema; mutations agree with the reference validator; on the real tokenizer the token mask
// equals a token-by-token check in states inside bounded strings, bounded integers and unions.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cctype>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "text/json_schema_acceptor.h"
#include "text_json_schema_reference.h"
#include "text_json_test_fixture.h"

namespace mxs {
namespace {

using Json = nlohmann::json;
using test::compile_error;
using test::taken;

// Every keyword of the extension, as zod / pydantic write them: $defs with a recursive node, nullable unions, bounds.
const Json kSchema = Json::parse(R"({
  "$schema": "http://json-schema.org/draft-07/schema#", "title": "T",
  "$defs": {
    "node": {"type": "object", "additionalProperties": false, "required": ["v"],
             "properties": {"v": {"type": "integer", "minimum": -5, "exclusiveMaximum": 100},
                            "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}}
  },
  "type": "object", "additionalProperties": false, "required": ["id", "list"],
  "properties": {
    "id": {"type": "string", "minLength": 2, "maxLength": 4},
    "n": {"anyOf": [{"type": "integer", "minimum": 10, "maximum": 250}, {"type": "null"},
                    {"type": "string", "maxLength": 1}]},
    "tree": {"$ref": "#/$defs/node", "description": "beside $ref: an annotation"},
    "list": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
    "self": {"oneOf": [{"$ref": "#"}, {"type": "null"}]},
    "w": {"allOf": [{"type": "boolean"}], "title": "W"},
    "neg": {"type": "integer", "maximum": -10},
    "p": {"type": "number", "minimum": 0, "maximum": 1},
    "t": {"type": ["number", "null"], "exclusiveMinimum": -2.5, "exclusiveMaximum": 10}
  }})");

std::string with_property(const std::string& property_schema) {
  return R"({"type": "object", "properties": {"a": )" + property_schema + "}}";
}

TEST(JsonSchemaKeywords, CompileErrorsNameTheKeywordAndPath) {
  const struct {
    std::string property, error;
  } cases[] = {
      {R"({"anyOf": [{"type": "integer"}, {"type": "number"}]})", "/properties/a/anyOf: alternatives 0 and 1"},
      {R"({"anyOf": [{"type": "object"}, {"type": "object"}]})", "alternatives 0 and 1 can begin with the same byte"},
      {R"({"anyOf": [{"type": "string"}, {"enum": ["x", 1]}]})", "alternatives 0 and 1"},
      {R"({"type": "string", "anyOf": [{"type": "null"}]})", "'anyOf' beside 'type'"},
      {R"({"anyOf": []})", "anyOf must be a non-empty array"},
      {R"({"allOf": [{"type": "string"}, {"maxLength": 2}]})", "allOf must hold exactly one schema"},
      {R"({"$ref": "#/$defs/x"})", "/properties/a: $ref '#/$defs/x' points to nothing"},
      {R"({"$ref": "other.json#/x"})", "only references into this schema"},
      {R"({"$ref": "#", "type": "string"})", "'$ref' beside 'type'"},
      {R"({"type": "number", "minimum": 0, "exclusiveMaximum": 0})", "the number bounds leave no value"},
      {R"({"type": "number", "maximum": "1"})", "maximum must be a finite number"},
      {R"({"type": "integer", "minimum": 3, "maximum": 2})", "the integer bounds leave no value"},
      {R"({"type": "integer", "exclusiveMinimum": 2, "exclusiveMaximum": 3})", "the integer bounds leave no value"},
      {R"({"type": "string", "minLength": 3, "maxLength": 2})", "minLength is above maxLength"},
      {R"({"type": "string", "maxLength": -1})", "maxLength must be a non-negative integer"},
      {R"({"type": "array", "items": {"type": "null"}, "minItems": 2, "maxItems": 1})", "minItems is above maxItems"},
      {R"({"type": "string", "pattern": "x"})", "keyword 'pattern' is not supported"},
      {R"({"$ref": "#/properties/a"})", "nested deeper than"},  // a reference to itself
  };
  for (const auto& c : cases) {
    const std::string e = compile_error(with_property(c.property));
    EXPECT_NE(e.find(c.error), std::string::npos) << c.property << " -> " << e;
  }
  EXPECT_NE(compile_error(R"({"anyOf": [{"type": "object"}, {"type": "null"}]})").find("top level"),
            std::string::npos);
  EXPECT_EQ(compile_error(kSchema.dump()), "");
  // A top level reached through $ref, as zod 3 writes it.
  EXPECT_EQ(compile_error(R"({"$ref": "#/definitions/r", "definitions": {"r": {"type": "object"}}})"), "");
  // Percent-encoded and ~-escaped names in a pointer.
  EXPECT_EQ(compile_error(R"({"type": "object", "properties": {"a": {"$ref": "#/$defs/a%20b~1c"}},
                                     "$defs": {"a b/c": {"type": "null"}}})"),
            "");
}

TEST(JsonSchemaKeywords, TakesItsDocumentsAndEveryPrefix) {
  const auto schema = JsonSchema::compile(kSchema);
  for (const char* doc : {
           R"({"id":"ab","list":["a"]})",
           R"({"list":["a","b","b"],"id":"abcd","n":null,"w":true,"neg":-10})",
           R"({"id":"\u00e9\n","list":["b"],"n":"x","tree":{"v":-5,"kids":[{"v":99},{"v":0,"kids":[]}]}})",
           R"({"id":"\ud83d\ude00z","list":["a"],"n":10,"self":{"id":"xy","list":["b"],"self":null}})",
           R"({"id":"ab","list":["a"],"n":250,"neg":-123456789012345678})",
           "{\"id\":\"\xf0\x9f\x98\x80\xc3\xa9\",\"list\":[\"a\"]}",  // UTF-8: two code points
           R"({"id":"ab","list":["a"],"n":"\ud83d\ude00"})",            // a pair is one code point
           R"({"id":"ab","list":["a"],"p":0,"t":-2.4999})",
           R"({"id":"ab","list":["a"],"p":1.0,"t":9.999999})",
           R"({"id":"ab","list":["a"],"p":0.25,"t":null})",
           R"({"id":"ab","list":["a"],"p":1,"t":-0.5})",
       })
    test::expect_document(schema.get(), kSchema, doc);
}

TEST(JsonSchemaKeywords, RefusesAtTheByteThatLeavesTheSchema) {
  const auto schema = JsonSchema::compile(kSchema);
  test::expect_refusals(schema.get(), {
      {R"({"id":"a")", 8},                     // minLength 2
      {R"({"id":"abcde")", 11},                // maxLength 4
      {R"({"id":"ab\ud83d\ude00\ud83d\ude00x")", 33},  // the pairs are the 3rd and 4th code points: no 5th
      {R"({"id":"abc\ud83d\n)", 17},           // after a high surrogate's escape, a 5th code point
      {R"({"list":[])", 9},                    // minItems 1
      {R"({"list":["a","a","a",)", 20},        // maxItems 3
      {R"({"n":9,)", 6},                       // 9 ends below the minimum 10 (9x could still be in range)
      {R"({"n":251)", 7},                      // 251 > 250, and so is every longer number
      {R"({"n":0)", 5},                        // 0 cannot grow
      {R"({"n":-)", 5},                        // no negatives in [10, 250]
      {R"({"n":"ab)", 7},                      // the string alternative: maxLength 1
      {R"({"n":t)", 5},                        // no boolean alternative
      {R"({"tree":{"v":100)", 15},             // exclusiveMaximum 100
      {R"({"tree":{"v":-6)", 14},              // minimum -5
      {R"({"tree":{"kids":[{"v":1},{"v":2},)", 32},  // maxItems 2
      {R"({"neg":-9)", 9},                     // -9 > -10: the end of the number is refused
      {R"({"neg":0)", 7},
      {R"({"neg":-12345678901234567890)", 27}, // past int64
      {R"({"self":{"self":{"w":1)", 21},       // allOf boolean, two levels down through "#"
      {R"({"p":1.5)", 7},                      // 1.5 > 1 (while "1." could still be 1.0)
      {R"({"p":2)", 5},                        // 2 and every longer number > 1
      {R"({"p":-0.1)", 8},                     // -0 is 0, but -0.1 < 0
      {R"({"p":0.5e)", 8},                     // bounded numbers are plain decimals
      {R"({"t":-2.5,)", 8},                    // exclusiveMinimum: -2.5 and -2.5x are out of range
      {R"({"t":-3)", 6},
      {R"({"t":10})", 6},                      // exclusiveMaximum: "10" cannot end below 10
      {R"({"p":0.1234567890123456)", 22},     // past 15 fraction digits
  });
  // "9" is refused only where it ends: a longer number may still come.
  EXPECT_EQ(taken(schema.get(), R"({"n":99,)"), 8u);
}

TEST(JsonSchemaKeywords, AgreesWithTheReferenceValidatorOnMutations) {
  const auto schema = JsonSchema::compile(kSchema);
  const std::vector<std::string> seeds = {
      R"({"id":"abc","list":["a","b"],"n":12,"tree":{"v":3,"kids":[{"v":-5}]},"w":false,"neg":-11,"p":0.5})",
      R"({"list":["b"],"id":"xy","n":null,"self":{"id":"zz","list":["a"],"n":"q"},"t":-1.25})"};
  const std::string alphabet = "{}[]:,\".0123456789-abnulltruefalseidvkswxyzqpt";
  std::mt19937 rng(17);
  int completes = 0, refused = 0;
  for (int iter = 0; iter < 40000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    test::mutate_json(s, rng, alphabet);
    bool complete = false;
    const bool whole = taken(schema.get(), s, &complete) == s.size() && complete;
    Json v;
    bool parses = true;
    try {
      v = Json::parse(s);
    } catch (const std::exception&) {
      parses = false;
    }
    // Equal both ways, for documents the acceptor may generate (no whitespace, keys at most once).
    bool exponent = false;  // (bounded numbers are plain decimals: a document with an exponent is not generable)
    for (size_t i = 1; i < s.size(); ++i)
      exponent |= (s[i] == 'e' || s[i] == 'E') && (std::isdigit(uint8_t(s[i - 1])) || s[i - 1] == '.');
    const bool generable = parses && !exponent && s.find_first_of(" \t\n\r") == std::string::npos &&
                           v.is_object() && v.dump().size() == s.size();
    if (whole) {
      ++completes;
      ASSERT_TRUE(parses) << s;
      EXPECT_TRUE(test::conforms(v, kSchema)) << s;
    } else if (generable && test::conforms(v, kSchema)) {
      ADD_FAILURE() << "refused a document of the schema: " << s;
    } else {
      ++refused;
    }
  }
  EXPECT_GT(completes, 500);
  EXPECT_GT(refused, 1000);
}

using JsonSchemaKeywordsMaskTest = test::JsonTokenizerTest;

TEST_F(JsonSchemaKeywordsMaskTest, EqualsATokenByTokenCheckInBoundedStates) {
  const auto schema = JsonSchema::compile(kSchema);
  expect_schema_masks(schema.get(), {"{\"id\":\"", "{\"id\":\"a", "{\"id\":\"abcd", "{\"id\":\"ab\\ud83d", "{\"n\":",
                                     "{\"n\":1", "{\"n\":25", "{\"n\":\"", "{\"tree\":{\"v\":-", "{\"tree\":{\"v\":",
                                     "{\"list\":[", "{\"list\":[\"a\",\"b\",\"a\"", "{\"self\":", "{\"self\":{\"self\":",
                                     "{\"neg\":-1", "{\"w\":", "{\"p\":0.", "{\"p\":0.99", "{\"t\":-2.4", "{\"t\":"});
}

}  // namespace
}  // namespace mxs
