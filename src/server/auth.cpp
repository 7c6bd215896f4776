// Constant-time API-key comparison (see auth.h).
#include "server/auth.h"

#include <cctype>
#include <cstdint>

namespace mxs::server {

bool constant_time_equal(std::string_view a, std::string_view b) {
  // Fold the length difference into the accumulator and walk the longer input in full, reading the
  // shorter one modulo its length, so neither a prefix match nor a length mismatch returns early.
  const size_t n = a.size() > b.size() ? a.size() : b.size();
  uint64_t diff = uint64_t(a.size() ^ b.size());
  for (size_t i = 0; i < n; ++i) {
    const uint8_t x = a.empty() ? 0 : uint8_t(a[i % a.size()]);
    const uint8_t y = b.empty() ? 0 : uint8_t(b[i % b.size()]);
    diff |= uint64_t(x ^ y);
  }
  // volatile read keeps the compiler from turning the loop into an early-exit memcmp.
  volatile uint64_t sink = diff;
  return sink == 0;
}

bool ApiKeyAuth::allows(std::string_view authorization) const {
  if (!enabled()) return true;
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() < kScheme.size()) return false;
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(uint8_t(authorization[i])) != kScheme[i]) return false;
  }
  std::string_view token = authorization.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
  return constant_time_equal(token, key_);
}

}  // namespace mxs::server
