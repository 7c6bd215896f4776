// safetensors reader: mmap'ed files, header validated before any tensor is touched, sharded checkpoints
// through model.safetensors.index.json. Format: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data; offsets are relative to the end of the header.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace mxs {

enum class DType { kBF16, kF16, kF32, kF64, kU8, kI8, kI16, kI32, kI64, kBool, kF8E4M3, kF8E5M2,
                   kU16, kU32, kU64, kF8E8M0 };

const char* dtype_name(DType d);             // "BF16", ...
size_t dtype_size(DType d);                  // bytes per element
bool dtype_from_name(const std::string& name, DType* out);

// A tensor inside a mapped file (non-owning; valid while its SafetensorsFile lives).
struct TensorView {
  std::string name;
  std::string file;  // path of the shard, for error messages
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[32, 5760, 90, 16]"
};

class SafetensorsFile {
 public:
  // Maps `path` and validates the header (size limit 100 MB, well-formed JSON, known dtypes, offsets inside
  // the data and non-overlapping, byte size == shape x dtype). Throws mxs::Error naming the file (and the
  // tensor, when one is at fault).
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All safetensors of a model folder: `model.safetensors.index.json` (weight_map name -> shard) when present,
// else every *.safetensors in the folder. A tensor named twice, or an index naming a missing shard or a
// tensor absent from its shard, is an error naming both.
class SafetensorsCheckpoint {
 public:
  static std::unique_ptr<SafetensorsCheckpoint> open_dir(const std::string& dir);

  const TensorView* find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, const TensorView*>& all() const { return index_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  const std::string& dir() const { return dir_; }
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// Largest header accepted (the safetensors reference implementation uses the same 100 MB limit).
constexpr uint64_t kSafetensorsMaxHeader = 100u * 1000u * 1000u;

// Writer used by mkmodel and the tests: tensors are appended in order; data is streamed to disk.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  // Writes the header for `entries` (data offsets in order, no padding beyond 8-byte header alignment).
  SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  // Appends the bytes of the next tensor (must be called once per entry, in order, with exactly its size).
  void write_tensor(const std::string& name, const void* data, size_t nbytes);
  // Streams one tensor in parts: appends `nbytes` of tensor `name` (the next entry); the entry is complete
  // once all its bytes have been written. Lets mkmodel write multi-GB tensors without holding them.
  void write_tensor_part(const std::string& name, const void* data, size_t nbytes);
  // Checks that every entry was written, flushes and closes; throws mxs::Error on a write error.
  void close();

 private:
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  size_t written_ = 0;  // bytes of entries_[next_] written so far
  void* file_ = nullptr;  // FILE*
};

}  // namespace mxs
