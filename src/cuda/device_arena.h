// DeviceArena: one cudaMalloc carved into named, 256-byte aligned regions by a bump allocator. The runner
// owns three (weights, KV pool, workspaces); nothing is allocated after start-up, so the hot path never
// calls cudaMalloc. Regions live as long as the arena; there is no free.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace mxs::cuda {

class DeviceArena {
 public:
  DeviceArena() = default;
  DeviceArena(const std::string& name, size_t capacity_bytes);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;
  DeviceArena(DeviceArena&& o) noexcept;
  DeviceArena& operator=(DeviceArena&& o) noexcept;

  // Returns a region of `bytes` (rounded up to 256). Throws mxs::Error naming the arena and the region
  // when the capacity is exceeded (a sizing bug or too small a device).
  void* alloc(const std::string& region, size_t bytes);
  template <typename T>
  T* alloc_as(const std::string& region, size_t count) {
    return static_cast<T*>(alloc(region, count * sizeof(T)));
  }

  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }
  const std::string& name() const { return name_; }
  // "name: used/capacity MiB; largest regions ..." for the start-up log.
  std::string summary() const;

  static constexpr size_t kAlign = 256;
  static size_t aligned(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

 private:
  struct Region {
    std::string name;
    size_t offset, bytes;
  };
  std::string name_;
  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
  std::vector<Region> regions_;
};

}  // namespace mxs::cuda
