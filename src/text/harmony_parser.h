// Streaming parser for harmony model output (gpt-oss-spec.md §4.8) and its mapping to the OpenAI chat
// surface (§5): token ids in -> message events -> content / reasoning / tool-call deltas + finish reason.
// Neither ever throws on model output: slips (malformed headers, misplaced special tokens, truncation) are
// repaired or dropped and counted; special tokens never appear as text in any output.
#pragma once
#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/harmony.h"

namespace mxs {
class Tokenizer;
}

namespace mxs::harmony {

// ---- message events -------------------------------------------------------------------------------------

// The parsed header of one message. Strings are valid UTF-8; content_type is "json" for " <|constrain|>json".
struct Header {
  std::string author;     // "assistant" (also assumed when a header names none), "user", "functions.x", ...
  std::string channel;    // "" when the header had none (a slip)
  std::string recipient;  // "" when none; "functions.NAME" for a call ("to=" stripped)
  std::string content_type;
  bool constrained = false;  // the content type came after <|constrain|>
};

enum class EndReason {
  kEnd,          // <|end|>
  kReturn,       // <|return|>: final answer done, generation over
  kCall,         // <|call|>: tool call done, generation over
  kEndOfText,    // <|endoftext|> (a slip inside a message, but it ends generation)
  kInterrupted,  // <|start|> or <|channel|> inside content: a new message began without <|end|> (slip)
  kTruncated,    // finish() while the message was open (max tokens, or generation stopped)
};

struct Event {
  enum class Kind { kMessageStart, kText, kMessageEnd } kind;
  Header header;            // kMessageStart
  std::string text;         // kText: whole UTF-8 characters (invalid bytes as U+FFFD)
  EndReason end = EndReason::kEnd;  // kMessageEnd
};

// Where every ordinary token's bytes went; header_bytes + content_bytes + dropped_bytes == the bytes of all
// ordinary tokens fed (the fuzz test checks it).
struct ParserStats {
  int64_t slips = 0;          // repairs made (see harmony_parser.cpp for the list)
  int64_t header_bytes = 0;   // bytes of headers that were parsed (at <|message|>)
  int64_t content_bytes = 0;  // bytes inside message bodies (kText events carry them, lossily decoded)
  int64_t dropped_bytes = 0;  // bytes of abandoned headers (no <|message|> came)
};

// States: ExpectStart -> Header (after <|start|>) -> Content (after <|message|>) -> ExpectStart (after an end
// token). Created in Header with the author known: the prompt ended with "<|start|>assistant".
class StreamParser {
 public:
  explicit StreamParser(const Tokenizer& tokenizer, std::string initial_author = "assistant");

  // Appends the events this token causes to `events`.
  void feed(int32_t id, std::vector<Event>& events);
  // End of the token stream: closes an open message (kTruncated, pending bytes flushed as U+FFFD) and drops
  // an unfinished header.
  void finish(std::vector<Event>& events);

  bool in_content() const { return state_ == State::kContent; }
  // The first <|return|>, <|call|> or <|endoftext|> seen (generation should have stopped there).
  std::optional<int32_t> stop_token() const { return stop_token_; }
  const ParserStats& stats() const { return stats_; }

 private:
  enum class State { kExpectStart, kHeader, kContent };
  // A header as received: ordinary text and the two markers that may appear in it.
  struct HeaderPart {
    enum class Kind { kText, kChannel, kConstrain } kind;
    std::string bytes;
  };

  void begin_header(std::string author, int32_t marker);
  void header_text(std::string_view bytes);
  void drop_header();
  Header parse_header();
  void open_content(std::vector<Event>& events);
  void close_content(EndReason reason, std::vector<Event>& events);
  void note_stop(int32_t id);

  const Tokenizer& tok_;
  State state_ = State::kHeader;
  std::string header_author_;            // known author ("" = read it from the header text)
  std::vector<HeaderPart> header_;
  int64_t header_size_ = 0;              // ordinary bytes in header_
  Header current_;                       // the open message (kContent)
  std::string pending_;                  // content bytes of an incomplete UTF-8 sequence
  std::optional<int32_t> stop_token_;
  ParserStats stats_;
};

// ---- OpenAI mapping -------------------------------------------------------------------------------------

enum class FinishReason { kNone, kStop, kToolCalls, kLength };
std::string_view finish_reason_name(FinishReason reason);  // "", "stop", "tool_calls", "length"

struct ToolCallDelta {
  int index = 0;          // position of the call in this choice's tool_calls
  std::string id;         // set on the call's first delta only
  std::string name;       // set on the call's first delta only
  std::string arguments;  // the next piece of the JSON arguments text
};

struct ChatDelta {
  std::string content;
  std::string reasoning;
  std::vector<ToolCallDelta> tool_calls;
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty(); }
};

struct ChatResult {
  std::string content;    // final answers and preambles (commentary without recipient)
  std::string reasoning;  // analysis
  std::vector<ToolCall> tool_calls;
  FinishReason finish_reason = FinishReason::kNone;  // set by finish()
  int64_t slips = 0;      // parser slips + messages the mapper could not place
  std::string discarded;  // text of messages not surfaced (other authors, unknown recipients); never sent
  ParserStats parser;     // byte accounting of the parser
};

// Routes messages: author other than assistant -> discarded; recipient "functions.NAME" (any channel) -> a
// tool call; another recipient -> discarded; channel final or commentary -> content; analysis -> reasoning;
// no channel -> content; an unknown channel -> reasoning (never risk leaking chain of thought into content).
// The slips counted here: discarded messages, missing or unknown channels.
class ChatOutputParser {
 public:
  // call_id_seed: 0 = random tool call ids ("call_" + 24 alphanumerics); other values make them reproducible.
  explicit ChatOutputParser(const Tokenizer& tokenizer, uint64_t call_id_seed = 0);

  ChatDelta feed(int32_t id);
  // End of generation: flushes whatever is open into its field. length_limited: stopped by max tokens ->
  // finish reason "length"; otherwise "tool_calls" if any call was made, else "stop".
  ChatDelta finish(bool length_limited);

  // A stop token (<|return|>, <|call|>, <|endoftext|>) has been seen: sampling should stop.
  bool done() const { return parser_.stop_token().has_value(); }
  const ChatResult& result() const { return result_; }
  const StreamParser& parser() const { return parser_; }

 private:
  enum class Route { kContent, kReasoning, kToolCall, kDiscard };
  void apply(const std::vector<Event>& events, ChatDelta& delta);
  std::string new_call_id();

  StreamParser parser_;
  std::mt19937_64 rng_;
  std::vector<Event> events_;  // scratch, reused per token
  Route route_ = Route::kDiscard;
  ChatResult result_;
};

// Non-streaming: the same mapper over all tokens, then finish(length_limited).
ChatResult parse_chat_output(const Tokenizer& tokenizer, std::span<const int32_t> ids, bool length_limited,
                             uint64_t call_id_seed = 0);

}  // namespace mxs::harmony
