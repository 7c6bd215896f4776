#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace mxs {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("MXSERVE_LOG");
  if (!v) return LogLevel::kInfo;
  if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
  if (!std::strcmp(v, "warn")) return LogLevel::kWarn;
  if (!std::strcmp(v, "error")) return LogLevel::kError;
  return LogLevel::kInfo;
}

std::atomic<int> g_level{int(level_from_env())};
const auto g_start = std::chrono::steady_clock::now();

}  // namespace

void set_log_level(LogLevel level) { g_level = int(level); }
LogLevel log_level() { return LogLevel(g_level.load()); }

void log_line(LogLevel level, const char* fmt, ...) {
  if (int(level) < g_level.load()) return;
  static const char* kNames[] = {"debug", "info", "warn", "error"};
  char buf[2048];
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - g_start).count();
  int n = std::snprintf(buf, sizeof buf, "[%9.3f %-5s] ", t, kNames[int(level)]);
  va_list args;
  va_start(args, fmt);
  n += std::vsnprintf(buf + n, sizeof buf - size_t(n) - 1, fmt, args);
  va_end(args);
  if (n > int(sizeof buf) - 2) n = int(sizeof buf) - 2;
  buf[n++] = '\n';
  std::fwrite(buf, 1, size_t(n), stderr);
}

}  // namespace mxs
