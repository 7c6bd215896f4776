// safetensors: the mmap'ed reader with full header validation, the folder/index loader, and the streaming
// writer. Every error names the file and, when one tensor is at fault, the tensor.
#include "model/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/paths.h"

namespace mxs {

namespace {

using nlohmann::json;

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

// The dtype strings of the safetensors format (safetensors/src/tensor.rs) that have a whole-byte size.
constexpr DTypeInfo kDTypes[] = {
    {DType::kBF16, "BF16", 2},       {DType::kF16, "F16", 2},         {DType::kF32, "F32", 4},
    {DType::kF64, "F64", 8},         {DType::kU8, "U8", 1},           {DType::kI8, "I8", 1},
    {DType::kI16, "I16", 2},         {DType::kI32, "I32", 4},         {DType::kI64, "I64", 8},
    {DType::kBool, "BOOL", 1},       {DType::kF8E4M3, "F8_E4M3", 1},  {DType::kF8E5M2, "F8_E5M2", 1},
    {DType::kU16, "U16", 2},         {DType::kU32, "U32", 4},         {DType::kU64, "U64", 8},
    {DType::kF8E8M0, "F8_E8M0", 1},
};

const DTypeInfo& info(DType d) {
  for (const DTypeInfo& i : kDTypes)
    if (i.dtype == d) return i;
  return kDTypes[0];  // unreachable for valid enum values
}

// Non-negative JSON integer (nlohmann stores non-negative literals as unsigned).
bool as_u64(const json& v, uint64_t* out) {
  if (!v.is_number_unsigned()) return false;
  *out = v.get<uint64_t>();
  return true;
}

// Parses and validates the JSON header of a file whose data region is `data_size` bytes at `data`.
void parse_header(const std::string& path, const char* header, size_t header_len, const uint8_t* data,
                  size_t data_size, std::map<std::string, TensorView>* tensors,
                  std::map<std::string, std::string>* metadata) {
  json j;
  try {
    j = json::parse(header, header + header_len);
  } catch (const json::exception& e) {
    throw Error(strfmt("%s: safetensors header is not valid JSON: %s", path.c_str(), e.what()));
  }
  MXS_CHECK(j.is_object(), strfmt("%s: safetensors header must be a JSON object, found %s", path.c_str(),
                                  j.type_name()));

  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& e = it.value();
    if (name == "__metadata__") {
      MXS_CHECK(e.is_object(), strfmt("%s: __metadata__ must be an object of strings", path.c_str()));
      for (auto m = e.begin(); m != e.end(); ++m) {
        MXS_CHECK(m.value().is_string(), strfmt("%s: __metadata__ value \"%s\" must be a string, found %s",
                                                path.c_str(), m.key().c_str(), m.value().dump().c_str()));
        (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const char* where = path.c_str();
    const char* tname = name.c_str();
    MXS_CHECK(e.is_object(), strfmt("%s: tensor %s: header entry must be an object", where, tname));
    MXS_CHECK(e.contains("dtype") && e["dtype"].is_string(),
              strfmt("%s: tensor %s: missing or non-string \"dtype\"", where, tname));
    MXS_CHECK(e.contains("shape") && e["shape"].is_array(),
              strfmt("%s: tensor %s: missing or non-list \"shape\"", where, tname));
    MXS_CHECK(e.contains("data_offsets") && e["data_offsets"].is_array() && e["data_offsets"].size() == 2,
              strfmt("%s: tensor %s: \"data_offsets\" must be a list [begin, end]", where, tname));

    TensorView t;
    t.name = name;
    t.file = path;
    const std::string dtype = e["dtype"].get<std::string>();
    if (!dtype_from_name(dtype, &t.dtype))
      throw Error(strfmt("%s: tensor %s has unknown dtype \"%s\" (known: BF16, F16, F32, F64, U8, I8, U16, I16, "
                         "U32, I32, U64, I64, BOOL, F8_E4M3, F8_E5M2, F8_E8M0)",
                         where, tname, dtype.c_str()));
    // numel with overflow checks: the byte size must fit the file anyway, so anything above it is an error.
    unsigned __int128 numel = 1;
    for (const json& d : e["shape"]) {
      uint64_t dim;
      MXS_CHECK(as_u64(d, &dim), strfmt("%s: tensor %s: shape %s must hold non-negative integers", where, tname,
                                        e["shape"].dump().c_str()));
      numel *= dim;
      if (numel > (unsigned __int128)(1) << 64) numel = (unsigned __int128)(1) << 64;  // saturate
      t.shape.push_back(int64_t(std::min<uint64_t>(dim, uint64_t(INT64_MAX))));
    }
    uint64_t begin, end;
    MXS_CHECK(as_u64(e["data_offsets"][0], &begin) && as_u64(e["data_offsets"][1], &end),
              strfmt("%s: tensor %s: data_offsets %s must be non-negative integers", where, tname,
                     e["data_offsets"].dump().c_str()));
    MXS_CHECK(begin <= end, strfmt("%s: tensor %s: data_offsets [%llu, %llu] has begin > end", where, tname,
                                   (unsigned long long)begin, (unsigned long long)end));
    if (end > data_size)
      throw Error(strfmt("%s: tensor %s: data_offsets [%llu, %llu] lie outside the data (%zu bytes after the "
                         "header; is the file truncated?)",
                         where, tname, (unsigned long long)begin, (unsigned long long)end, data_size));
    const unsigned __int128 expect = numel * info(t.dtype).size;
    if (expect != end - begin)
      throw Error(strfmt("%s: tensor %s: %s %s needs %llu bytes but data_offsets [%llu, %llu] span %llu",
                         where, tname, dtype.c_str(), e["shape"].dump().c_str(),
                         (unsigned long long)std::min<unsigned __int128>(expect, UINT64_MAX),
                         (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin)));
    t.data = data + begin;
    t.nbytes = size_t(end - begin);
    auto [pos, inserted] = tensors->emplace(name, std::move(t));
    ranges.push_back({begin, end, &pos->first});
  }

  // Non-overlapping: sorted by begin, each tensor must start at or after the end of the previous one.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const Range& a = ranges[i - 1];
    const Range& b = ranges[i];
    if (b.begin < a.end && b.begin != b.end && a.begin != a.end)
      throw Error(strfmt("%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap", path.c_str(), a.name->c_str(),
                         (unsigned long long)a.begin, (unsigned long long)a.end, b.name->c_str(),
                         (unsigned long long)b.begin, (unsigned long long)b.end));
  }
}

}  // namespace

const char* dtype_name(DType d) { return info(d).name; }
size_t dtype_size(DType d) { return info(d).size; }

bool dtype_from_name(const std::string& name, DType* out) {
  for (const DTypeInfo& i : kDTypes) {
    if (name == i.name) {
      *out = i.dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------------------------------------- reader

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(strfmt("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(strfmt("%s: cannot stat: %s", path.c_str(), std::strerror(err)));
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(strfmt("%s: file is %zu bytes, too short for a safetensors header (truncated?)", path.c_str(), size));
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw Error(strfmt("%s: mmap failed: %s", path.c_str(), std::strerror(map_err)));
  f->map_ = map;
  f->size_ = size;

  const uint8_t* bytes = static_cast<const uint8_t*>(map);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];  // little-endian u64
  if (header_len > kSafetensorsMaxHeader)
    throw Error(strfmt("%s: header length %llu exceeds the 100 MB limit (not a safetensors file?)", path.c_str(),
                       (unsigned long long)header_len));
  if (header_len > size - 8)
    throw Error(strfmt("%s: header length %llu is larger than the file (%zu bytes; truncated?)", path.c_str(),
                       (unsigned long long)header_len, size));
  const size_t data_begin = 8 + size_t(header_len);
  parse_header(path, reinterpret_cast<const char*>(bytes + 8), size_t(header_len), bytes + data_begin,
               size - data_begin, &f->tensors_, &f->metadata_);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, size_);
}

// ---------------------------------------------------------------------------------------------- folder

std::unique_ptr<SafetensorsCheckpoint> SafetensorsCheckpoint::open_dir(const std::string& dir) {
  MXS_CHECK(dir_exists(dir), strfmt("%s: no such directory", dir.c_str()));
  std::unique_ptr<SafetensorsCheckpoint> ck(new SafetensorsCheckpoint());
  ck->dir_ = dir;
  const std::string index_path = join_path(dir, "model.safetensors.index.json");

  if (file_exists(index_path)) {
    json j;
    try {
      j = json::parse(read_file(index_path));
    } catch (const json::exception& e) {
      throw Error(strfmt("%s: invalid JSON: %s", index_path.c_str(), e.what()));
    }
    MXS_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
              strfmt("%s: missing \"weight_map\" object", index_path.c_str()));
    // Open each shard once, in order of first mention (sorted names give the shard order).
    std::map<std::string, SafetensorsFile*> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      MXS_CHECK(it.value().is_string(), strfmt("%s: weight_map[\"%s\"] must be a file name", index_path.c_str(),
                                               it.key().c_str()));
      const std::string shard = it.value().get<std::string>();
      MXS_CHECK(shard.find('/') == std::string::npos && shard != ".." && !shard.empty(),
                strfmt("%s: weight_map[\"%s\"] = \"%s\" must be a file name inside the folder",
                       index_path.c_str(), it.key().c_str(), shard.c_str()));
      if (!shards.count(shard)) {
        const std::string shard_path = join_path(dir, shard);
        if (!file_exists(shard_path))
          throw Error(strfmt("%s names shard %s (for tensor %s), which does not exist in %s", index_path.c_str(),
                             shard.c_str(), it.key().c_str(), dir.c_str()));
        ck->files_.push_back(SafetensorsFile::open(shard_path));
        shards[shard] = ck->files_.back().get();
      }
    }
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      const SafetensorsFile* f = shards.at(it.value().get<std::string>());
      auto t = f->tensors().find(it.key());
      if (t == f->tensors().end())
        throw Error(strfmt("%s maps tensor %s to %s, but that shard has no such tensor", index_path.c_str(),
                           it.key().c_str(), f->path().c_str()));
      ck->index_[it.key()] = &t->second;
    }
    return ck;
  }

  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0 && entry.is_regular_file(ec))
      paths.push_back(join_path(dir, name));
  }
  MXS_CHECK(!ec, strfmt("%s: cannot list: %s", dir.c_str(), ec.message().c_str()));
  std::sort(paths.begin(), paths.end());
  MXS_CHECK(!paths.empty(), strfmt("%s: no *.safetensors files and no model.safetensors.index.json", dir.c_str()));
  for (const std::string& p : paths) {
    ck->files_.push_back(SafetensorsFile::open(p));
    for (const auto& [name, view] : ck->files_.back()->tensors()) {
      auto [it, inserted] = ck->index_.emplace(name, &view);
      if (!inserted)
        throw Error(strfmt("tensor %s is in both %s and %s", name.c_str(), it->second->file.c_str(), p.c_str()));
    }
  }
  return ck;
}

const TensorView* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

size_t SafetensorsCheckpoint::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : index_) n += t->nbytes;
  return n;
}

// ---------------------------------------------------------------------------------------------- writer

SafetensorsWriter::SafetensorsWriter(const std::string& path, const std::vector<Entry>& entries,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), entries_(entries) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const Entry& e : entries_) {
    MXS_CHECK(names.insert(e.name).second, strfmt("%s: tensor %s written twice", path.c_str(), e.name.c_str()));
    uint64_t n = dtype_size(e.dtype);
    for (int64_t d : e.shape) n *= uint64_t(d);
    header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writer does
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(strfmt("%s: cannot create: %s", path.c_str(), std::strerror(errno)));
  file_ = f;
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));
  if (std::fwrite(len, 1, 8, f) != 8 || std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
    std::fclose(f);
    file_ = nullptr;
    throw Error(strfmt("%s: write failed: %s", path.c_str(), std::strerror(errno)));
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_) std::fclose(static_cast<FILE*>(file_));
}

void SafetensorsWriter::write_tensor(const std::string& name, const void* data, size_t nbytes) {
  MXS_CHECK(next_ < entries_.size() && entries_[next_].name == name,
            strfmt("%s: tensor %s written out of order (expected %s)", path_.c_str(), name.c_str(),
                   next_ < entries_.size() ? entries_[next_].name.c_str() : "(none)"));
  MXS_CHECK(written_ == 0, strfmt("%s: tensor %s written whole after a partial write", path_.c_str(), name.c_str()));
  size_t expect = dtype_size(entries_[next_].dtype);
  for (int64_t d : entries_[next_].shape) expect *= size_t(d);
  MXS_CHECK(nbytes == expect, strfmt("%s: tensor %s has %zu bytes, expected %zu", path_.c_str(), name.c_str(),
                                     nbytes, expect));
  write_tensor_part(name, data, nbytes);
  if (nbytes == 0) ++next_;  // an empty tensor is complete without bytes
}

void SafetensorsWriter::write_tensor_part(const std::string& name, const void* data, size_t nbytes) {
  MXS_CHECK(file_, strfmt("%s: writer is closed", path_.c_str()));
  MXS_CHECK(next_ < entries_.size() && entries_[next_].name == name,
            strfmt("%s: tensor %s written out of order (expected %s)", path_.c_str(), name.c_str(),
                   next_ < entries_.size() ? entries_[next_].name.c_str() : "(none)"));
  size_t expect = dtype_size(entries_[next_].dtype);
  for (int64_t d : entries_[next_].shape) expect *= size_t(d);
  MXS_CHECK(written_ + nbytes <= expect, strfmt("%s: tensor %s: %zu bytes written, expected %zu", path_.c_str(),
                                                name.c_str(), written_ + nbytes, expect));
  if (nbytes && std::fwrite(data, 1, nbytes, static_cast<FILE*>(file_)) != nbytes)
    throw Error(strfmt("%s: write failed: %s", path_.c_str(), std::strerror(errno)));
  written_ += nbytes;
  if (written_ == expect && nbytes > 0) {
    ++next_;
    written_ = 0;
  }
}

void SafetensorsWriter::close() {
  if (!file_) return;
  FILE* f = static_cast<FILE*>(file_);
  file_ = nullptr;
  const bool flushed = std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  MXS_CHECK(next_ == entries_.size(), strfmt("%s: closed after %zu of %zu tensors", path_.c_str(), next_,
                                             entries_.size()));
  MXS_CHECK(flushed && closed, strfmt("%s: write failed: %s", path_.c_str(), std::strerror(errno)));
}

}  // namespace mxs
