// HttpServer on loopback with a plain handler: keep-alive, size limits, chunked streaming from another
// thread, the disconnect callback when a client leaves mid-stream, and shutdown with a request in flight.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <future>
#include <thread>

#include "server/http_server.h"

namespace mxs::server {
namespace {

namespace asio = boost::asio;

// Sends `bytes`, reads until the server closes (or `timeout_s`); returns what came back.
std::string roundtrip(int port, const std::string& bytes, double timeout_s = 5.0) {
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  sock.connect({asio::ip::make_address("127.0.0.1"), uint16_t(port)});
  asio::write(sock, asio::buffer(bytes));
  std::string out;
  char buf[4096];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  sock.non_blocking(true);
  while (std::chrono::steady_clock::now() < deadline) {
    boost::system::error_code ec;
    const size_t n = sock.read_some(asio::buffer(buf), ec);
    if (ec == asio::error::would_block) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      continue;
    }
    if (ec) break;
    out.append(buf, n);
  }
  return out;
}

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(ServerHttp, KeepAliveLimitsAndErrors) {
  HttpServerOptions opt;
  opt.port = 0;
  opt.max_body_bytes = 64;
  HttpServer server(opt, [](HttpRequest&& req, std::shared_ptr<HttpExchange> ex) {
    HttpResponse r;
    r.content_type = "text/plain";
    r.body = req.method + " " + req.path + " " + req.body + " " + req.header("x-test");
    ex->respond(std::move(r));
  });
  server.start();
  const int port = server.port();
  ASSERT_GT(port, 0);
  const std::string two =
      "GET /a?q=1 HTTP/1.1\r\nHost: h\r\nX-Test: yes\r\n\r\n"
      "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
  const std::string out = roundtrip(port, two);
  EXPECT_EQ(count(out, "HTTP/1.1 200 OK"), 2) << out;
  EXPECT_NE(out.find("GET /a  yes"), std::string::npos);
  EXPECT_NE(out.find("POST /b abc "), std::string::npos);

  const std::string big =
      roundtrip(port, "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'z'));
  EXPECT_EQ(big.rfind("HTTP/1.1 413", 0), 0u) << big;
  EXPECT_NE(big.find("\"error\""), std::string::npos);
  const std::string bad = roundtrip(port, "GARBAGE\r\n\r\n");
  EXPECT_TRUE(bad.empty() || bad.rfind("HTTP/1.1 400", 0) == 0) << bad;
  EXPECT_EQ(roundtrip(port, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").rfind("HTTP/1.1 200", 0), 0u);
  server.shutdown(1.0);
}

TEST(ServerHttp, StreamsChunksFromAnotherThread) {
  HttpServerOptions opt;
  opt.port = 0;
  std::vector<std::thread> workers;
  HttpServer server(opt, [&](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    workers.emplace_back([ex] {
      ex->start_stream(200, "text/event-stream");
      for (int i = 0; i < 3; ++i) ex->send_chunk("data: " + std::to_string(i) + "\n\n");
      ex->end_stream();
    });
  });
  server.start();
  const std::string out = roundtrip(server.port(), "GET /s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
  EXPECT_NE(out.find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_NE(out.find("9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"), std::string::npos)
      << out;
  for (auto& t : workers) t.join();
  server.shutdown(1.0);
}

TEST(ServerHttp, DisconnectMidStreamRunsTheCallback) {
  HttpServerOptions opt;
  opt.port = 0;
  std::promise<void> disconnected;
  std::shared_ptr<HttpExchange> held;
  HttpServer server(opt, [&](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    held = ex;
    ex->on_disconnect([&] { disconnected.set_value(); });
    ex->start_stream(200, "text/event-stream");
    ex->send_chunk("data: first\n\n");  // never ended: the client leaves
  });
  server.start();
  {
    asio::io_context io;
    asio::ip::tcp::socket sock(io);
    sock.connect({asio::ip::make_address("127.0.0.1"), uint16_t(server.port())});
    asio::write(sock, asio::buffer(std::string("GET /s HTTP/1.1\r\nHost: h\r\n\r\n")));
    char buf[512];
    sock.read_some(asio::buffer(buf));
  }  // closed here
  ASSERT_EQ(disconnected.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_TRUE(held->client_gone());
  EXPECT_FALSE(held->send_chunk("late"));
  EXPECT_EQ(server.in_flight_requests(), 0u);
  server.shutdown(1.0);
  held.reset();  // an exchange must not outlive its server
}

TEST(ServerHttp, ShutdownForceClosesAStuckRequest) {
  HttpServerOptions opt;
  opt.port = 0;
  std::atomic<bool> cancelled{false};
  std::shared_ptr<HttpExchange> held;
  HttpServer server(opt, [&](HttpRequest&&, std::shared_ptr<HttpExchange> ex) {
    held = ex;  // never answered
    ex->on_disconnect([&] { cancelled = true; });
  });
  server.start();
  auto client = std::async(std::launch::async,
                           [&] { return roundtrip(server.port(), "GET /stuck HTTP/1.1\r\nHost: h\r\n\r\n", 10.0); });
  for (int i = 0; i < 500 && server.in_flight_requests() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_EQ(server.in_flight_requests(), 1u);
  const auto t0 = std::chrono::steady_clock::now();
  server.shutdown(0.2);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(client.get(), "");
  held.reset();
}

}  // namespace
}  // namespace mxs::server
