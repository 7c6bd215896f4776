// Harmony fuzzing: >= 100k random and mutated token sequences through the streaming parser and the OpenAI
// mapper, plus render -> parse round trips of random conversations. Invariants checked on every sequence:
//   1. nothing throws;
//   2. bytes: header_bytes + content_bytes + dropped_bytes == bytes of all ordinary tokens fed;
//   3. text: each message's text (its kText events) == lossy UTF-8 of the raw bytes of the ordinary tokens
//      fed while it was open (so every delta is whole UTF-8 and no byte is lost or invented);
//   4. the mapper loses nothing: content + reasoning + tool arguments + discarded == all message text;
//   5. no special-token text appears in any output beyond what ordinary tokens spelled themselves;
//   6. finish reason: length when asked, else tool_calls iff a call was made, else stop.
// Round trips (unmutated renders) must reproduce every message exactly, with zero slips from the model side.
// Longer runs: MXS_FUZZ_SCALE=N multiplies the counts, MXS_FUZZ_SEED=S changes the sequences.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>

#include "text/harmony_parser.h"
#include "text/utf8.h"
#include "text_harmony_test_util.h"

namespace mxs::harmony {
namespace {

using Rng = std::mt19937_64;

constexpr int32_t kFormatSpecials[] = {tok::kStart, tok::kMessage, tok::kEnd,    tok::kChannel,
                                       tok::kConstrain, tok::kCall, tok::kReturn, tok::kEndOfText};
constexpr int32_t kOddIds[] = {tok::kStartOfText, tok::kEndOfPrompt, 200000, 200001, 200004, 200013, 201087, 250000, -1};
const char* kSnippets[] = {"assistant", "analysis", "final", "commentary", " to=functions.get_weather", "to=", "json",
                           " ", "functions.f", "user", "browser.search", "\n", "é", "🙂", "<|end|>", "{\"a\": 1}"};

size_t pick(Rng& rng, size_t n) { return static_cast<size_t>(rng() % n); }

int64_t count_markers(std::string_view s) {
  int64_t n = 0;
  for (size_t p = s.find("<|"); p != std::string_view::npos; p = s.find("<|", p + 1)) ++n;
  return n;
}

// The tokenizer under test and the number of its ordinary (BPE) ids, which form the prefix [0, n_ordinary).
struct Vocab {
  explicit Vocab(const Tokenizer& t) : tok(t) {
    while (n_ordinary < tok.vocab_size() && !tok.is_special(n_ordinary)) ++n_ordinary;
  }
  const Tokenizer& tok;
  int32_t n_ordinary = 0;
};

// Ordinary tokens that matter to the grammar (role/channel words, recipients), or random vocabulary ids.
void add_ordinary(Rng& rng, const Vocab& v, std::vector<int32_t>& ids) {
  if (rng() % 3 == 0) {
    const std::vector<int32_t> s = v.tok.encode(kSnippets[pick(rng, std::size(kSnippets))]);
    ids.insert(ids.end(), s.begin(), s.end());
    return;
  }
  ids.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(v.n_ordinary)));
}

void add_random_token(Rng& rng, const Vocab& v, std::vector<int32_t>& ids) {
  const uint64_t r = rng() % 100;
  if (r < 30) ids.push_back(kFormatSpecials[pick(rng, std::size(kFormatSpecials))]);
  else if (r < 33) ids.push_back(kOddIds[pick(rng, std::size(kOddIds))]);
  else add_ordinary(rng, v, ids);
}

std::string random_text(Rng& rng, size_t max_pieces) {
  static const char* kPieces[] = {"a", "b", "The ", "answer", " is", " 4.", "\n", "  ", "é", "中文", "🙂", "👩‍👩‍👧",
                                  "<|end|>", "<|start|>", "<|channel|>final<|message|>", "<|call|>", " to=functions.x",
                                  "\"", "{", "}", "\\", "\t", "\r\n", "’", "0123"};
  std::string s;
  const size_t n = pick(rng, max_pieces + 1);
  for (size_t i = 0; i < n; ++i) s += kPieces[pick(rng, std::size(kPieces))];
  return s;
}

std::string random_name(Rng& rng) {
  static const char* kNames[] = {"get_weather", "f", "lookup-city", "Search2", "x_y_z"};
  return kNames[pick(rng, std::size(kNames))];
}

// One assistant turn as the model would write it after "<|start|>assistant": [analysis] [preamble] then a
// final answer (<|return|>) or a tool call (<|call|>). Also returns what the mapper must produce.
struct Turn {
  std::vector<int32_t> ids;
  ChatResult expected;
};

Turn random_turn(Rng& rng, const Tokenizer& tok) {
  std::vector<Message> messages;
  Turn t;
  if (rng() % 2) {
    messages.push_back({"assistant", "", "analysis", "", false, random_text(rng, 6)});
    t.expected.reasoning = messages.back().content;
  }
  const bool call = rng() % 2;
  if (call && rng() % 2) {
    messages.push_back({"assistant", "", "commentary", "", false, random_text(rng, 4)});
    t.expected.content = messages.back().content;
  }
  if (!call) {
    messages.push_back({"assistant", "", "final", "", false, random_text(rng, 6)});
    t.expected.content += messages.back().content;
    t.expected.finish_reason = FinishReason::kStop;
  }
  Prompt p;
  for (const Message& m : messages) append_message(p, m);
  if (call) {
    // Both places the model puts the recipient (§4.2), with " <|constrain|>json" or plain " json".
    const std::string name = random_name(rng), args = random_text(rng, 5);
    const bool constrained = rng() % 4 != 0;
    p.add_special(tok::kStart);
    if (rng() % 2) {
      p.add_text("assistant to=functions." + name);
      p.add_special(tok::kChannel);
      p.add_text("commentary");
    } else {
      p.add_text("assistant");
      p.add_special(tok::kChannel);
      p.add_text("commentary to=functions." + name);
    }
    if (constrained) {
      p.add_text(" ");
      p.add_special(tok::kConstrain);
      p.add_text("json");
    } else {
      p.add_text(" json");
    }
    p.add_special(tok::kMessage);
    p.add_text(args);
    p.add_special(tok::kCall);
    t.expected.tool_calls.push_back({"", name, args});
    t.expected.finish_reason = FinishReason::kToolCalls;
  }
  t.ids = p.to_ids(tok);
  // The prompt already holds "<|start|>assistant"; the last message ends the generation.
  size_t skip = 1 + tok.encode("assistant").size();
  t.ids.erase(t.ids.begin(), t.ids.begin() + static_cast<std::ptrdiff_t>(skip));
  if (!call) t.ids.back() = tok::kReturn;
  return t;
}

void mutate(Rng& rng, const Vocab& v, std::vector<int32_t>& ids) {
  const int n = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < n; ++i) {
    const size_t pos = ids.empty() ? 0 : pick(rng, ids.size());
    switch (rng() % 6) {
      case 0:
        if (!ids.empty()) ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(pos));
        break;
      case 1: {
        std::vector<int32_t> one;
        add_random_token(rng, v, one);
        ids.insert(ids.begin() + static_cast<std::ptrdiff_t>(pos), one.begin(), one.end());
        break;
      }
      case 2:
        if (!ids.empty()) ids[pos] = kFormatSpecials[pick(rng, std::size(kFormatSpecials))];
        break;
      case 3:
        ids.resize(pos);  // truncation
        break;
      case 4:
        if (pos + 1 < ids.size()) std::swap(ids[pos], ids[pos + 1]);
        break;
      case 5: {
        const size_t len = std::min<size_t>(ids.size() - std::min(pos, ids.size()), 1 + pick(rng, 8));
        std::vector<int32_t> dup(ids.begin() + static_cast<std::ptrdiff_t>(pos),
                                 ids.begin() + static_cast<std::ptrdiff_t>(pos + len));
        ids.insert(ids.begin() + static_cast<std::ptrdiff_t>(pos), dup.begin(), dup.end());
        break;
      }
    }
  }
}

// Invariants 1-6 for one sequence; returns false (with a gtest failure naming the sequence) on a violation.
bool check_sequence(const Tokenizer& tok, const std::vector<int32_t>& ids, bool length, uint64_t seed) {
  auto describe = [&] {
    std::string s = "seed " + std::to_string(seed) + " ids:";
    for (int32_t id : ids) s += " " + std::to_string(id);
    return s;
  };
  try {
    // Parser level: attribute each ordinary token's bytes to the message open when it arrives.
    StreamParser parser(tok);
    std::vector<Event> events;
    std::string raw, text, all_text;
    bool open = false;
    int64_t ordinary_bytes = 0, ordinary_markers = 0;
    std::string ordinary_all;
    auto on_events = [&]() -> bool {
      for (const Event& e : events) {
        if (e.kind == Event::Kind::kMessageStart) {
          if (open) return false;
          open = true, raw.clear(), text.clear();
        } else if (e.kind == Event::Kind::kText) {
          if (!open || !utf8::is_valid(e.text)) return false;
          text += e.text;
        } else {
          std::string expect;
          utf8::append_lossy(expect, raw);
          if (!open || text != expect) return false;
          all_text += text;
          open = false;
        }
      }
      events.clear();
      return true;
    };
    for (int32_t id : ids) {
      const bool ordinary = id >= 0 && id < tok.vocab_size() && !tok.is_special(id);
      if (ordinary) {
        ordinary_bytes += static_cast<int64_t>(tok.token_bytes(id).size());
        ordinary_all += tok.token_bytes(id);
        if (parser.in_content()) raw += tok.token_bytes(id);
      }
      parser.feed(id, events);
      if (!on_events()) {
        ADD_FAILURE() << "message text differs from its raw bytes; " << describe();
        return false;
      }
    }
    parser.finish(events);
    if (!on_events() || open) {
      ADD_FAILURE() << "message text differs from its raw bytes at finish; " << describe();
      return false;
    }
    const ParserStats& st = parser.stats();
    if (st.header_bytes + st.content_bytes + st.dropped_bytes != ordinary_bytes) {
      ADD_FAILURE() << "byte accounting " << st.header_bytes << "+" << st.content_bytes << "+" << st.dropped_bytes
                    << " != " << ordinary_bytes << "; " << describe();
      return false;
    }

    // Mapper level.
    const ChatResult r = parse_chat_output(tok, ids, length, seed | 1);
    size_t mapped = r.content.size() + r.reasoning.size() + r.discarded.size();
    for (const ToolCall& c : r.tool_calls) mapped += c.arguments.size();
    if (mapped != all_text.size()) {
      ADD_FAILURE() << "mapper output " << mapped << " bytes != message text " << all_text.size() << "; " << describe();
      return false;
    }
    ordinary_markers = count_markers(ordinary_all);
    int64_t out_markers = count_markers(r.content) + count_markers(r.reasoning) + count_markers(r.discarded);
    for (const ToolCall& c : r.tool_calls) out_markers += count_markers(c.arguments) + count_markers(c.name);
    if (out_markers > ordinary_markers) {
      ADD_FAILURE() << "special-token text in the output; " << describe();
      return false;
    }
    const FinishReason want = length ? FinishReason::kLength
                              : r.tool_calls.empty() ? FinishReason::kStop
                                                     : FinishReason::kToolCalls;
    if (r.finish_reason != want) {
      ADD_FAILURE() << "finish reason " << finish_reason_name(r.finish_reason) << "; " << describe();
      return false;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "exception: " << e.what() << "; " << describe();
    return false;
  }
  return true;
}

bool check_round_trip(const Tokenizer& tok, const Turn& t, uint64_t seed) {
  const ChatResult r = parse_chat_output(tok, t.ids, false, seed | 1);
  bool ok = r.content == t.expected.content && r.reasoning == t.expected.reasoning &&
            r.tool_calls.size() == t.expected.tool_calls.size() && r.finish_reason == t.expected.finish_reason &&
            r.slips == 0;
  for (size_t i = 0; ok && i < r.tool_calls.size(); ++i)
    ok = r.tool_calls[i].name == t.expected.tool_calls[i].name &&
         r.tool_calls[i].arguments == t.expected.tool_calls[i].arguments;
  if (!ok)
    ADD_FAILURE() << "round trip (seed " << seed << "): content '" << r.content << "' vs '" << t.expected.content
                  << "', reasoning '" << r.reasoning << "' vs '" << t.expected.reasoning << "', slips " << r.slips;
  return ok;
}

// A random OpenAI-shaped conversation rendered whole, then read back by the parser: every harmony message
// (system, developer, user, assistant, tool calls, tool outputs) comes back with the same header and text.
bool check_prompt_round_trip(const Tokenizer& tok, Rng& rng, uint64_t seed) {
  std::vector<FunctionTool> tools;
  if (rng() % 2) tools.push_back({random_name(rng), random_text(rng, 2), nullptr});
  std::vector<ChatMessage> chat;
  if (rng() % 2) chat.push_back({Role::kSystem, random_text(rng, 3), "", {}, "", ""});
  const int turns = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < turns; ++i) {
    chat.push_back({Role::kUser, random_text(rng, 4), "", {}, "", ""});
    ChatMessage a{Role::kAssistant, random_text(rng, 3), random_text(rng, 3), {}, "", ""};
    if (rng() % 2) {
      a.tool_calls.push_back({"call_" + std::to_string(i), random_name(rng), random_text(rng, 3)});
      chat.push_back(a);
      chat.push_back({Role::kTool, random_text(rng, 3), "", {}, "call_" + std::to_string(i), ""});
    } else {
      chat.push_back(a);
    }
  }
  RenderOptions options;
  options.conversation_start_date = "2025-01-01";
  options.drop_previous_analysis = rng() % 2;
  const std::vector<Message> expected = to_harmony_messages(chat, tools, options);
  const std::vector<int32_t> ids = render_prompt(chat, tools, options).to_ids(tok);

  StreamParser parser(tok, "");
  std::vector<Event> events;
  for (size_t i = 1; i < ids.size(); ++i) parser.feed(ids[i], events);  // ids[0] is the first <|start|>
  parser.finish(events);
  std::vector<Message> got;
  for (const Event& e : events) {
    if (e.kind == Event::Kind::kMessageStart)
      got.push_back({e.header.author, e.header.recipient, e.header.channel, e.header.content_type,
                     e.header.constrained, ""});
    else if (e.kind == Event::Kind::kText && !got.empty())
      got.back().content += e.text;
  }
  bool ok = got.size() == expected.size();
  for (size_t i = 0; ok && i < got.size(); ++i) {
    const Message &g = got[i], &x = expected[i];
    ok = g.author == x.author && g.recipient == x.recipient && g.channel == x.channel &&
         g.content_type == x.content_type && g.constrained == x.constrained && g.content == x.content;
    if (!ok) ADD_FAILURE() << "prompt round trip (seed " << seed << ") message " << i << ": '" << g.author << "' to='"
                           << g.recipient << "' channel='" << g.channel << "' content='" << g.content << "'";
  }
  if (got.size() != expected.size())
    ADD_FAILURE() << "prompt round trip (seed " << seed << "): " << got.size() << " messages, expected " << expected.size();
  // Slips: only the channel-less system/developer/user/tool-less messages ("Channel must be included" is for
  // the model's output), never anything else.
  int64_t channel_less = 0;
  for (const Message& m : expected) channel_less += m.channel.empty();
  if (ok && parser.stats().slips != channel_less) {
    ADD_FAILURE() << "prompt round trip (seed " << seed << "): " << parser.stats().slips << " slips, expected "
                  << channel_less;
    ok = false;
  }
  return ok;
}

struct Counts {
  int64_t random = 0, mutated = 0, turn_round_trips = 0, prompt_round_trips = 0;
  int64_t total() const { return random + mutated + turn_round_trips + prompt_round_trips; }
};

// Runs the whole mix on one tokenizer; stops at the first failing sequence.
void fuzz(const Tokenizer& tok, uint64_t seed0, int64_t n_random, int64_t n_mutated, int64_t n_round_trips,
          Counts& counts) {
  const Vocab vocab(tok);
  Rng rng(seed0);
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n_random; ++i, ++counts.random) {
    const uint64_t seed = rng();
    Rng local(seed);
    ids.clear();
    const size_t len = pick(local, 80);
    if (local() % 4 == 0) ids.push_back(tok::kStart);
    while (ids.size() < len) add_random_token(local, vocab, ids);
    if (!check_sequence(tok, ids, local() % 3 == 0, seed)) return;
  }
  for (int64_t i = 0; i < n_mutated; ++i, ++counts.mutated) {
    const uint64_t seed = rng();
    Rng local(seed);
    Turn t = random_turn(local, tok);
    mutate(local, vocab, t.ids);
    if (!check_sequence(tok, t.ids, local() % 3 == 0, seed)) return;
  }
  for (int64_t i = 0; i < n_round_trips; ++i) {
    const uint64_t seed = rng();
    Rng local(seed);
    const Turn t = random_turn(local, tok);
    if (!check_round_trip(tok, t, seed) || !check_sequence(tok, t.ids, false, seed)) return;
    ++counts.turn_round_trips;
    if (!check_prompt_round_trip(tok, local, seed)) return;
    ++counts.prompt_round_trips;
  }
}

TEST(HarmonyFuzz, RandomMutatedAndRoundTrips) {
  const auto t0 = std::chrono::steady_clock::now();
  auto env = [](const char* name, uint64_t fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
  };
  const int64_t k = static_cast<int64_t>(env("MXS_FUZZ_SCALE", 1));
  const uint64_t seed = env("MXS_FUZZ_SEED", 0x5eed0000);
  Counts counts;
  test::ByteTokenizer fake;  // one token per byte: every UTF-8 split and header split happens
  fuzz(fake, seed + 1, 50000 * k, 40000 * k, 10000 * k, counts);
  if (!HasFailure()) {
    if (const Tokenizer* real = test::real_tokenizer())
      fuzz(*real, seed + 2, 10000 * k, 10000 * k, 3000 * k, counts);
    else
      std::printf("harmony fuzz: tokenizer.json not found, byte-level tokenizer only\n");
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("harmony fuzz: %lld sequences (%lld random, %lld mutated renders, %lld turn + %lld prompt round trips) "
              "in %.1f s\n",
              static_cast<long long>(counts.total()), static_cast<long long>(counts.random),
              static_cast<long long>(counts.mutated), static_cast<long long>(counts.turn_round_trips),
              static_cast<long long>(counts.prompt_round_trips), s);
  if (!HasFailure()) {
    EXPECT_GE(counts.total(), 100000);
  }
}

}  // namespace
}  // namespace mxs::harmony
