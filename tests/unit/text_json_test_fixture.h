// The real tokenizer and its JSON token masks for the structured-output tests, loaded once per test binary
// ($MXSERVE_TOKENIZER, else the cache that scripts/fetch-tokenizer.sh fills); tests skip without them.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/paths.h"
#include "text/json_schema_acceptor.h"
#include "text/json_token_mask.h"
#include "text/tokenizer.h"

namespace mxs::test {

// 1-3 random edits of s (replace, insert or delete a byte; inserted bytes drawn from `alphabet`): the fuzz tests'
// near-miss documents.
inline void mutate_json(std::string& s, std::mt19937& rng, const std::string& alphabet) {
  for (int e = 0, edits = 1 + int(rng() % 3); e < edits && !s.empty(); ++e) {
    const size_t pos = rng() % s.size();
    const char c = alphabet[rng() % alphabet.size()];
    switch (rng() % 3) {
      case 0: s[pos] = c; break;
      case 1: s.insert(s.begin() + long(pos), c); break;
      default: s.erase(pos, 1);
    }
  }
}

class JsonTokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (tok_) return;
    const char* env = std::getenv("MXSERVE_TOKENIZER");
    const std::string path = env ? env : join_path(cache_dir(), "tokenizer/tokenizer.json");
    if (!file_exists(path)) return;
    tok_ = Tokenizer::from_file(path);
    masks_ = std::make_shared<const JsonTokenMask>(*tok_, 201088);
  }
  void SetUp() override {
    if (!tok_) GTEST_SKIP() << "no tokenizer.json (run scripts/fetch-tokenizer.sh)";
  }
  // Tokens on which the mask of `state` and a token-by-token check (JsonTokenMask::extends) disagree; *allowed: how
  // many the mask allows.
  template <class Acceptor>
  static int mask_mismatches(const Acceptor& state, int* allowed) {
    std::vector<uint32_t> mask;
    masks_->allowed(state, &mask);
    int wrong = 0;
    *allowed = 0;
    for (int32_t t = 0; t < masks_->vocab(); ++t) {
      const bool bit = mask[size_t(t) / 32] >> (t % 32) & 1u;
      *allowed += bit;
      wrong += bit != masks_->extends(state, t);
    }
    return wrong;
  }

  // In the state of `schema` after each prefix, the mask equals the token-by-token check and allows something.
  static void expect_schema_masks(const JsonSchema* schema, std::initializer_list<const char*> prefixes) {
    for (const char* prefix : prefixes) {
      SCOPED_TRACE(prefix);
      JsonSchemaAcceptor state(schema);
      ASSERT_TRUE(state.feed(std::string_view(prefix)));
      int allowed = 0;
      EXPECT_EQ(mask_mismatches(state, &allowed), 0);
      EXPECT_GT(allowed, 0);
    }
  }

  static inline std::unique_ptr<Tokenizer> tok_;
  static inline std::shared_ptr<const JsonTokenMask> masks_;
};

}  // namespace mxs::test
