// The Responses API's stored responses (`store`, `previous_response_id`, GET / DELETE /v1/responses/{id}): each
// response object with the conversation that produced it (its input items, the stored conversation of its
// previous_response_id first, then its output items), in memory, the least recently used dropped beyond the capacity
// (`mxserve serve --responses-store`). Thread-safe.
#pragma once
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace mxs::server {

class ResponseStore {
 public:
  explicit ResponseStore(size_t capacity) : capacity_(capacity) {}

  struct Entry {
    nlohmann::json response;               // the response object as answered
    nlohmann::ordered_json conversation;   // input items then output items: what a follow-up continues
  };
  size_t capacity() const { return capacity_; }
  void put(const std::string& id, Entry entry);
  std::optional<Entry> get(const std::string& id);  // (a hit counts as a use)
  bool erase(const std::string& id);
  size_t size() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::list<std::string> order_;  // most recently used first
  std::unordered_map<std::string, std::pair<Entry, std::list<std::string>::iterator>> entries_;
};

}  // namespace mxs::server
