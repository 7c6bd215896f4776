// The HTTP side of `mxserve bench serve`: a blocking HTTP/1.1 client (Boost.Beast) that sends one streaming
// OpenAI request and timestamps its SSE chunks, and the driver that runs a batch of requests at a fixed
// concurrency (optionally Poisson arrivals at a request rate), each bounded by a timeout.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "server/bench_metrics.h"

namespace mxs::server::bench {

struct Target {
  std::string host = "127.0.0.1";
  std::string port = "8000";
  std::string base_path;  // path prefix from the URL, "" or e.g. "/proxy" (no trailing slash)
  std::string api_key;    // "" = no Authorization header
};
// "http://host:port[/prefix]"; throws mxs::Error for anything else (https is not supported).
Target parse_url(const std::string& url);

// Splits an SSE byte stream into the payloads of its `data:` lines, one per event. Accepts \n and \r\n.
class SseSplitter {
 public:
  // Appends bytes; returns the data payloads of the events completed by them.
  std::vector<std::string> feed(std::string_view bytes);

 private:
  std::string buffer_;
};

// What one streamed JSON chunk carries, for the timeline.
struct ChunkInfo {
  bool output = false;  // generated text of any kind: reasoning, answer, tool call, completion text
  bool answer = false;  // answer text (content / tool call / completion text), not reasoning
  bool has_usage = false;
  int prompt_tokens = 0, completion_tokens = 0, reasoning_tokens = 0;
  std::string error;  // an in-band {"error": {...}} event's message
};
ChunkInfo classify_chunk(const nlohmann::json& chunk);

// A plain request (e.g. GET /v1/models); throws mxs::Error on a transport error.
struct SimpleResponse {
  int status = 0;
  std::string body;
};
SimpleResponse http_request(const Target& target, const std::string& method, const std::string& path,
                            const std::string& body, double timeout_s);

struct LoadOptions {
  std::string path;           // "/v1/chat/completions" or "/v1/completions" (base_path is prepended)
  int concurrency = 1;        // requests in flight at most
  double request_rate = 0;    // requests/s with Poisson arrivals; 0 = send as fast as concurrency allows
  double timeout_s = 300;     // per request: a request still running then is cut off and counted failed
  uint64_t seed = 0;          // arrival times
};
// Sends every body (a streaming request) and returns one record per body, in order.
std::vector<RequestRecord> run_load(const Target& target, const std::vector<std::string>& bodies,
                                    const LoadOptions& options);

}  // namespace mxs::server::bench
