// UTF-8 helpers for the tokenizer: validation with the Unicode "maximal subpart" replacement policy (the
// same output as Rust's String::from_utf8_lossy, which HF tokenizers' decoder uses) and streaming splits.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mxs::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the well-formed sequence starting at s[0] (1..4), or 0 when s[0..] is not well formed. When
// it is not, *maximal_subpart gets how many bytes form the longest prefix that could still have become
// valid (>= 1: those bytes are replaced by one U+FFFD) and *truncated whether the input simply ended
// inside an otherwise valid prefix.
size_t sequence_length(std::string_view s, size_t* maximal_subpart = nullptr, bool* truncated = nullptr);

// Appends `bytes` to `out`, each maximal ill-formed subpart replaced by U+FFFD.
void append_lossy(std::string& out, std::string_view bytes);

// For streaming: the length of the longest prefix of `bytes` that can be emitted now, i.e. everything
// except a trailing incomplete (but so far valid) sequence of at most 3 bytes.
size_t complete_prefix_length(std::string_view bytes);

bool is_valid(std::string_view bytes);

}  // namespace mxs::utf8
