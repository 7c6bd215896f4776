// o200k_harmony special token ids (gpt-oss-spec.md §4.1).
#pragma once
#include <cstdint>

namespace mxs::tok {

constexpr int32_t kStartOfText = 199998;  // <|startoftext|> (never added automatically)
constexpr int32_t kEndOfText = 199999;    // <|endoftext|>: stop
constexpr int32_t kReturn = 200002;       // <|return|>: end of the final answer, stop
constexpr int32_t kConstrain = 200003;    // <|constrain|>
constexpr int32_t kChannel = 200005;      // <|channel|>
constexpr int32_t kStart = 200006;        // <|start|>
constexpr int32_t kEnd = 200007;          // <|end|>: message end, NOT a stop token
constexpr int32_t kMessage = 200008;      // <|message|>
constexpr int32_t kCall = 200012;         // <|call|>: tool call end, stop
constexpr int32_t kEndOfPrompt = 200018;  // <|endofprompt|> in HF

inline bool is_stop_token(int32_t id) { return id == kReturn || id == kCall || id == kEndOfText; }

}  // namespace mxs::tok
