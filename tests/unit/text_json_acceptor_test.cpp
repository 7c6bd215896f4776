// JsonAcceptor (response_format json_object's grammar) against nlohmann::json's parser: every valid object and every
// prefix of it is taken, random byte mutations (UTF-8 broken too) are taken whole only when nlohmann accepts the
// result as an object;
// hand-picked rejections at the byte that breaks them; the depth and whitespace bounds; nothing after the object.
// JsonTokenMask on the real tokenizer (skipped without it): the mask equals a token-by-token check in every kind of
// state, and specials are never allowed.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "text_json_test_fixture.h"
#include "text/json_acceptor.h"
#include "text/json_token_mask.h"
#include "text/tokenizer.h"

namespace mxs {
namespace {

// The number of leading bytes the acceptor takes (s.size() when all).
size_t taken(std::string_view s, JsonAcceptor* out = nullptr) {
  JsonAcceptor a;
  for (size_t i = 0; i < s.size(); ++i) {
    JsonAcceptor next = a;
    if (!next.feed(uint8_t(s[i]))) return i;
    a = next;
  }
  if (out) *out = a;
  return s.size();
}
bool complete(std::string_view s) {
  JsonAcceptor a;
  return taken(s, &a) == s.size() && a.complete();
}

const std::vector<std::string> kValid = {
    "{}",
    "{\"a\":1}",
    "{\"a\" : [1, -2.5e+3, 0, 0.25, 1E9, true, false, null, \"x\\\"y\\\\z\\u00e9\\n\"], \"b\": {}}",
    "{\n  \"k\": {\"n\": [[], [{}], -0.0e-0]},\n  \"s\": \"\xc3\xa9t\xc3\xa9 /\\/\"\n}",
    "{\"\":\"\"}",
};

TEST(JsonAcceptor, TakesValidObjectsAndEveryPrefix) {
  for (const std::string& doc : kValid) {
    ASSERT_TRUE(nlohmann::json::accept(doc)) << doc;
    EXPECT_TRUE(complete(doc)) << doc;
    for (size_t n = 0; n < doc.size(); ++n) {
      JsonAcceptor a;
      EXPECT_EQ(taken(doc.substr(0, n), &a), n) << doc.substr(0, n);
      EXPECT_FALSE(a.complete()) << doc.substr(0, n);
    }
  }
}

TEST(JsonAcceptor, RejectsAtTheBreakingByte) {
  struct Case {
    std::string s;
    size_t at;
  } cases[] = {
      {"[1]", 0},          {"\"a\"", 0},         {"{\"a\" 1}", 5},      {"{\"a\":01}", 6},
      {"{\"a\":1.}", 7},   {"{\"a\":-}", 6},     {"{\"a\":1e}", 7},     {"{\"a\":tru}", 8},
      {"{\"a\":nul1}", 8}, {"{\"a\":\"\\x\"}", 7}, {"{\"a\":\"\x01\"}", 6}, {"{\"a\":[1,]}", 8},
      {"{\"a\":1,}", 7},   {"{,}", 1},           {"{\"a\":1]", 6},      {"{} ", 2},
      {"{}{}", 2},         {" {}", 0},         {"{\"a\":\"\\u12g4\"}", 10}, {"{'a':1}", 1},   {"{\"a\":+1}", 5},
      {"{\"a\":\"\xc3(\"}", 7}, {"{\"a\":\"\xe0\x80\x80\"}", 7}, {"{\"a\":\"\xed\xa0\x80\"}", 7},
      {"{\"a\":\"\xf5\"}", 6}, {"{\"a\":\"\xc0\xaf\"}", 6}, {"{\"a\":\"\xe2\x82\"}", 8},
  };
  for (const Case& c : cases) EXPECT_EQ(taken(c.s), c.at) << c.s;
}

TEST(JsonAcceptor, EquivalentStates) {
  auto at = [](std::string_view s) {
    JsonAcceptor a;
    EXPECT_EQ(taken(s, &a), s.size()) << s;
    return a;
  };
  EXPECT_TRUE(at("{\"a\":\"x").equivalent(at("{\"a\":\"xyz \\u00e9 \xc3\xa9")));  // inside one value string
  EXPECT_TRUE(at("{\"a\":\"x").equivalent(at("{\"b\":1,\"c\":\"")));         // another, same container
  EXPECT_FALSE(at("{\"a\":\"x").equivalent(at("{\"ax")));                        // a key: '"' leads to ':'
  EXPECT_FALSE(at("{\"a\":\"x").equivalent(at("{\"a\":[\"x")));                 // inside an array
  EXPECT_FALSE(at("{\"a\":\"x").equivalent(at("{\"a\":\"\xc3")));              // a UTF-8 character half read
  EXPECT_FALSE(at("{\"a\":tr").equivalent(at("{\"a\":fa")));
  EXPECT_TRUE(at("{\"a\":tr").equivalent(at("{\"b\":[0],\"c\":tr")));
}

TEST(JsonAcceptor, DepthAndWhitespaceAreBounded) {
  std::string deep = "{\"a\":";
  for (int i = 1; i < JsonAcceptor::kMaxDepth; ++i) deep += "[";
  EXPECT_EQ(taken(deep), deep.size());
  EXPECT_EQ(taken(deep + "["), deep.size());  // one container too many
  const std::string ws(JsonAcceptor::kMaxWhitespaceRun, ' ');
  EXPECT_TRUE(complete("{" + ws + "}"));
  EXPECT_EQ(taken("{" + ws + " }"), 1 + ws.size());
  EXPECT_TRUE(complete("{\"" + ws + ws + "\":1}"));  // (inside strings whitespace is content)
}

// Random mutations of valid documents: whenever the acceptor takes all of it and calls it complete, nlohmann agrees
// (and the value is an object); whenever nlohmann accepts an object with no surrounding whitespace, the acceptor does.
TEST(JsonAcceptor, AgreesWithNlohmannOnMutations) {
  std::mt19937 rng(7);
  const std::string alphabet = "{}[]:,\"\\ 0123456789.eE+-truefalsn\x01\xc3";
  int completes = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string s = kValid[rng() % kValid.size()];
    test::mutate_json(s, rng, alphabet);
    const bool ours = complete(s);
    completes += ours;
    bool theirs = false;  // valid by the grammar: a number too large for a double is nlohmann's limit, not JSON's
    try {
      theirs = nlohmann::json::parse(s).is_object();
    } catch (const nlohmann::json::out_of_range&) {
      theirs = true;
    } catch (const nlohmann::json::parse_error&) {
    }
    if (ours) {
      EXPECT_TRUE(theirs) << s;
    }
    const bool trimmed = !s.empty() && s.front() == '{' && s.back() == '}';
    if (theirs && trimmed) {
      EXPECT_TRUE(ours) << s;
    }
  }
  EXPECT_GT(completes, 1000);
}

using JsonTokenMaskTest = test::JsonTokenizerTest;

TEST_F(JsonTokenMaskTest, EqualsATokenByTokenCheckInEveryKindOfState) {
  for (const char* prefix : {"", "{", "{ ", "{\"", "{\"ab", "{\"a\\", "{\"a\\u0", "{\"a\"", "{\"a\":", "{\"a\": -",
                             "{\"a\":1", "{\"a\":1.5e", "{\"a\":[", "{\"a\":[1,", "{\"a\":tr", "{\"a\":{}",
                             "{\"a\":\"x y"}) {
    SCOPED_TRACE(prefix);
    JsonAcceptor state;
    ASSERT_EQ(taken(prefix, &state), std::string_view(prefix).size());
    std::vector<uint32_t> mask;
    masks_->allowed(state, &mask);
    ASSERT_EQ(mask.size(), size_t(masks_->words()));
    int n_allowed = 0, wrong = 0;
    for (int32_t t = 0; t < masks_->vocab(); ++t) {
      const bool bit = mask[size_t(t) / 32] >> (t % 32) & 1u;
      n_allowed += bit;
      bool expect = false;
      if (t < tok_->vocab_size() && !tok_->is_special(t)) {
        JsonAcceptor s = state;
        const std::string_view b = tok_->token_bytes(t);
        expect = !b.empty() && s.feed(b);
      }
      wrong += bit != expect;
    }
    EXPECT_EQ(wrong, 0);
    EXPECT_GT(n_allowed, 0);
    for (int32_t special : {199999, 200002, 200005, 200007, 200012, 201087})
      EXPECT_FALSE(mask[size_t(special) / 32] >> (special % 32) & 1u) << special;
  }
}

}  // namespace
}  // namespace mxs
