// DeviceArena implementation (see device_arena.h).
#include "cuda/device_arena.h"

#include <algorithm>
#include <utility>

#include "common/error.h"
#include "cuda/cuda_check.h"

namespace mxs::cuda {

DeviceArena::DeviceArena(const std::string& name, size_t capacity_bytes) : name_(name) {
  capacity_ = aligned(capacity_bytes);
  if (capacity_ == 0) return;
  const cudaError_t err = cudaMalloc(reinterpret_cast<void**>(&base_), capacity_);
  if (err != cudaSuccess) {
    size_t free_b = 0, total_b = 0;
    cudaGetLastError();
    cudaMemGetInfo(&free_b, &total_b);
    throw Error(strfmt("cannot allocate the %s arena: %.1f MiB requested, %.1f MiB free of %.1f MiB (%s); "
                       "lower --device-memory-utilization or --max-length, or free the GPU",
                       name.c_str(), capacity_ / 1048576.0, free_b / 1048576.0, total_b / 1048576.0,
                       cudaGetErrorString(err)));
  }
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);
}

DeviceArena::DeviceArena(DeviceArena&& o) noexcept { *this = std::move(o); }

DeviceArena& DeviceArena::operator=(DeviceArena&& o) noexcept {
  if (this != &o) {
    if (base_) cudaFree(base_);
    name_ = std::move(o.name_);
    base_ = std::exchange(o.base_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    used_ = std::exchange(o.used_, 0);
    regions_ = std::move(o.regions_);
  }
  return *this;
}

void* DeviceArena::alloc(const std::string& region, size_t bytes) {
  const size_t n = aligned(std::max<size_t>(bytes, 1));
  if (used_ + n > capacity_)
    throw Error(strfmt("device arena '%s' is full: region '%s' needs %zu bytes, %zu of %zu used", name_.c_str(),
                       region.c_str(), n, used_, capacity_));
  regions_.push_back({region, used_, n});
  void* p = base_ + used_;
  used_ += n;
  return p;
}

std::string DeviceArena::summary() const {
  std::vector<Region> r = regions_;
  std::sort(r.begin(), r.end(), [](const Region& a, const Region& b) { return a.bytes > b.bytes; });
  std::string s = strfmt("%s: %.1f / %.1f MiB", name_.c_str(), used_ / 1048576.0, capacity_ / 1048576.0);
  for (size_t i = 0; i < r.size() && i < 4; ++i)
    s += strfmt("%s %s %.1f MiB", i ? "," : ";", r[i].name.c_str(), r[i].bytes / 1048576.0);
  return s;
}

}  // namespace mxs::cuda
