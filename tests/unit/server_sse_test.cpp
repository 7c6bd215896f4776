// SSE / chunked framing, stop-string hold-back and the constant-time API key check.
#include <gtest/gtest.h>

#include "server/auth.h"
#include "server/sse.h"
#include "server/stop_strings.h"

namespace mxs::server {
namespace {

TEST(ServerSse, EventFraming) {
  EXPECT_EQ(sse_event("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_event("one\ntwo\r\nthree"), "data: one\ndata: two\ndata: three\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // nlohmann escapes newlines inside strings, so a JSON event is always one data line.
  const std::string ev = sse_json(nlohmann::json{{"content", "a\nb"}});
  EXPECT_EQ(ev, "data: {\"content\":\"a\\nb\"}\n\n");
  // Invalid UTF-8 in a value is replaced rather than throwing.
  EXPECT_NO_THROW(sse_json(nlohmann::json{{"x", std::string("\xff\xfe")}}));
}

TEST(ServerSse, ChunkedFraming) {
  EXPECT_EQ(chunked_frame("hello"), "5\r\nhello\r\n");
  EXPECT_EQ(chunked_frame(std::string(26, 'x')), "1a\r\n" + std::string(26, 'x') + "\r\n");
  EXPECT_EQ(chunked_frame(""), "");
  EXPECT_EQ(chunked_end(), "0\r\n\r\n");
}

TEST(ServerStopStrings, HoldsBackAPossiblePrefixAndCutsAtTheMatch) {
  StopStringFilter f({"STOP", "xy"});
  std::string out = f.feed("Hello S");
  out += f.feed("TO");
  EXPECT_EQ(out, "Hello ");  // "STO" held back
  out += f.feed("P and more");
  EXPECT_TRUE(f.matched());
  EXPECT_EQ(out, "Hello ");
  EXPECT_EQ(f.feed("ignored"), "");
  EXPECT_EQ(f.flush(), "");
}

TEST(ServerStopStrings, ReleasesEverythingWithoutAMatch) {
  StopStringFilter f({"END"});
  std::string out;
  for (const char* piece : {"a", "E", "N", "b", "c\xc3", "\xa9", "EN"}) out += f.feed(piece);
  out += f.flush();
  EXPECT_FALSE(f.matched());
  EXPECT_EQ(out,
            "aENbc\xc3\xa9"
            "EN");
  StopStringFilter none({});
  EXPECT_EQ(none.feed("abc"), "abc");
}

TEST(ServerStopStrings, NeverSplitsAUtf8Character) {
  StopStringFilter f({"zz"});                   // holds back 1 byte
  const std::string out = f.feed("a\xc3\xa9");  // "aé": the cut would fall inside é
  EXPECT_EQ(out, "a");
  EXPECT_EQ(f.flush(), "\xc3\xa9");
}

TEST(ServerAuth, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "secret2"));
  EXPECT_FALSE(constant_time_equal("", "x"));
  EXPECT_TRUE(constant_time_equal("", ""));
}

TEST(ServerAuth, BearerHeader) {
  ApiKeyAuth auth("k3y");
  EXPECT_TRUE(auth.allows("Bearer k3y"));
  EXPECT_TRUE(auth.allows("bearer k3y "));
  EXPECT_FALSE(auth.allows("Bearer k3"));
  EXPECT_FALSE(auth.allows("Basic k3y"));
  EXPECT_FALSE(auth.allows(""));
  EXPECT_FALSE(auth.allows("k3y"));
  EXPECT_TRUE(ApiKeyAuth("").allows(""));  // disabled
}

}  // namespace
}  // namespace mxs::server
