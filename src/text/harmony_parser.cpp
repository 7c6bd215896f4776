// Harmony output parser (token state machine, header parsing, UTF-8-safe content deltas) and the mapper to
// OpenAI chat fields. Repairs ("slips", each counted once in ParserStats::slips):
//   * ordinary text, <|channel|> or <|constrain|> where <|start|> was expected -> a header whose <|start|>
//     was missing; <|message|> there -> a message with an empty header;
//   * <|start|> inside a header -> the header so far is dropped, a new one begins;
//   * <|end|>, <|return|>, <|call|>, <|endoftext|> inside a header -> the header is dropped (no body came);
//   * <|start|> inside content -> the message ends (kInterrupted), a new header begins; <|channel|> inside
//     content -> the same, the new header keeping the author (the model skipped "<|end|><|start|>assistant");
//   * <|message|>, <|constrain|>, reserved and unknown ids inside content -> ignored;
//   * <|endoftext|> ending a message; a header without channel, author or with words it cannot place;
//     a second <|channel|> or recipient or content type in one header.
#include "text/harmony_parser.h"

#include "text/special_tokens.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace mxs::harmony {

namespace {

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

std::string lossy(std::string_view bytes) {
  std::string out;
  utf8::append_lossy(out, bytes);
  return out;
}

struct Word {
  std::string text;
  bool constrained = false;  // directly after <|constrain|>
};

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

}  // namespace

// ---- StreamParser ---------------------------------------------------------------------------------------

StreamParser::StreamParser(const Tokenizer& tokenizer, std::string initial_author)
    : tok_(tokenizer), header_author_(std::move(initial_author)) {}

void StreamParser::begin_header(std::string author, int32_t marker) {
  state_ = State::kHeader;
  header_author_ = std::move(author);
  header_.clear();
  header_size_ = 0;
  if (marker == tok::kChannel) header_.push_back({HeaderPart::Kind::kChannel, {}});
  if (marker == tok::kConstrain) header_.push_back({HeaderPart::Kind::kConstrain, {}});
}

void StreamParser::header_text(std::string_view bytes) {
  header_size_ += static_cast<int64_t>(bytes.size());
  if (header_.empty() || header_.back().kind != HeaderPart::Kind::kText)
    header_.push_back({HeaderPart::Kind::kText, {}});
  header_.back().bytes.append(bytes);
}

void StreamParser::drop_header() {
  stats_.dropped_bytes += header_size_;
  header_.clear();
  header_size_ = 0;
  state_ = State::kExpectStart;
}

void StreamParser::note_stop(int32_t id) {
  if (!stop_token_) stop_token_ = id;
}

// Header grammar (§4.2): author [" to=" recipient] ["<|channel|>" channel] [" " content type], where the
// recipient may also follow the channel, and the content type may be "<|constrain|>json". We collect the
// channel value (the text right after <|channel|> up to whitespace or '<'), then whitespace-split words.
Header StreamParser::parse_header() {
  Header h;
  std::vector<Word> words;
  bool channel_value_next = false;  // the previous part was <|channel|>
  bool glue_to_constrain = false;   // the previous part was <|constrain|>
  for (const HeaderPart& part : header_) {
    if (part.kind == HeaderPart::Kind::kChannel) {
      if (channel_value_next || !h.channel.empty()) ++stats_.slips;  // a second <|channel|>
      channel_value_next = true;
      glue_to_constrain = false;
      continue;
    }
    if (part.kind == HeaderPart::Kind::kConstrain) {
      words.push_back({"", true});
      glue_to_constrain = true;
      channel_value_next = false;
      continue;
    }
    const std::string text = lossy(part.bytes);
    size_t i = 0;
    if (channel_value_next) {
      while (i < text.size() && !is_ascii_space(text[i]) && text[i] != '<') ++i;
      if (h.channel.empty()) h.channel = text.substr(0, i);
      else words.push_back({text.substr(0, i), false});
      channel_value_next = false;
    }
    bool first = true;
    while (i < text.size()) {
      if (is_ascii_space(text[i])) {
        ++i;
        first = false;
        continue;
      }
      size_t j = i;
      while (j < text.size() && !is_ascii_space(text[j])) ++j;
      if (first && glue_to_constrain && i == 0) words.back().text += text.substr(i, j - i);
      else words.push_back({text.substr(i, j - i), false});
      first = false;
      i = j;
    }
    glue_to_constrain = false;
  }
  if (h.channel.empty()) ++stats_.slips;  // "Channel must be included for every message."

  // Author: known from the prompt / the interrupted message, else the first word.
  h.author = header_author_;
  size_t w = 0;
  if (!words.empty() && !words[0].constrained && !starts_with(words[0].text, "to=")) {
    if (h.author.empty()) h.author = words[w++].text;
    else if (words[0].text == h.author) ++w;
  }
  if (h.author.empty()) {
    h.author = "assistant";  // the model is the one writing; a header that names nobody is its own
    ++stats_.slips;
  }

  std::vector<std::string> bare;
  for (; w < words.size(); ++w) {
    Word& word = words[w];
    if (word.constrained) {
      if (!h.content_type.empty()) ++stats_.slips;
      h.content_type = std::move(word.text);
      h.constrained = true;
    } else if (starts_with(word.text, "to=")) {
      if (!h.recipient.empty()) ++stats_.slips;
      h.recipient = word.text.substr(3);
    } else {
      bare.push_back(std::move(word.text));
    }
  }
  // Bare words: "functions.x" is a recipient written without "to="; otherwise the last is a content type.
  for (auto it = bare.begin(); it != bare.end();) {
    if (h.recipient.empty() && starts_with(*it, "functions.")) {
      h.recipient = std::move(*it);
      it = bare.erase(it);
    } else {
      ++it;
    }
  }
  if (h.content_type.empty() && !bare.empty()) {
    h.content_type = std::move(bare.back());
    bare.pop_back();
  }
  stats_.slips += static_cast<int64_t>(bare.size());  // words with no place in a header
  return h;
}

void StreamParser::open_content(std::vector<Event>& events) {
  current_ = parse_header();
  stats_.header_bytes += header_size_;
  header_.clear();
  header_size_ = 0;
  pending_.clear();
  state_ = State::kContent;
  events.push_back({Event::Kind::kMessageStart, current_, {}, EndReason::kEnd});
}

void StreamParser::close_content(EndReason reason, std::vector<Event>& events) {
  if (!pending_.empty()) {
    events.push_back({Event::Kind::kText, {}, lossy(pending_), EndReason::kEnd});
    pending_.clear();
  }
  events.push_back({Event::Kind::kMessageEnd, {}, {}, reason});
  state_ = State::kExpectStart;
}

void StreamParser::feed(int32_t id, std::vector<Event>& events) {
  const bool known = id >= 0 && id < tok_.vocab_size();
  if (known && !tok_.is_special(id)) {
    const std::string_view bytes = tok_.token_bytes(id);
    switch (state_) {
      case State::kContent: {
        stats_.content_bytes += static_cast<int64_t>(bytes.size());
        pending_.append(bytes);
        const size_t n = utf8::complete_prefix_length(pending_);
        if (n > 0) {
          events.push_back({Event::Kind::kText, {}, lossy(std::string_view(pending_).substr(0, n)), EndReason::kEnd});
          pending_.erase(0, n);
        }
        return;
      }
      case State::kExpectStart:
        ++stats_.slips;  // text where <|start|> belongs: read it as a header whose <|start|> was lost
        begin_header("", -1);
        [[fallthrough]];
      case State::kHeader:
        header_text(bytes);
        return;
    }
    return;
  }

  switch (id) {
    case tok::kStart:
      if (state_ == State::kContent) {
        ++stats_.slips;
        close_content(EndReason::kInterrupted, events);
      } else if (state_ == State::kHeader) {
        ++stats_.slips;
        drop_header();
      }
      begin_header("", -1);
      return;

    case tok::kMessage:
      if (state_ == State::kContent) {
        ++stats_.slips;
        return;
      }
      if (state_ == State::kExpectStart) {
        ++stats_.slips;
        begin_header("assistant", -1);
      }
      open_content(events);
      return;

    case tok::kChannel:
    case tok::kConstrain:
      if (state_ == State::kHeader) {
        header_.push_back({id == tok::kChannel ? HeaderPart::Kind::kChannel : HeaderPart::Kind::kConstrain, {}});
        return;
      }
      ++stats_.slips;
      if (state_ == State::kContent) {
        if (id == tok::kConstrain) return;
        const std::string author = current_.author;
        close_content(EndReason::kInterrupted, events);
        begin_header(author, id);
        return;
      }
      begin_header("assistant", id);  // <|start|>assistant skipped
      return;

    case tok::kEnd:
    case tok::kReturn:
    case tok::kCall:
    case tok::kEndOfText: {
      if (id != tok::kEnd) note_stop(id);
      if (state_ == State::kContent) {
        if (id == tok::kEndOfText) ++stats_.slips;
        const EndReason reason = id == tok::kEnd      ? EndReason::kEnd
                                 : id == tok::kReturn ? EndReason::kReturn
                                 : id == tok::kCall   ? EndReason::kCall
                                                      : EndReason::kEndOfText;
        close_content(reason, events);
      } else if (state_ == State::kHeader) {
        ++stats_.slips;
        drop_header();
      } else if (id != tok::kEndOfText) {
        ++stats_.slips;  // an end marker with no message open (<|endoftext|> between messages is fine)
      }
      return;
    }

    default:
      ++stats_.slips;  // reserved, <|startoftext|>, <|endofprompt|>, ids outside the vocabulary
      return;
  }
}

void StreamParser::finish(std::vector<Event>& events) {
  if (state_ == State::kContent) close_content(EndReason::kTruncated, events);
  else if (state_ == State::kHeader) drop_header();
}

// ---- ChatOutputParser -----------------------------------------------------------------------------------

std::string_view finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kToolCalls: return "tool_calls";
    case FinishReason::kLength: return "length";
  }
  return "";
}

ChatOutputParser::ChatOutputParser(const Tokenizer& tokenizer, uint64_t call_id_seed)
    : parser_(tokenizer), rng_(call_id_seed ? call_id_seed : std::random_device{}()) {}

std::string ChatOutputParser::new_call_id() {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = "call_";
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng_() % (sizeof(kAlphabet) - 1)];
  return id;
}

void ChatOutputParser::apply(const std::vector<Event>& events, ChatDelta& delta) {
  for (const Event& e : events) {
    switch (e.kind) {
      case Event::Kind::kMessageStart: {
        const Header& h = e.header;
        if (h.author != "assistant") {
          route_ = Route::kDiscard;  // the model wrote as someone else (e.g. a tool's answer)
          ++result_.slips;
        } else if (!h.recipient.empty()) {
          const std::string name = starts_with(h.recipient, "functions.") ? h.recipient.substr(10) : "";
          if (name.empty()) {
            route_ = Route::kDiscard;  // a recipient we offered nothing for (browser.*, python, ...)
            ++result_.slips;
          } else {
            route_ = Route::kToolCall;
            result_.tool_calls.push_back({new_call_id(), name, ""});
            delta.tool_calls.push_back(
                {static_cast<int>(result_.tool_calls.size()) - 1, result_.tool_calls.back().id, name, ""});
          }
        } else if (h.channel == "final" || h.channel == "commentary" || h.channel.empty()) {
          route_ = Route::kContent;  // empty channel: already counted by the parser
        } else if (h.channel == "analysis") {
          route_ = Route::kReasoning;
        } else {
          route_ = Route::kReasoning;
          ++result_.slips;
        }
        break;
      }
      case Event::Kind::kText:
        switch (route_) {
          case Route::kContent:
            result_.content += e.text;
            delta.content += e.text;
            break;
          case Route::kReasoning:
            result_.reasoning += e.text;
            delta.reasoning += e.text;
            break;
          case Route::kToolCall: {
            const int index = static_cast<int>(result_.tool_calls.size()) - 1;
            result_.tool_calls.back().arguments += e.text;
            if (delta.tool_calls.empty() || delta.tool_calls.back().index != index)
              delta.tool_calls.push_back({index, "", "", ""});
            delta.tool_calls.back().arguments += e.text;
            break;
          }
          case Route::kDiscard:
            result_.discarded += e.text;
            break;
        }
        break;
      case Event::Kind::kMessageEnd:
        route_ = Route::kDiscard;
        break;
    }
  }
}

ChatDelta ChatOutputParser::feed(int32_t id) {
  ChatDelta delta;
  events_.clear();
  const int64_t parser_slips = parser_.stats().slips;
  parser_.feed(id, events_);
  result_.slips += parser_.stats().slips - parser_slips;
  apply(events_, delta);
  result_.parser = parser_.stats();
  return delta;
}

ChatDelta ChatOutputParser::finish(bool length_limited) {
  ChatDelta delta;
  events_.clear();
  const int64_t parser_slips = parser_.stats().slips;
  parser_.finish(events_);
  result_.slips += parser_.stats().slips - parser_slips;
  apply(events_, delta);
  result_.parser = parser_.stats();
  result_.finish_reason = length_limited               ? FinishReason::kLength
                          : !result_.tool_calls.empty() ? FinishReason::kToolCalls
                                                        : FinishReason::kStop;
  return delta;
}

ChatResult parse_chat_output(const Tokenizer& tokenizer, std::span<const int32_t> ids, bool length_limited,
                             uint64_t call_id_seed) {
  ChatOutputParser parser(tokenizer, call_id_seed);
  for (int32_t id : ids) parser.feed(id);
  parser.finish(length_limited);
  return parser.result();
}

}  // namespace mxs::harmony
