// API-key check for /v1/*: `Authorization: Bearer KEY` compared in constant time (the time taken does not
// depend on how many leading bytes match, nor on the key's length beyond the presented header's length).
#pragma once
#include <string>
#include <string_view>

namespace mxs::server {

// True when a and b are equal; examines every byte of both regardless of where they differ.
bool constant_time_equal(std::string_view a, std::string_view b);

class ApiKeyAuth {
 public:
  explicit ApiKeyAuth(std::string key) : key_(std::move(key)) {}
  bool enabled() const { return !key_.empty(); }
  // `authorization` is the raw header value ("" when absent). Scheme match is case-insensitive.
  bool allows(std::string_view authorization) const;

 private:
  std::string key_;
};

}  // namespace mxs::server
