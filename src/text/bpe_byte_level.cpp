// bytes_to_unicode and its inverse. Printable Latin-1 bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF)
// spell themselves; the other 68 bytes get U+0100 + n in byte order.
#include "text/bpe_byte_level.h"

#include <array>
#include <cstdint>

namespace mxs::text {

namespace {

bool spells_itself(unsigned b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

struct Alphabet {
  std::array<char32_t, 256> to_cp{};
  std::array<int16_t, 0x144> to_byte{};  // code point -> byte, -1 when not in the alphabet; all cps < 0x144
  Alphabet() {
    to_byte.fill(-1);
    unsigned next = 0x100;
    for (unsigned b = 0; b < 256; ++b) {
      to_cp[b] = spells_itself(b) ? b : next++;
      to_byte[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

}  // namespace

char32_t byte_to_code_point(unsigned char b) { return alphabet().to_cp[b]; }

std::optional<std::string> byte_level_to_bytes(std::string_view spelled) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(spelled.size());
  for (size_t i = 0; i < spelled.size();) {
    const auto c0 = static_cast<uint8_t>(spelled[i]);
    char32_t cp;
    if (c0 < 0x80) {
      cp = c0;
      i += 1;
    } else if ((c0 & 0xE0) == 0xC0 && i + 1 < spelled.size() &&
               (static_cast<uint8_t>(spelled[i + 1]) & 0xC0) == 0x80) {  // the alphabet needs 2-byte forms only
      cp = (char32_t(c0 & 0x1F) << 6) | (static_cast<uint8_t>(spelled[i + 1]) & 0x3F);
      i += 2;
    } else {
      return std::nullopt;
    }
    if (cp >= a.to_byte.size() || a.to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(a.to_byte[cp]));
  }
  return out;
}

}  // namespace mxs::text
