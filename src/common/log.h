// Logging to stderr with a level filter (MXSERVE_LOG=debug|info|warn|error, default info).
// printf-style, thread-safe (one fwrite per line), timestamps in seconds since process start.
#pragma once

namespace mxs {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace mxs

#define MXS_LOG_DEBUG(...) ::mxs::log_line(::mxs::LogLevel::kDebug, __VA_ARGS__)
#define MXS_LOG_INFO(...) ::mxs::log_line(::mxs::LogLevel::kInfo, __VA_ARGS__)
#define MXS_LOG_WARN(...) ::mxs::log_line(::mxs::LogLevel::kWarn, __VA_ARGS__)
#define MXS_LOG_ERROR(...) ::mxs::log_line(::mxs::LogLevel::kError, __VA_ARGS__)
