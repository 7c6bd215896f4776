#include "common/paths.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <sys/stat.h>

#include "common/error.h"

namespace mxs {

std::string cache_dir() {
  if (const char* v = std::getenv("MXSERVE_CACHE"); v && *v) return v;
  if (const char* v = std::getenv("XDG_CACHE_HOME"); v && *v) return join_path(v, "mxserve");
  if (const char* v = std::getenv("HOME"); v && *v) return join_path(join_path(v, ".cache"), "mxserve");
  return "/tmp/mxserve-cache";
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool dir_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void make_dirs(const std::string& path) {
  if (path.empty() || dir_exists(path)) return;
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_dirs(path.substr(0, slash));
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
    throw Error(strfmt("cannot create directory %s: %s", path.c_str(), std::strerror(errno)));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(strfmt("cannot read %s: %s", path.c_str(), std::strerror(errno)));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(strfmt("cannot write %s: %s", tmp.c_str(), std::strerror(errno)));
    out.write(data.data(), std::streamsize(data.size()));
    if (!out) throw Error(strfmt("cannot write %s", tmp.c_str()));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw Error(strfmt("cannot rename %s to %s: %s", tmp.c_str(), path.c_str(), std::strerror(errno)));
}

std::string join_path(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

}  // namespace mxs
