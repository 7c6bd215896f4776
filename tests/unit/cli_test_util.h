// Helpers for cli_*_test.cpp: run the built mxserve binary (MXS_BINARY) and capture its output and exit code.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace mxs::test {

struct RunResult {
  int exit_code;
  std::string out;  // stdout + stderr
};

// Runs `mxserve ARGS` through the shell (ARGS is shell syntax) and waits for it.
inline RunResult run_mxserve(const std::string& args) {
  const std::string cmd = std::string(MXS_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace mxs::test
