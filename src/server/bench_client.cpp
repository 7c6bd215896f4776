// Blocking Beast client for `mxserve bench serve`: one thread and one keep-alive connection per concurrency
// slot, each sending its requests back to back (or at Poisson arrival times); a watchdog thread shuts down
// the socket of any request that passes its deadline, which makes the blocked read return.
#include "server/bench_client.h"

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "common/error.h"
#include "common/timer.h"

namespace mxs::server::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

// Per-slot socket + deadline, polled by one watchdog thread (every 20 ms).
class Watchdog {
 public:
  explicit Watchdog(int slots) : slots_(size_t(slots)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        const double now = now_seconds();
        for (Slot& s : slots_) {
          std::lock_guard<std::mutex> lock(s.mu);
          if (s.fd >= 0 && now > s.deadline && !s.fired) {
            ::shutdown(s.fd, SHUT_RDWR);
            s.fired = true;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  ~Watchdog() {
    stop_ = true;
    thread_.join();
  }
  void arm(int slot, int fd, double deadline) {
    Slot& s = slots_[size_t(slot)];
    std::lock_guard<std::mutex> lock(s.mu);
    s.fd = fd, s.deadline = deadline, s.fired = false;
  }
  // Returns whether the deadline cut the request off.
  bool disarm(int slot) {
    Slot& s = slots_[size_t(slot)];
    std::lock_guard<std::mutex> lock(s.mu);
    s.fd = -1;
    return s.fired;
  }

 private:
  struct Slot {
    std::mutex mu;
    int fd = -1;
    double deadline = 0;
    bool fired = false;
  };
  std::vector<Slot> slots_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

http::request<http::string_body> make_request(const Target& t, const std::string& method, const std::string& path,
                                              const std::string& body) {
  http::request<http::string_body> req{http::string_to_verb(method), t.base_path + path, 11};
  req.set(http::field::host, t.host + ":" + t.port);
  req.set(http::field::user_agent, "mxserve-bench");
  if (!t.api_key.empty()) req.set(http::field::authorization, "Bearer " + t.api_key);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  return req;
}

// An error body's OpenAI message, else the body itself (shortened).
std::string error_message(const std::string& body) {
  try {
    const json j = json::parse(body);
    if (j.contains("error") && j["error"].contains("message")) return j["error"]["message"].get<std::string>();
  } catch (const std::exception&) {
  }
  return body.substr(0, 200);
}

// One keep-alive connection per concurrency slot, as HTTP clients pool them: requests after the first skip the
// TCP handshake (which would otherwise land in every TTFT), and a connection the server closed is replaced.
struct SlotConnection {
  asio::io_context ioc;
  beast::tcp_stream stream{ioc};
  beast::flat_buffer buffer;
  bool open = false;

  void close() {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
    buffer.clear();
    open = false;
  }
};

// One streaming request on the slot's connection; fills `r` (times are now_seconds()).
void stream_one(const Target& t, const std::string& path, const std::string& body, int slot, double timeout_s,
                Watchdog& watchdog, SlotConnection& conn, RequestRecord& r) {
  r.start = now_seconds();
  for (int attempt = 0;; ++attempt) {
    const bool reused = conn.open;
    try {
      if (!conn.open) {
        tcp::resolver resolver(conn.ioc);
        conn.stream.connect(resolver.resolve(t.host, t.port));
        conn.open = true;
      }
      watchdog.arm(slot, conn.stream.socket().native_handle(), r.start + timeout_s);
      http::write(conn.stream, make_request(t, "POST", path, body));
      http::response_parser<http::buffer_body> parser;
      parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      http::read_header(conn.stream, conn.buffer, parser);
      r.http_status = int(parser.get().result_int());
      SseSplitter sse;
      std::string error_body;
      bool done = false, usage_seen = false;
      int chunks = 0;
      char tmp[16384];
      while (!parser.is_done()) {
        parser.get().body().data = tmp;
        parser.get().body().size = sizeof(tmp);
        beast::error_code ec;
        http::read_some(conn.stream, conn.buffer, parser, ec);  // returns as soon as some body arrived
        if (ec && ec != http::error::need_buffer) throw beast::system_error(ec);
        const double now = now_seconds();
        const std::string_view got(tmp, sizeof(tmp) - parser.get().body().size);
        if (r.http_status != 200) {
          error_body.append(got);
          continue;
        }
        for (const std::string& data : sse.feed(got)) {
          if (data == "[DONE]") {
            done = true;
            continue;
          }
          const ChunkInfo c = classify_chunk(json::parse(data));
          if (!c.error.empty()) r.error = "in-band error: " + c.error;
          if (c.output) {
            r.chunk_times.push_back(now);
            ++chunks;
          }
          if (c.answer && r.first_answer < 0) r.first_answer = now;
          if (c.has_usage) {
            usage_seen = true;
            r.prompt_tokens = c.prompt_tokens;
            r.output_tokens = c.completion_tokens;
            r.reasoning_tokens = c.reasoning_tokens;
          }
        }
      }
      r.end = now_seconds();
      const bool timed_out = watchdog.disarm(slot);
      if (timed_out || !parser.get().keep_alive()) conn.close();
      if (timed_out) {
        r.error = strfmt("timed out after %.1f s", timeout_s);
      } else if (r.http_status != 200) {
        r.error = error_message(error_body);
      } else if (r.error.empty() && !done) {
        r.error = "stream ended without [DONE]";
      }
      if (!usage_seen) r.output_tokens = chunks;
      r.ok = r.error.empty();
      return;
    } catch (const std::exception& e) {
      const bool timed_out = watchdog.disarm(slot);
      conn.close();
      // A kept-alive connection the server had closed fails before any response: retry once on a new one.
      if (reused && !timed_out && r.http_status == 0 && attempt == 0) continue;
      r.end = now_seconds();
      r.ok = false;
      r.error = timed_out ? strfmt("timed out after %.1f s", timeout_s) : std::string(e.what());
      return;
    }
  }
}

}  // namespace

Target parse_url(const std::string& url) {
  const std::string scheme = "http://";
  MXS_CHECK(url.rfind(scheme, 0) == 0,
            strfmt("--url %s: expected http://HOST:PORT (https is not supported)", url.c_str()));
  std::string rest = url.substr(scheme.size());
  Target t;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    t.base_path = rest.substr(slash);
    while (!t.base_path.empty() && t.base_path.back() == '/') t.base_path.pop_back();
    // "http://h:p/v1" is how OpenAI clients spell the base URL; the endpoints already start with /v1.
    if (t.base_path.size() >= 3 && t.base_path.compare(t.base_path.size() - 3, 3, "/v1") == 0)
      t.base_path.resize(t.base_path.size() - 3);
    rest = rest.substr(0, slash);
  }
  const size_t colon = rest.rfind(':');
  if (colon == std::string::npos) {
    t.host = rest;
    t.port = "80";
  } else {
    t.host = rest.substr(0, colon);
    t.port = rest.substr(colon + 1);
  }
  MXS_CHECK(!t.host.empty() && !t.port.empty() && t.port.find_first_not_of("0123456789") == std::string::npos,
            strfmt("--url %s: expected http://HOST:PORT", url.c_str()));
  return t;
}

std::vector<std::string> SseSplitter::feed(std::string_view bytes) {
  buffer_.append(bytes);
  std::vector<std::string> out;
  while (true) {
    // An event ends at a blank line.
    size_t end = buffer_.find("\n\n"), skip = 2;
    const size_t crlf = buffer_.find("\r\n\r\n");
    if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) end = crlf, skip = 4;
    if (end == std::string::npos) break;
    const std::string event = buffer_.substr(0, end);
    buffer_.erase(0, end + skip);
    std::string data;
    bool any = false;
    size_t pos = 0;
    while (pos <= event.size()) {
      size_t nl = event.find('\n', pos);
      if (nl == std::string::npos) nl = event.size();
      std::string line = event.substr(pos, nl - pos);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.rfind("data:", 0) == 0) {
        std::string value = line.substr(5);
        if (!value.empty() && value[0] == ' ') value.erase(0, 1);
        if (any) data += '\n';
        data += value;
        any = true;
      }
      pos = nl + 1;
    }
    if (any) out.push_back(std::move(data));
  }
  return out;
}

ChunkInfo classify_chunk(const json& chunk) {
  ChunkInfo c;
  if (!chunk.is_object()) return c;
  if (auto e = chunk.find("error"); e != chunk.end()) {
    c.error = e->is_object() && e->contains("message") && (*e)["message"].is_string() ? (*e)["message"].get<std::string>()
                                                                                      : e->dump();
    return c;
  }
  auto nonempty = [](const json& obj, const char* key) {
    auto it = obj.find(key);
    return it != obj.end() && ((it->is_string() && !it->get_ref<const std::string&>().empty()) ||
                               (it->is_array() && !it->empty()));
  };
  if (auto choices = chunk.find("choices"); choices != chunk.end() && choices->is_array()) {
    for (const json& ch : *choices) {
      if (auto d = ch.find("delta"); d != ch.end() && d->is_object()) {
        const bool reasoning = nonempty(*d, "reasoning_content") || nonempty(*d, "reasoning");
        const bool answer = nonempty(*d, "content") || nonempty(*d, "tool_calls");
        c.output |= reasoning || answer;
        c.answer |= answer;
      }
      if (nonempty(ch, "text")) c.output = c.answer = true;
    }
  }
  if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
    c.has_usage = true;
    c.prompt_tokens = u->value("prompt_tokens", 0);
    c.completion_tokens = u->value("completion_tokens", 0);
    if (auto d = u->find("completion_tokens_details"); d != u->end() && d->is_object())
      c.reasoning_tokens = d->value("reasoning_tokens", 0);
  }
  return c;
}

SimpleResponse http_request(const Target& t, const std::string& method, const std::string& path,
                            const std::string& body, double timeout_s) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  Watchdog watchdog(1);
  try {
    tcp::resolver resolver(ioc);
    stream.connect(resolver.resolve(t.host, t.port));
    watchdog.arm(0, stream.socket().native_handle(), now_seconds() + timeout_s);
    http::write(stream, make_request(t, method, path, body));
    beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    watchdog.disarm(0);
    return {int(res.result_int()), res.body()};
  } catch (const std::exception& e) {
    throw Error(strfmt("%s http://%s:%s%s%s: %s", method.c_str(), t.host.c_str(), t.port.c_str(),
                       t.base_path.c_str(), path.c_str(), watchdog.disarm(0) ? "timed out" : e.what()));
  }
}

std::vector<RequestRecord> run_load(const Target& target, const std::vector<std::string>& bodies,
                                    const LoadOptions& o) {
  const int n = int(bodies.size());
  std::vector<RequestRecord> records(bodies.size());
  // Arrival offsets (s): Poisson process at request_rate, else all at 0 (the slots pace themselves).
  std::vector<double> arrival(bodies.size(), 0.0);
  if (o.request_rate > 0) {
    std::mt19937_64 rng(o.seed);
    std::exponential_distribution<double> gap(o.request_rate);
    double t = 0;
    for (double& a : arrival) a = (t += gap(rng));
    const double first = arrival.empty() ? 0 : arrival[0];
    for (double& a : arrival) a -= first;  // the first request goes at once
  }
  const int slots = std::max(1, std::min(o.concurrency, n));
  Watchdog watchdog(slots);
  std::atomic<int> next{0};
  const double t0 = now_seconds();
  std::vector<std::thread> threads;
  for (int s = 0; s < slots; ++s) {
    threads.emplace_back([&, s] {
      SlotConnection conn;
      for (int i; (i = next.fetch_add(1)) < n;) {
        const double wait = t0 + arrival[size_t(i)] - now_seconds();
        if (wait > 0) std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        stream_one(target, o.path, bodies[size_t(i)], s, o.timeout_s, watchdog, conn, records[size_t(i)]);
      }
      conn.close();
    });
  }
  for (auto& th : threads) th.join();
  return records;
}

}  // namespace mxs::server::bench
