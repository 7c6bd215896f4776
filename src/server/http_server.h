// HTTP/1.1 server on Boost.Beast/Asio: keep-alive, concurrent connections on a small io thread pool, request
// size limits, header/body/idle/write timeouts, streaming responses (chunked) with client-disconnect
// notification, and graceful shutdown. It knows nothing about OpenAI: one handler receives every request.
//
// Threading: each connection runs on its own strand; the handler is called on an io thread and must not
// block (hand long work to another thread and answer through the HttpExchange, from any thread).
// Lifetime: anything that may still hold an HttpExchange (e.g. the engine's token callbacks) must be
// stopped before the HttpServer is destroyed; shutdown() first makes every open exchange inert.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mxs::server {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", ... as sent
  std::string target;                                        // path + query, as sent
  std::string path;                                          // target without the query string
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string header(std::string_view lower_name) const;  // "" when absent
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers, e.g. Retry-After, Allow
  std::string body;
};

// The answer channel of one request. Exactly one of respond() or start_stream()...end_stream() should be
// used; calls after the first response, after end_stream() or after the client left are ignored.
// Thread-safe: calls may come from any thread (they are posted to the connection's strand, in order).
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void respond(HttpResponse response) = 0;
  // Sends the status line and headers with `Transfer-Encoding: chunked`.
  virtual void start_stream(int status, std::string content_type,
                            std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  // Queues `data` as one chunk. Returns false once the client is known to be gone (the data is dropped).
  virtual bool send_chunk(std::string data) = 0;
  virtual void end_stream() = 0;
  // `fn` runs once (on an io thread) if the client disconnects, stalls past the write timeout, lets too
  // much unsent data pile up, or the server force-closes, before the response is complete. Registering
  // after that already happened runs it right away (posted).
  virtual void on_disconnect(std::function<void()> fn) = 0;
  virtual bool client_gone() const = 0;
};

using HttpHandler = std::function<void(HttpRequest&& request, std::shared_ptr<HttpExchange> exchange)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0 picks a free port (see HttpServer::port())
  int io_threads = 2;
  size_t max_body_bytes = 16u << 20;    // larger bodies get 413
  size_t max_header_bytes = 64u << 10;  // larger headers get 431
  double header_timeout_s = 30.0;       // from connection open / end of last response to complete headers
  double body_timeout_s = 60.0;         // to receive the whole body once the headers are in
  double write_timeout_s = 60.0;        // for any single queued write to drain (slow readers are dropped)
  size_t max_unsent_bytes = 8u << 20;   // per connection, streaming: a reader this far behind is dropped
  int max_connections = 4096;           // beyond this, new connections are closed at once
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, HttpHandler handler);
  ~HttpServer();  // shutdown(0) if still running
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and listens (throws mxs::Error naming host:port on failure), then starts the io threads.
  void start();
  int port() const;  // the bound port

  // Shutdown in steps (shutdown() does all three): stop accepting and close idle connections (responses
  // in progress finish with Connection: close); wait up to timeout_s for in-flight requests to end (true
  // when none is left); force-close what remains (their on_disconnect callbacks run) and join the io threads.
  void stop_accepting();
  bool wait_for_idle(double timeout_s);
  void shutdown(double grace_s);  // idempotent

  // Runs `fn` on an io thread (not on any connection's strand). Used to move work off the engine thread.
  void post(std::function<void()> fn);

  size_t open_connections() const;
  size_t in_flight_requests() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace mxs::server
