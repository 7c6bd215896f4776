// Harmony output parser + OpenAI mapping: the spec's completion token vector, tool calls with the recipient
// before or after the channel, preambles, finish reasons, UTF-8-safe streaming, and every kind of model slip
// (repaired or dropped, counted, never an exception, never special-token text in any field).
#include <gtest/gtest.h>

#include "text/harmony_parser.h"
#include "text/utf8.h"
#include "text_harmony_test_util.h"

namespace mxs::harmony {
namespace {

const test::ByteTokenizer kFake;

// Model output (after the prompt's "<|start|>assistant"), spelled with special tokens.
std::vector<int32_t> out(const std::string& spelled) { return kFake.encode_with_specials(spelled); }

ChatResult parse(const std::string& spelled, bool length = false) {
  return parse_chat_output(kFake, out(spelled), length, /*call_id_seed=*/1);
}

void expect_no_markers(const ChatResult& r) {
  for (const std::string* s : {&r.content, &r.reasoning, &r.discarded}) EXPECT_EQ(s->find("<|"), std::string::npos) << *s;
  for (const ToolCall& c : r.tool_calls) {
    EXPECT_EQ(c.name.find("<|"), std::string::npos);
    EXPECT_EQ(c.arguments.find("<|"), std::string::npos);
  }
}

// §4.7: the harmony docs' completion for "What is 2 + 2?", as real token ids.
TEST(HarmonyParser, SpecCompletionTokens) {
  const Tokenizer* tok = test::real_tokenizer();
  if (!tok) GTEST_SKIP() << "tokenizer.json not found (run scripts/fetch-tokenizer.sh)";
  const std::vector<int32_t> ids = {200005, 35644, 200008, 1844,  31064, 25,     392,    4827, 382,   220,
                                    17,     659,   220,    17,    16842, 12295,  81645,  13,   51441, 6052,
                                    13,     200007, 200006, 173781, 200005, 17196, 200008, 17,   659,   220,
                                    17,     314,   220,    19,    13,    200002};
  const ChatResult r = parse_chat_output(*tok, ids, false, 1);
  EXPECT_EQ(r.reasoning, "User asks: \"What is 2 + 2?\" Simple arithmetic. Provide answer.");
  EXPECT_EQ(r.content, "2 + 2 = 4.");
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.slips, 0);
}

TEST(HarmonyParser, EventsAndHeaders) {
  StreamParser p(kFake);
  std::vector<Event> ev;
  for (int32_t id : out("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{}<|call|>"
                        "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>ok<|end|>"))
    p.feed(id, ev);
  p.finish(ev);
  ASSERT_GE(ev.size(), 6u);
  EXPECT_EQ(ev[0].kind, Event::Kind::kMessageStart);
  EXPECT_EQ(ev[0].header.author, "assistant");
  EXPECT_EQ(ev[0].header.channel, "commentary");
  EXPECT_EQ(ev[0].header.recipient, "functions.get_weather");
  EXPECT_EQ(ev[0].header.content_type, "json");
  EXPECT_TRUE(ev[0].header.constrained);
  std::vector<const Event*> starts, ends;
  for (const Event& e : ev) {
    if (e.kind == Event::Kind::kMessageStart) starts.push_back(&e);
    if (e.kind == Event::Kind::kMessageEnd) ends.push_back(&e);
  }
  ASSERT_EQ(starts.size(), 2u);
  ASSERT_EQ(ends.size(), 2u);
  EXPECT_EQ(ends[0]->end, EndReason::kCall);
  EXPECT_EQ(starts[1]->header.author, "functions.get_weather");
  EXPECT_EQ(starts[1]->header.recipient, "assistant");
  EXPECT_EQ(starts[1]->header.channel, "commentary");
  EXPECT_EQ(ends[1]->end, EndReason::kEnd);
  EXPECT_EQ(p.stop_token(), tok::kCall);
  EXPECT_EQ(p.stats().slips, 0);
}

TEST(HarmonyParser, ToolCallRecipientAfterChannel) {
  const ChatResult r = parse(
      "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary "
      "to=functions.get_weather <|constrain|>json<|message|>{\"location\":\"San Francisco\"}<|call|>");
  EXPECT_EQ(r.reasoning, "Need weather.");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "get_weather");
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"location\":\"San Francisco\"}");
  EXPECT_EQ(r.tool_calls[0].id.rfind("call_", 0), 0u);
  EXPECT_EQ(r.tool_calls[0].id.size(), 29u);
  EXPECT_EQ(r.finish_reason, FinishReason::kToolCalls);
  EXPECT_EQ(r.slips, 0);
}

TEST(HarmonyParser, ToolCallRecipientInRolePartWithPlainJson) {
  const ChatResult r = parse(" to=functions.lookup<|channel|>commentary json<|message|>{}<|call|>");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].name, "lookup");
  EXPECT_EQ(r.tool_calls[0].arguments, "{}");
  EXPECT_EQ(r.finish_reason, FinishReason::kToolCalls);
  EXPECT_EQ(r.slips, 0);
}

TEST(HarmonyParser, PreambleIsContent) {
  const ChatResult r = parse(
      "<|channel|>commentary<|message|>Let me check.<|end|><|start|>assistant to=functions.f<|channel|>commentary "
      "<|constrain|>json<|message|>{\"a\":1}<|call|>");
  EXPECT_EQ(r.content, "Let me check.");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(r.tool_calls[0].arguments, "{\"a\":1}");
  EXPECT_EQ(r.slips, 0);
}

TEST(HarmonyParser, StreamingDeltas) {
  ChatOutputParser p(kFake, 7);
  std::string content, reasoning, args, name, id;
  int first_deltas = 0;
  const std::string text = "<|channel|>analysis<|message|>héllo 🙂 wörld<|end|><|start|>assistant<|channel|>final"
                           "<|message|>ünïcode ✓<|end|><|start|>assistant to=functions.f<|channel|>commentary "
                           "<|constrain|>json<|message|>{\"k\":\"€\"}<|call|>";
  for (int32_t tokid : out(text)) {
    const ChatDelta d = p.feed(tokid);
    EXPECT_TRUE(utf8::is_valid(d.content) && utf8::is_valid(d.reasoning));
    content += d.content;
    reasoning += d.reasoning;
    for (const ToolCallDelta& t : d.tool_calls) {
      EXPECT_EQ(t.index, 0);
      EXPECT_TRUE(utf8::is_valid(t.arguments));
      if (!t.name.empty()) {
        ++first_deltas;
        name = t.name;
        id = t.id;
      }
      args += t.arguments;
    }
  }
  EXPECT_TRUE(p.done());
  EXPECT_TRUE(p.finish(false).empty());
  EXPECT_EQ(reasoning, "héllo 🙂 wörld");
  EXPECT_EQ(content, "ünïcode ✓");
  EXPECT_EQ(first_deltas, 1);
  EXPECT_EQ(name, "f");
  EXPECT_EQ(args, "{\"k\":\"€\"}");
  EXPECT_EQ(p.result().tool_calls.at(0).id, id);
  EXPECT_EQ(p.result().finish_reason, FinishReason::kToolCalls);
  // Non-streaming = the same mapper over all tokens.
  const ChatResult whole = parse_chat_output(kFake, out(text), false, 7);
  EXPECT_EQ(whole.content, content);
  EXPECT_EQ(whole.reasoning, reasoning);
  EXPECT_EQ(whole.tool_calls.at(0).arguments, args);
  EXPECT_EQ(whole.tool_calls.at(0).id, id);
}

TEST(HarmonyParser, LengthFlushesOpenMessage) {
  ChatResult r = parse("<|channel|>analysis<|message|>Thinking about it", true);
  EXPECT_EQ(r.reasoning, "Thinking about it");
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
  EXPECT_EQ(r.slips, 0);

  // Cut inside a UTF-8 sequence: the partial character becomes U+FFFD, nothing is lost silently.
  std::vector<int32_t> ids = out("<|channel|>final<|message|>caf");
  ids.push_back(0xC3);  // first byte of "é"
  ChatOutputParser p(kFake, 1);
  std::string streamed;
  for (int32_t id : ids) streamed += p.feed(id).content;
  EXPECT_EQ(streamed, "caf");
  streamed += p.finish(true).content;
  EXPECT_EQ(streamed, "caf\xEF\xBF\xBD");
  EXPECT_EQ(p.result().content, streamed);
  EXPECT_EQ(p.result().finish_reason, FinishReason::kLength);

  // Truncated inside a header: nothing to show, the header bytes are accounted as dropped.
  r = parse("<|channel|>ana", true);
  EXPECT_EQ(r.content + r.reasoning, "");
  EXPECT_EQ(r.parser.dropped_bytes, 3);
  EXPECT_EQ(r.finish_reason, FinishReason::kLength);
}

TEST(HarmonyParser, SlipMissingChannel) {
  const ChatResult r = parse("<|message|>Hello.<|return|>");
  EXPECT_EQ(r.content, "Hello.");
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_GE(r.slips, 1);
  expect_no_markers(r);
}

TEST(HarmonyParser, SlipChannelInsideContent) {
  // The model skipped "<|end|><|start|>assistant" between its analysis and its answer.
  const ChatResult r = parse("<|channel|>analysis<|message|>think<|channel|>final<|message|>answer<|return|>");
  EXPECT_EQ(r.reasoning, "think");
  EXPECT_EQ(r.content, "answer");
  EXPECT_EQ(r.slips, 1);
}

TEST(HarmonyParser, SlipStartInsideContent) {
  const ChatResult r = parse("<|channel|>analysis<|message|>think<|start|>assistant<|channel|>final<|message|>ok<|return|>");
  EXPECT_EQ(r.reasoning, "think");
  EXPECT_EQ(r.content, "ok");
  EXPECT_EQ(r.slips, 1);
}

TEST(HarmonyParser, SlipTextBeforeStart) {
  const ChatResult r = parse("<|channel|>analysis<|message|>a<|end|>junk<|start|>assistant<|channel|>final<|message|>ok<|return|>");
  EXPECT_EQ(r.reasoning, "a");
  EXPECT_EQ(r.content, "ok");
  EXPECT_EQ(r.parser.dropped_bytes, 4);  // "junk"
  EXPECT_GE(r.slips, 1);
  expect_no_markers(r);

  // Text where <|start|> was lost but the header itself is intact: recovered.
  const ChatResult s = parse("<|channel|>analysis<|message|>a<|end|>assistant<|channel|>final<|message|>ok<|return|>");
  EXPECT_EQ(s.content, "ok");
  EXPECT_EQ(s.slips, 1);
}

TEST(HarmonyParser, SlipSpecialTokensInHeaderAndContent) {
  // A stop token inside a header: the header is dropped, generation is over.
  ChatResult r = parse("<|channel|>final<|return|>");
  EXPECT_EQ(r.content, "");
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_GE(r.slips, 1);

  // <|message|>, <|constrain|>, reserved ids and ids past the vocabulary inside content: ignored.
  std::vector<int32_t> ids = out("<|channel|>final<|message|>a");
  for (int32_t id : {tok::kMessage, tok::kConstrain, tok::kStartOfText, tok::kEndOfPrompt, 200001, 201087, 999999, -5})
    ids.push_back(id);
  const std::vector<int32_t> tail = out("b<|return|>");
  ids.insert(ids.end(), tail.begin(), tail.end());
  r = parse_chat_output(kFake, ids, false, 1);
  EXPECT_EQ(r.content, "ab");
  EXPECT_EQ(r.slips, 8);
  expect_no_markers(r);
}

TEST(HarmonyParser, SlipUnknownRecipientAndOtherAuthors) {
  // A built-in tool we never offered, and the model writing the tool's answer itself: neither surfaces.
  const ChatResult r = parse(
      "<|channel|>analysis<|message|>search<|end|><|start|>assistant to=browser.search<|channel|>analysis "
      "<|constrain|>json<|message|>{\"q\":1}<|end|><|start|>browser.search to=assistant<|channel|>analysis"
      "<|message|>results<|end|><|start|>assistant<|channel|>final<|message|>done<|return|>");
  EXPECT_EQ(r.reasoning, "search");
  EXPECT_EQ(r.content, "done");
  EXPECT_TRUE(r.tool_calls.empty());
  EXPECT_EQ(r.discarded, "{\"q\":1}results");
  EXPECT_EQ(r.slips, 2);
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
}

TEST(HarmonyParser, UnknownChannelGoesToReasoning) {
  const ChatResult r = parse("<|channel|>scratchpad<|message|>private<|end|><|start|>assistant<|channel|>final<|message|>ok<|return|>");
  EXPECT_EQ(r.reasoning, "private");
  EXPECT_EQ(r.content, "ok");
  EXPECT_EQ(r.slips, 1);
}

TEST(HarmonyParser, EndOfTextStops) {
  const ChatResult r = parse("<|channel|>final<|message|>ok<|endoftext|>");
  EXPECT_EQ(r.content, "ok");
  EXPECT_EQ(r.finish_reason, FinishReason::kStop);
  EXPECT_EQ(r.slips, 1);
}

TEST(HarmonyParser, ByteAccounting) {
  const std::string text = "<|channel|>final<|message|>hé<|end|>xx<|start|>assistant<|channel|>analysis<|message|>t";
  int64_t ordinary = 0;
  for (int32_t id : out(text)) ordinary += kFake.is_special(id) ? 0 : 1;
  const ChatResult r = parse(text, true);
  EXPECT_EQ(r.parser.header_bytes + r.parser.content_bytes + r.parser.dropped_bytes, ordinary);
  EXPECT_EQ(r.parser.content_bytes, 4);  // "hé" (3) + "t"
  EXPECT_EQ(r.parser.dropped_bytes, 2);  // "xx"
}

}  // namespace
}  // namespace mxs::harmony
