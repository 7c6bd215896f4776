// UTF-8 validation and lossy conversion (Unicode 15 §3.9 table 3-7 well-formed byte sequences).
#include "text/utf8.h"

#include <cstdint>

namespace mxs::utf8 {

namespace {

// Allowed range of the second byte for a lead byte (table 3-7); the third and fourth are always 80..BF.
struct LeadInfo {
  uint8_t length;  // 0: never valid as a lead byte
  uint8_t lo, hi;  // second-byte range
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};  // continuation bytes and overlong C0/C1
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};  // no overlongs
  if (b == 0xED) return {3, 0x80, 0x9F};  // no surrogates
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};  // no overlongs
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};  // <= U+10FFFF
  return {0, 0, 0};
}

}  // namespace

size_t sequence_length(std::string_view s, size_t* maximal_subpart, bool* truncated) {
  if (truncated) *truncated = false;
  if (maximal_subpart) *maximal_subpart = 1;
  if (s.empty()) return 0;
  const LeadInfo info = lead_info(static_cast<uint8_t>(s[0]));
  if (info.length == 0) return 0;
  if (info.length == 1) return 1;
  for (size_t i = 1; i < info.length; ++i) {
    if (i >= s.size()) {
      if (truncated) *truncated = true;
      if (maximal_subpart) *maximal_subpart = i;
      return 0;
    }
    const uint8_t c = static_cast<uint8_t>(s[i]);
    const bool ok = i == 1 ? (c >= info.lo && c <= info.hi) : (c >= 0x80 && c <= 0xBF);
    if (!ok) {
      if (maximal_subpart) *maximal_subpart = i;
      return 0;
    }
  }
  return info.length;
}

void append_lossy(std::string& out, std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    // ASCII run fast path.
    size_t j = i;
    while (j < bytes.size() && static_cast<uint8_t>(bytes[j]) < 0x80) ++j;
    out.append(bytes.data() + i, j - i);
    i = j;
    if (i == bytes.size()) break;
    size_t bad = 1;
    const size_t n = sequence_length(bytes.substr(i), &bad);
    if (n) {
      out.append(bytes.data() + i, n);
      i += n;
    } else {
      out.append(kReplacement);
      i += bad;
    }
  }
}

size_t complete_prefix_length(std::string_view bytes) {
  // Only the last 3 bytes can start an incomplete sequence; scan back to the last lead byte among them.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t start = n - back;
    const uint8_t b = static_cast<uint8_t>(bytes[start]);
    if (b >= 0x80 && b < 0xC0) continue;  // continuation byte: keep looking for its lead
    bool truncated = false;
    sequence_length(bytes.substr(start), nullptr, &truncated);
    return truncated ? start : n;
  }
  return n;
}

bool is_valid(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const size_t len = sequence_length(bytes.substr(i));
    if (len == 0) return false;
    i += len;
  }
  return true;
}

}  // namespace mxs::utf8
