// The GPT-2 "byte-level" alphabet of HF tokenizer.json files: every byte 0..255 is spelled as one printable
// code point (bytes_to_unicode), so vocab and merges are strings of those. We undo it once at load.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace mxs::text {

// The code point that spells byte b (e.g. 0x20 -> U+0120 'Ġ', 'a' -> 'a').
char32_t byte_to_code_point(unsigned char b);

// Decodes a UTF-8 string of byte-level code points to raw bytes; nullopt when it holds a code point
// outside the alphabet or is not valid UTF-8.
std::optional<std::string> byte_level_to_bytes(std::string_view spelled);

}  // namespace mxs::text
