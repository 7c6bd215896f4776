// Host -> device copies of many large pieces (the checkpoint's tensors from the mmap into the weights arena) through
// pinned staging buffers, on several host threads at once: each worker takes the next chunk, copies it from the
// source (page cache, mmap page faults) into one of its two pinned slots and hands it to its own stream's DMA while
// it fills the other slot. One thread tops out near a single memcpy's rate (~7 GB/s on the GPU machine, session 31);
// the PCIe link takes several times that. (Own threads rather than common/thread_pool.h: the chunks are claimed
// dynamically, each thread sets its device, and the caller reports progress while they run.)
#pragma once
#include <cstddef>
#include <functional>
#include <vector>

namespace mxs::cuda {

struct HostToDeviceCopy {
  void* dst = nullptr;        // device memory
  const void* src = nullptr;  // host memory (pageable: a mmap, a vector)
  size_t bytes = 0;
};

struct HostUploadOptions {
  int threads = 0;         // 0: min(8, hardware threads / 2), at least 1; MXS_UPLOAD_THREADS=N overrides
  size_t chunk_bytes = 0;  // 0: 32 MiB (the unit a worker copies and hands to the DMA)
  // Called from the calling thread about every 50 ms and once at the end with the bytes copied so far.
  std::function<void(size_t done, size_t total)> on_progress;
};

// Copies every piece, on the current device, and returns when all have landed. Pieces may be in any order and of
// any size (split into chunks); destinations must not overlap. Throws mxs::Error (the first failure of any worker;
// the others stop at their next chunk) after every worker has stopped.
void copy_host_to_device(const std::vector<HostToDeviceCopy>& copies, const HostUploadOptions& options = {});

// The worker count `options.threads` resolves to (for logs).
int host_upload_threads(const HostUploadOptions& options);

}  // namespace mxs::cuda
