// Errors: one exception type for everything a user can cause (bad checkpoint, bad flag, bad request).
// The message says what is wrong, where (file, tensor, parameter) and, when known, what to do instead.
#pragma once
#include <stdexcept>
#include <string>

namespace mxs {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// MXS_CHECK(cond, msg): throws mxs::Error(msg) when cond is false. For invariants that user input can
// break; programming errors inside one layer use assert().
#define MXS_CHECK(cond, msg)                         \
  do {                                               \
    if (!(cond)) throw ::mxs::Error(std::string(msg)); \
  } while (0)

// strfmt: printf-style formatting into a std::string (no fmt dependency; see docs/ARCHITECTURE.md).
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace mxs
