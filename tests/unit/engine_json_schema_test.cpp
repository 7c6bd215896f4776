// JsonSchema (the json_schema subset) and JsonSchemaAcceptor: compile errors name the keyword and path; documents of
// the schema (keys in any order) and every prefix of them are taken; documents outside it are refused at the byte
// that leaves it; random mutations of valid documents are taken whole only when the reference validator
// (text_json_schema_reference.h) accepts them; on the real tokenizer (skipped without it) the token mask equals a
// token-by-token check in schema states; through the engine on the CPU runner, sampled completions are documents of
// the schema. The keywords past the first subset (anyOf, $ref, bounds): text_json_schema_keywords_test.cpp.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/cpu_runner.h"
#include "cpu/random_weights.h"
#include "engine/engine.h"
#include "engine/json_constraint.h"
#include "engine/offline.h"
#include "text/json_schema_acceptor.h"
#include "text/special_tokens.h"
#include "text_json_schema_reference.h"
#include "text_json_test_fixture.h"

namespace mxs {
namespace {

using Json = nlohmann::json;

const Json kSchema = Json::parse(R"({
  "type": "object", "additionalProperties": false, "required": ["name", "age", "tags"],
  "properties": {
    "name": {"type": "string", "description": "ignored"},
    "age": {"type": "integer"},
    "score": {"type": ["number", "null"]},
    "ok": {"type": "boolean"},
    "color": {"enum": ["red", "green", 12, null]},
    "tags": {"type": "array", "items": {"type": "string"}},
    "pos": {"type": "object", "properties": {"x": {"type": "number"}, "y": {"const": 0}}, "required": ["x"]}
  }})");

using test::compile_error;
using test::conforms;
using test::taken;

TEST(JsonSchema, CompileErrorsNameTheKeywordAndPath) {
  EXPECT_NE(compile_error(R"({"type": "array", "items": {"type": "string"}})").find("top level"), std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}})")
                .find("/properties/a: keyword 'pattern' is not supported"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "additionalProperties": true})").find("additionalProperties"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "required": ["b"], "properties": {}})").find("\"b\""),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"a": {"type": "array"}}})").find("items"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"a": {"type": "text"}}})").find("'text'"),
            std::string::npos);
  EXPECT_NE(compile_error(R"({"type": "object", "properties": {"a": {}}})").find("needs a type"), std::string::npos);
  EXPECT_EQ(compile_error(kSchema.dump()), "");
}

TEST(JsonSchema, TakesItsDocumentsAndEveryPrefix) {
  const auto schema = JsonSchema::compile(kSchema);
  for (const char* doc : {
           R"({"name":"Ada","age":36,"tags":[]})",
           R"({"tags": ["a", "b\"c"], "age": -4, "name": "\u00e9",  "score": null, "ok": true})",
           R"({"name":"x","age":0,"tags":["y"],"score":1.5e-3,"color":"green","pos":{"y":0,"x":-0.5}})",
           R"({"color":12,"name":"","age":7,"tags":[],"pos":{"x":1}})",
           R"({"color":null,"name":"","age":7,"tags":[]})"})
    test::expect_document(schema.get(), kSchema, doc);
}

TEST(JsonSchema, RefusesAtTheByteThatLeavesTheSchema) {
  const auto schema = JsonSchema::compile(kSchema);
  test::expect_refusals(schema.get(), {
      {R"({"name":"a","age":1})", 19},              // '}' before the required "tags"
      {R"({"nam":1})", 5},                           // not a key of the schema
      {R"({"name":"a","name":"b"})", 13},            // a key twice
      {R"({"age":1.5})", 8},                         // integer: no fraction
      {R"({"age":"1"})", 7},                         // a string for an integer
      {R"({"color":"blue"})", 10},                   // not one of the enum's texts
      {R"({"tags":[1]})", 9},                        // items are strings
      {R"({"pos":{"y":1})", 12},                     // const 0
      {R"({"ok":nul})", 6},                          // boolean only
      {R"( {})", 0},
  });
  bool complete = true;
  EXPECT_EQ(taken(schema.get(), R"({"name":"a","age":1,"tags":[]} )", &complete), 30u);  // nothing after the end
}

TEST(JsonSchema, AgreesWithTheReferenceValidatorOnMutations) {
  const auto schema = JsonSchema::compile(kSchema);
  const std::vector<std::string> seeds = {
      R"({"name":"Ada","age":36,"tags":["x"],"ok":false,"color":"red","pos":{"x":2,"y":0},"score":3})",
      R"({"tags":[],"age":-4,"name":"q","score":null,"color":12})"};
  const std::string alphabet = "{}[]:,\"0123456789.-eructlfasnm agepoyx";
  std::mt19937 rng(11);
  int completes = 0;
  for (int iter = 0; iter < 30000; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    test::mutate_json(s, rng, alphabet);
    bool complete = false;
    if (taken(schema.get(), s, &complete) != s.size() || !complete) continue;
    ++completes;
    Json v;
    ASSERT_NO_THROW(v = Json::parse(s)) << s;
    EXPECT_TRUE(conforms(v, kSchema)) << s;
  }
  EXPECT_GT(completes, 500);
}

using JsonSchemaMaskTest = test::JsonTokenizerTest;

TEST_F(JsonSchemaMaskTest, EqualsATokenByTokenCheckInSchemaStates) {
  const auto schema = JsonSchema::compile(kSchema);
  expect_schema_masks(schema.get(), {"{", "{\"", "{\"na", "{\"name\"", "{\"name\":", "{\"name\":\"A", "{\"age\":1",
                                     "{\"tags\":[", "{\"tags\":[\"a\",", "{\"color\":", "{\"color\":\"gr", "{\"ok\":",
                                     "{\"name\":\"\",\"age\":1,\"tags\":[]"});
}

// Samples 8 completions (one greedy) under `schema_json` on the tiny CPU model; each must be a document of the schema
// (closed) or a prefix of one (max_tokens). Returns how many closed.
int sample_documents(const Tokenizer& tok, std::shared_ptr<const JsonTokenMask> masks, const Json& schema_json) {
  const auto schema = JsonSchema::compile(schema_json);
  const ModelConfig cfg = ModelConfig::preset("tiny");
  const auto rw = cpu::make_random_weights(cfg, /*seed=*/5);
  cpu::CpuRunnerOptions opt;
  opt.block_size = 16;
  opt.num_blocks = 256;
  cpu::CpuRunner runner(rw->weights, opt);
  Engine engine(runner, &tok, EngineConfig{});
  std::vector<Request> requests(8);
  for (size_t i = 0; i < requests.size(); ++i) {
    Request& q = requests[i];
    q.prompt = tok.encode("Reply in JSON:");
    q.max_tokens = 160;
    q.sampling.temperature = i == 0 ? 0.0f : 1.0f, q.sampling.seed = 7 + i;
    q.constraint = json_schema_constraint(masks, schema, false, {tok::kReturn, tok::kEndOfText});
  }
  int closed = 0;
  for (const OfflineResult& r : run_offline(engine, requests).results) {
    EXPECT_NE(r.finish, FinishReason::kError) << r.error;
    std::string text;
    for (size_t i = 0; i + (r.finish == FinishReason::kStop ? 1 : 0) < r.tokens.size(); ++i)
      text += tok.token_bytes(r.tokens[i]);
    if (r.finish != FinishReason::kStop) {
      JsonSchemaAcceptor a(schema.get());
      EXPECT_TRUE(a.feed(text)) << text;  // a prefix of a document
      continue;
    }
    ++closed;
    Json v;
    try {
      v = Json::parse(text);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what() << ": " << text;
      continue;
    }
    EXPECT_TRUE(conforms(v, schema_json)) << v.dump();
  }
  return closed;
}

TEST_F(JsonSchemaMaskTest, EngineSamplesDocumentsOfTheSchema) {
  const Json small = Json::parse(R"({"type": "object", "required": ["color", "n", "ok"],
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "n": {"type": "integer"}, "ok": {"type": "boolean"},
                   "v": {"type": "array", "items": {"enum": [1, 2]}}}})");
  EXPECT_GT(sample_documents(*tok_, masks_, small), 0);
}

// Unions, $ref recursion and bounds (text_json_schema_keywords_test.cpp): every value bounded, so that a random model
// closes the document within max_tokens.
TEST_F(JsonSchemaMaskTest, EngineSamplesDocumentsOfAUnionAndRefSchema) {
  const Json schema = Json::parse(R"({"type": "object", "additionalProperties": false, "required": ["id", "n", "t"],
    "$defs": {"t": {"type": "object", "required": ["v", "kids"], "additionalProperties": false,
                    "properties": {"v": {"type": "integer", "minimum": 0, "maximum": 9},
                                   "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}, "maxItems": 2}}}},
    "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 3},
                   "n": {"anyOf": [{"type": "integer", "minimum": -3, "maximum": 3}, {"type": "null"}]},
                   "t": {"anyOf": [{"$ref": "#/$defs/t"}, {"type": "null"}]},
                   "tags": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 2}}})");
  EXPECT_GT(sample_documents(*tok_, masks_, schema), 0);
}

}  // namespace
}  // namespace mxs
