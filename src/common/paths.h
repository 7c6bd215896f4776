// Where mxserve keeps its cache (the demo checkpoint, the fetched tokenizer.json):
// $MXSERVE_CACHE, else $XDG_CACHE_HOME/mxserve, else $HOME/.cache/mxserve.
#pragma once
#include <string>

namespace mxs {

std::string cache_dir();
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
void make_dirs(const std::string& path);  // mkdir -p; throws mxs::Error
std::string read_file(const std::string& path);  // throws mxs::Error naming the file
void write_file_atomic(const std::string& path, const std::string& data);  // tmp + rename
std::string join_path(const std::string& a, const std::string& b);

}  // namespace mxs
