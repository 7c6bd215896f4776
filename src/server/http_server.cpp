// HTTP/1.1 server (see http_server.h). One Connection per socket, all of its work on one strand:
//   read headers (header timeout) -> read body (body timeout) -> handler -> response writes (write timeout)
//   -> keep-alive: back to reading, else close.
// While a request is being answered, one "watch" read stays pending on the socket: an error or EOF there
// means the client left (-> on_disconnect); bytes there are a pipelined next request, kept in the buffer.
#include "server/http_server.h"

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <chrono>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <unordered_map>

#include "common/error.h"
#include "common/log.h"
#include "server/sse.h"

namespace mxs::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;

std::string HttpRequest::header(std::string_view lower_name) const {
  for (const auto& [k, v] : headers) {
    if (k == lower_name) return v;
  }
  return {};
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A parse error in what the client sent (as opposed to EOF / reset / our own timeout closing the socket).
bool is_malformed(const error_code& ec) {
  return ec.category() == http::make_error_code(http::error::end_of_stream).category() &&
         ec != http::error::end_of_stream && ec != http::error::partial_message;
}

std::string status_line(int status) {
  const auto reason = http::obsolete_reason(http::status(unsigned(status)));
  return strfmt("HTTP/1.1 %d %.*s\r\n", status, int(reason.size()), reason.data());
}

std::string serialize_response(const HttpResponse& r, bool keep_alive) {
  std::string out = status_line(r.status);
  out += "Content-Type: " + r.content_type + "\r\n";
  out += strfmt("Content-Length: %zu\r\n", r.body.size());
  for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  out += r.body;
  return out;
}

// The error body for protocol-level failures (before any handler runs), in the OpenAI envelope.
HttpResponse protocol_error(int status, const std::string& message) {
  HttpResponse r;
  r.status = status;
  const nlohmann::json err = {
      {"message", message}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", nullptr}};
  r.body = nlohmann::json{{"error", err}}.dump();
  return r;
}

}  // namespace

class Connection;

struct HttpServer::Impl {
  // Declared before the io_context: connections unregister themselves when the io_context destroys
  // their pending handlers, so the registry must outlive it.
  std::mutex mu;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections;
  std::atomic<size_t> in_flight{0};
  std::atomic<size_t> open_sockets{0};  // connections not yet closed (exchanges may keep closed ones alive)
  std::atomic<bool> shutting_down{false};
  bool stopped = false;

  HttpServerOptions options;
  HttpHandler handler;
  asio::io_context ioc;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{asio::make_strand(ioc)};
  int bound_port = 0;
  std::vector<std::thread> threads;

  void accept();
  void add(const std::shared_ptr<Connection>& c);
  void remove(Connection* c);
  std::vector<std::shared_ptr<Connection>> snapshot();
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, HttpServer::Impl* server)
      : socket_(std::move(socket)), timer_(socket_.get_executor()), server_(server) {}
  ~Connection() { server_->remove(this); }

  void start() { read_request(); }

  // --- called through the exchange, always on the strand ---
  void respond(uint64_t seq, HttpResponse r);
  void start_stream(uint64_t seq, int status, std::string content_type,
                    std::vector<std::pair<std::string, std::string>> headers);
  void send_chunk(uint64_t seq, std::string data);
  void end_stream(uint64_t seq);
  void set_on_disconnect(uint64_t seq, std::function<void()> fn);
  bool gone(uint64_t seq) const { return closed_.load() || seq != request_seq_.load(); }

  void close_if_idle() {
    if (!in_request_) close();
  }
  void force_close() { fail(); }

  asio::any_io_executor executor() { return socket_.get_executor(); }

 private:
  void read_request();
  void on_header(error_code ec);
  void on_body(error_code ec);
  void dispatch();
  void watch();
  void on_watch(error_code ec, size_t n);
  void enqueue(std::string bytes);
  void do_write();
  void on_write(error_code ec, size_t n);
  void finish_request();
  void protocol_failure(int status, const std::string& message);
  void arm(double seconds);
  void disarm();
  void fail();   // client gone / stalled: notify the handler, close
  void close();  // orderly close, no notification

  tcp::socket socket_;
  asio::steady_timer timer_;
  uint64_t timer_gen_ = 0;
  HttpServer::Impl* server_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;

  std::atomic<uint64_t> request_seq_{0};  // the exchange for request N only acts while this is N
  bool in_request_ = false;               // a request was handed to the handler and is not finished
  bool keep_alive_ = true;
  bool response_started_ = false;
  bool response_done_ = false;
  bool watch_pending_ = false;
  bool resume_after_watch_ = false;  // the response is done; the pending watch read leads to the next request
  std::function<void()> on_disconnect_;
  bool disconnected_ = false;

  std::deque<std::string> queue_;
  size_t queued_bytes_ = 0;
  bool writing_ = false;
  std::atomic<bool> closed_{false};
};

class Exchange : public HttpExchange {
 public:
  Exchange(std::shared_ptr<Connection> c, uint64_t seq) : conn_(std::move(c)), seq_(seq) {}
  void respond(HttpResponse r) override {
    asio::post(conn_->executor(), [c = conn_, s = seq_, r = std::move(r)]() mutable { c->respond(s, std::move(r)); });
  }
  void start_stream(int status, std::string ct, std::vector<std::pair<std::string, std::string>> h) override {
    asio::post(conn_->executor(), [c = conn_, s = seq_, status, ct = std::move(ct), h = std::move(h)]() mutable {
      c->start_stream(s, status, std::move(ct), std::move(h));
    });
  }
  bool send_chunk(std::string data) override {
    if (conn_->gone(seq_)) return false;
    asio::post(conn_->executor(),
               [c = conn_, s = seq_, d = std::move(data)]() mutable { c->send_chunk(s, std::move(d)); });
    return true;
  }
  void end_stream() override {
    asio::post(conn_->executor(), [c = conn_, s = seq_] { c->end_stream(s); });
  }
  void on_disconnect(std::function<void()> fn) override {
    asio::post(conn_->executor(),
               [c = conn_, s = seq_, fn = std::move(fn)]() mutable { c->set_on_disconnect(s, std::move(fn)); });
  }
  bool client_gone() const override { return conn_->gone(seq_); }

 private:
  std::shared_ptr<Connection> conn_;
  uint64_t seq_;
};

// ---------------------------------------------------------------------------------------------------------
// Connection

void Connection::arm(double seconds) {
  const uint64_t gen = ++timer_gen_;
  timer_.expires_after(std::chrono::microseconds(int64_t(seconds * 1e6)));
  timer_.async_wait([self = shared_from_this(), gen](error_code ec) {
    if (ec || gen != self->timer_gen_) return;
    // A deadline passed: slow headers/body, an idle keep-alive connection, or a stalled reader.
    if (self->in_request_)
      self->fail();
    else
      self->close();
  });
}

void Connection::disarm() {
  ++timer_gen_;
  timer_.cancel();
}

void Connection::read_request() {
  if (closed_ || server_->shutting_down) return close();
  parser_.emplace();
  parser_->header_limit(uint32_t(std::min<size_t>(server_->options.max_header_bytes, UINT32_MAX)));
  parser_->body_limit(server_->options.max_body_bytes);
  arm(server_->options.header_timeout_s);
  http::async_read_header(socket_, buffer_, *parser_,
                          [self = shared_from_this()](error_code ec, size_t) { self->on_header(ec); });
}

void Connection::on_header(error_code ec) {
  if (ec) {
    disarm();
    if (ec == http::error::header_limit) return protocol_failure(431, "request headers too large");
    if (ec == http::error::body_limit)  // beast checks Content-Length against the limit with the headers
      return protocol_failure(413,
                              strfmt("request body exceeds the limit of %zu bytes", server_->options.max_body_bytes));
    if (is_malformed(ec)) return protocol_failure(400, "malformed HTTP request: " + ec.message());
    return close();  // EOF, reset, timeout (socket closed by the timer), or a truncated request
  }
  const auto& req = parser_->get();
  if (auto len = parser_->content_length(); len && *len > server_->options.max_body_bytes) {
    return protocol_failure(413, strfmt("request body of %llu bytes exceeds the limit of %zu bytes",
                                        (unsigned long long)*len, server_->options.max_body_bytes));
  }
  arm(server_->options.body_timeout_s);
  auto read_body = [self = shared_from_this()] {
    http::async_read(self->socket_, self->buffer_, *self->parser_,
                     [self](error_code ec, size_t) { self->on_body(ec); });
  };
  if (beast::iequals(req[http::field::expect], "100-continue") && !parser_->is_done()) {
    // curl sends Expect for large bodies and waits (1 s) for this before sending them.
    auto interim = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
    asio::async_write(socket_, asio::buffer(*interim),
                      [self = shared_from_this(), interim, read_body](error_code ec, size_t) {
                        if (ec) return self->close();
                        read_body();
                      });
    return;
  }
  read_body();
}

void Connection::on_body(error_code ec) {
  disarm();
  if (ec) {
    if (ec == http::error::body_limit)
      return protocol_failure(413,
                              strfmt("request body exceeds the limit of %zu bytes", server_->options.max_body_bytes));
    if (is_malformed(ec)) return protocol_failure(400, "malformed HTTP request: " + ec.message());
    return close();
  }
  dispatch();
}

void Connection::dispatch() {
  auto msg = parser_->release();
  parser_.reset();
  HttpRequest req;
  req.method = std::string(msg.method_string());
  req.target = std::string(msg.target());
  req.path = req.target.substr(0, req.target.find('?'));
  for (const auto& f : msg)
    req.headers.emplace_back(lower({f.name_string().data(), f.name_string().size()}), std::string(f.value()));
  req.body = std::move(msg.body());
  keep_alive_ = msg.keep_alive();

  in_request_ = true;
  response_started_ = response_done_ = false;
  on_disconnect_ = nullptr;
  disconnected_ = false;
  server_->in_flight++;
  const uint64_t seq = ++request_seq_;
  auto exchange = std::make_shared<Exchange>(shared_from_this(), seq);
  try {
    server_->handler(std::move(req), exchange);
  } catch (const std::exception& e) {
    MXS_LOG_ERROR("http: handler threw: %s", e.what());
    exchange->respond(protocol_error(500, "internal error"));
  }
  watch();
}

void Connection::watch() {
  if (watch_pending_ || closed_) return;
  watch_pending_ = true;
  socket_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](error_code ec, size_t n) { self->on_watch(ec, n); });
}

void Connection::on_watch(error_code ec, size_t n) {
  watch_pending_ = false;
  if (ec) {
    if (in_request_ && !response_done_) return fail();  // the client left while we were answering
    return close();  // it closed an idle keep-alive connection, or left as the last bytes went out
  }
  buffer_.commit(n);
  if (resume_after_watch_) {
    resume_after_watch_ = false;
    read_request();
  }
  // else: pipelined bytes of the next request arrived mid-response; they wait in buffer_.
}

void Connection::respond(uint64_t seq, HttpResponse r) {
  if (seq != request_seq_ || closed_ || response_started_ || !in_request_) return;
  response_started_ = response_done_ = true;
  if (server_->shutting_down) keep_alive_ = false;
  enqueue(serialize_response(r, keep_alive_));
}

void Connection::start_stream(uint64_t seq, int status, std::string content_type,
                              std::vector<std::pair<std::string, std::string>> headers) {
  if (seq != request_seq_ || closed_ || response_started_ || !in_request_) return;
  response_started_ = true;
  if (server_->shutting_down) keep_alive_ = false;
  std::string head = status_line(status);
  head += "Content-Type: " + content_type + "\r\n";
  head += "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n";
  for (const auto& [k, v] : headers) head += k + ": " + v + "\r\n";
  head += keep_alive_ ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  enqueue(std::move(head));
}

void Connection::send_chunk(uint64_t seq, std::string data) {
  if (seq != request_seq_ || closed_ || !response_started_ || response_done_) return;
  if (!data.empty()) enqueue(chunked_frame(data));
}

void Connection::end_stream(uint64_t seq) {
  if (seq != request_seq_ || closed_ || !response_started_ || response_done_) return;
  response_done_ = true;
  enqueue(chunked_end());
}

void Connection::set_on_disconnect(uint64_t seq, std::function<void()> fn) {
  if (seq != request_seq_) return;
  if (disconnected_) {
    if (fn) fn();
    return;
  }
  on_disconnect_ = std::move(fn);
}

void Connection::enqueue(std::string bytes) {
  if (closed_) return;
  queued_bytes_ += bytes.size();
  queue_.push_back(std::move(bytes));
  if (queued_bytes_ > server_->options.max_unsent_bytes) {
    MXS_LOG_WARN("http: dropping a client that is %zu bytes behind", queued_bytes_);
    return fail();
  }
  if (!writing_) do_write();
}

void Connection::do_write() {
  writing_ = true;
  arm(server_->options.write_timeout_s);
  asio::async_write(socket_, asio::buffer(queue_.front()),
                    [self = shared_from_this()](error_code ec, size_t n) { self->on_write(ec, n); });
}

void Connection::on_write(error_code ec, size_t) {
  writing_ = false;
  disarm();
  if (ec || closed_) return fail();  // closed meanwhile (client gone, timer): the queue was dropped
  queued_bytes_ -= queue_.front().size();
  queue_.pop_front();
  if (!queue_.empty()) return do_write();
  if (response_done_ && in_request_) finish_request();
}

void Connection::finish_request() {
  in_request_ = false;
  server_->in_flight--;
  on_disconnect_ = nullptr;
  if (!keep_alive_ || server_->shutting_down) {
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    return close();
  }
  if (buffer_.size() > 0 || !watch_pending_) return read_request();  // pipelined bytes, or no watch left
  resume_after_watch_ = true;  // the pending watch read delivers the next request's first bytes
  arm(server_->options.header_timeout_s);
}

void Connection::protocol_failure(int status, const std::string& message) {
  // Sent before any handler ran; the stream cannot be resynchronised, so the connection closes after it.
  in_request_ = true;
  server_->in_flight++;
  response_started_ = response_done_ = true;
  keep_alive_ = false;
  ++request_seq_;
  enqueue(serialize_response(protocol_error(status, message), false));
}

void Connection::fail() {
  std::function<void()> notify;
  if (in_request_ && !disconnected_) {
    disconnected_ = true;
    in_request_ = false;
    server_->in_flight--;
    notify = std::move(on_disconnect_);
    on_disconnect_ = nullptr;
  }
  close();  // first, so that the callback already sees client_gone()
  if (notify) {
    try {
      notify();
    } catch (const std::exception& e) {
      MXS_LOG_ERROR("http: on_disconnect threw: %s", e.what());
    }
  }
}

void Connection::close() {
  if (closed_.exchange(true)) return;
  if (in_request_) {  // closing with a request still open (e.g. the timer): account for it once
    in_request_ = false;
    server_->in_flight--;
  }
  disarm();
  // An async_write in flight still reads queue_.front(): keep that string alive until on_write runs.
  queue_.erase(writing_ ? queue_.begin() + 1 : queue_.begin(), queue_.end());
  queued_bytes_ = 0;
  error_code ignored;
  socket_.close(ignored);
  server_->open_sockets--;
}

// ---------------------------------------------------------------------------------------------------------
// Server

void HttpServer::Impl::add(const std::shared_ptr<Connection>& c) {
  std::lock_guard<std::mutex> lock(mu);
  connections[c.get()] = c;
}

void HttpServer::Impl::remove(Connection* c) {
  std::lock_guard<std::mutex> lock(mu);
  connections.erase(c);
}

std::vector<std::shared_ptr<Connection>> HttpServer::Impl::snapshot() {
  std::vector<std::shared_ptr<Connection>> out;
  std::lock_guard<std::mutex> lock(mu);
  for (auto& [_, w] : connections) {
    if (auto c = w.lock()) out.push_back(std::move(c));
  }
  return out;
}

void HttpServer::Impl::accept() {
  acceptor.async_accept(asio::make_strand(ioc), [this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      if (shutting_down || open_sockets.load() >= size_t(options.max_connections)) {
        error_code ignored;
        socket.close(ignored);
      } else {
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);  // streamed tokens must not wait for Nagle
        auto c = std::make_shared<Connection>(std::move(socket), this);
        open_sockets++;
        add(c);
        asio::dispatch(c->executor(), [c] { c->start(); });
      }
    } else {
      MXS_LOG_WARN("http: accept failed: %s", ec.message().c_str());
      if (ec == asio::error::no_descriptors) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    accept();
  });
}

HttpServer::HttpServer(HttpServerOptions options, HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
}

HttpServer::~HttpServer() {
  shutdown(0.0);
}

void HttpServer::start() {
  Impl& s = *impl_;
  error_code ec;
  const auto addr = asio::ip::make_address(s.options.host, ec);
  MXS_CHECK(!ec, strfmt("--host %s is not an IP address: %s", s.options.host.c_str(), ec.message().c_str()));
  MXS_CHECK(s.options.port >= 0 && s.options.port <= 65535, strfmt("--port %d is not in [0, 65535]", s.options.port));
  const tcp::endpoint ep(addr, uint16_t(s.options.port));
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  MXS_CHECK(!ec, strfmt("cannot listen on %s:%d: %s", s.options.host.c_str(), s.options.port, ec.message().c_str()));
  s.bound_port = s.acceptor.local_endpoint().port();
  s.work.emplace(s.ioc.get_executor());
  s.accept();
  const int n = std::max(1, s.options.io_threads);
  for (int i = 0; i < n; ++i) {
    s.threads.emplace_back([&s] {
      while (true) {
        try {
          s.ioc.run();
          return;
        } catch (const std::exception& e) {  // a handler threw past its own guards: log, keep serving
          MXS_LOG_ERROR("http: io thread caught: %s", e.what());
        }
      }
    });
  }
}

int HttpServer::port() const {
  return impl_->bound_port;
}

size_t HttpServer::open_connections() const {
  return impl_->open_sockets.load();
}

void HttpServer::post(std::function<void()> fn) {
  asio::post(impl_->ioc, std::move(fn));
}

size_t HttpServer::in_flight_requests() const {
  return impl_->in_flight.load();
}

void HttpServer::stop_accepting() {
  Impl& s = *impl_;
  if (s.threads.empty() || s.shutting_down.exchange(true)) return;
  asio::post(s.acceptor.get_executor(), [&s] {
    error_code ignored;
    s.acceptor.close(ignored);
  });
  for (auto& c : s.snapshot()) asio::post(c->executor(), [c] { c->close_if_idle(); });
}

bool HttpServer::wait_for_idle(double timeout_s) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(int64_t(timeout_s * 1e6));
  while (impl_->in_flight.load() > 0) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

void HttpServer::shutdown(double grace_s) {
  Impl& s = *impl_;
  if (s.stopped) return;
  s.stopped = true;
  if (s.threads.empty()) return;
  stop_accepting();
  wait_for_idle(grace_s);
  for (auto& c : s.snapshot()) asio::post(c->executor(), [c] { c->force_close(); });
  // Give the io threads a moment to run the close handlers (and the on_disconnect callbacks).
  const auto close_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (open_connections() > 0 && std::chrono::steady_clock::now() < close_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  s.work.reset();
  s.ioc.stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

}  // namespace mxs::server
