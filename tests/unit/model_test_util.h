// Helpers shared by the model_* tests: temporary folders, small configs, raw safetensors files and
// checkpoint rewriting (to produce the bad inputs each test needs).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/paths.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace mxs::test {

// A fresh folder under $TMPDIR (or /tmp), removed when the object dies.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/mxs-model-test-XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return join_path(path_, name); }

 private:
  std::string path_;
};

// A gpt-oss-shaped config small enough to write in milliseconds (vocab 1024, 2 layers, 4 experts).
inline ModelConfig micro_config() {
  ModelConfig c = ModelConfig::preset("tiny");
  c.vocab_size = 1024;
  c.num_layers = 2;
  c.layer_sliding = {true, false};
  c.num_experts = 4;
  c.experts_per_token = 2;
  c.eos_token_ids = {1000, 1001};
  c.pad_token_id = 1002;
  return c;
}

// Writes a file: u64 header length, `header` bytes, then `data_bytes` bytes of 0x5a.
inline void write_raw_safetensors(const std::string& path, const std::string& header, size_t data_bytes,
                                  uint64_t header_len_override = 0) {
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  const uint64_t n = header_len_override ? header_len_override : header.size();
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(n >> (8 * i));
  std::fwrite(len, 1, 8, f);
  if (!header.empty()) std::fwrite(header.data(), 1, header.size(), f);
  std::vector<uint8_t> data(data_bytes, 0x5a);
  if (!data.empty()) std::fwrite(data.data(), 1, data.size(), f);
  std::fclose(f);
}

// EXPECT that fn throws mxs::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected mxs::Error containing \"" << (parts.empty() ? "" : parts[0]) << "\"";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message: " << msg << "\nmissing: " << p;
  }
}

// One tensor as it will be rewritten: the loader's view plus what a test changed.
struct RawTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

// Copies the checkpoint in `src` (config.json + all tensors) into `dst` as one model.safetensors, after
// `mutate` edited the list (drop, rename, reshape, retype a tensor).
inline void rewrite_checkpoint(const std::string& src, const std::string& dst,
                               const std::function<void(std::vector<RawTensor>&)>& mutate) {
  std::vector<RawTensor> tensors;
  {
    auto ck = SafetensorsCheckpoint::open_dir(src);
    for (const auto& [name, t] : ck->all())
      tensors.push_back({name, t->dtype, t->shape, std::vector<uint8_t>(t->data, t->data + t->nbytes)});
  }
  mutate(tensors);
  make_dirs(dst);
  std::vector<SafetensorsWriter::Entry> entries;
  for (const RawTensor& t : tensors) entries.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(join_path(dst, "model.safetensors"), entries, {{"format", "pt"}});
  for (const RawTensor& t : tensors) w.write_tensor(t.name, t.bytes.data(), t.bytes.size());
  w.close();
  std::filesystem::copy_file(join_path(src, "config.json"), join_path(dst, "config.json"),
                             std::filesystem::copy_options::overwrite_existing);
}

}  // namespace mxs::test
