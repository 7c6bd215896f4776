// Parallel host -> device upload through pinned staging (host_upload.h).
#include "cuda/host_upload.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include <cuda_runtime.h>

#include "common/error.h"
#include "cuda/cuda_check.h"

namespace mxs::cuda {
namespace {

constexpr size_t kDefaultChunkBytes = size_t(32) << 20;
constexpr int kSlotsPerWorker = 2;  // one filling from the source while the DMA drains the other

struct Chunk {
  char* dst;
  const char* src;
  size_t bytes;
};

// One worker's stream, events and pinned slots (carved from one cudaMallocHost by the caller).
struct Worker {
  cudaStream_t stream = nullptr;
  cudaEvent_t drained[kSlotsPerWorker] = {};
  bool in_use[kSlotsPerWorker] = {};
  char* slots = nullptr;
};

}  // namespace

int host_upload_threads(const HostUploadOptions& o) {
  int n = o.threads;
  if (const char* env = std::getenv("MXS_UPLOAD_THREADS")) n = std::atoi(env);
  if (n <= 0) n = std::min(8, int(std::thread::hardware_concurrency()) / 2);
  return std::clamp(n, 1, 64);
}

void copy_host_to_device(const std::vector<HostToDeviceCopy>& copies, const HostUploadOptions& o) {
  const size_t chunk_bytes = o.chunk_bytes > 0 ? o.chunk_bytes : kDefaultChunkBytes;
  std::vector<Chunk> chunks;
  size_t total = 0;
  for (const HostToDeviceCopy& c : copies) {
    for (size_t off = 0; off < c.bytes; off += chunk_bytes)
      chunks.push_back({static_cast<char*>(c.dst) + off, static_cast<const char*>(c.src) + off,
                        std::min(chunk_bytes, c.bytes - off)});
    total += c.bytes;
  }
  if (chunks.empty()) {
    if (o.on_progress) o.on_progress(0, 0);
    return;
  }
  const int n_workers = std::min(host_upload_threads(o), int(chunks.size()));
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));

  char* pinned = nullptr;
  CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&pinned), size_t(n_workers) * kSlotsPerWorker * chunk_bytes));
  std::vector<Worker> workers(static_cast<size_t>(n_workers));
  std::atomic<size_t> next{0}, done{0};
  std::atomic<bool> stop{false};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto fail = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (!failure) failure = e;
    stop = true;
  };

  auto work = [&](int w) {
    Worker& me = workers[size_t(w)];
    try {
      CUDA_CHECK(cudaSetDevice(device));  // (the current device is per host thread)
      CUDA_CHECK(cudaStreamCreateWithFlags(&me.stream, cudaStreamNonBlocking));
      for (cudaEvent_t& e : me.drained) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      me.slots = pinned + size_t(w) * kSlotsPerWorker * chunk_bytes;
      for (int k = 0; !stop; ++k) {
        const size_t i = next.fetch_add(1);
        if (i >= chunks.size()) break;
        const Chunk& c = chunks[i];
        const int s = k % kSlotsPerWorker;
        if (me.in_use[s]) CUDA_CHECK(cudaEventSynchronize(me.drained[s]));  // its last DMA has read the slot
        char* slot = me.slots + size_t(s) * chunk_bytes;
        std::memcpy(slot, c.src, c.bytes);
        CUDA_CHECK(cudaMemcpyAsync(c.dst, slot, c.bytes, cudaMemcpyHostToDevice, me.stream));
        CUDA_CHECK(cudaEventRecord(me.drained[s], me.stream));
        me.in_use[s] = true;
        done += c.bytes;
      }
      CUDA_CHECK(cudaStreamSynchronize(me.stream));
    } catch (...) {
      fail(std::current_exception());
    }
    if (me.stream) cudaStreamSynchronize(me.stream);  // (on failure too: no DMA may read the slots once freed)
  };

  std::vector<std::thread> threads;
  threads.reserve(size_t(n_workers));
  for (int w = 0; w < n_workers; ++w) threads.emplace_back(work, w);
  if (o.on_progress) {
    // Report until every byte is copied or a worker failed; the workers finish their streams after that.
    while (done.load() < total && !stop.load()) {
      o.on_progress(done.load(), total);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  for (std::thread& t : threads) t.join();
  for (Worker& me : workers) {
    for (cudaEvent_t e : me.drained)
      if (e) cudaEventDestroy(e);
    if (me.stream) cudaStreamDestroy(me.stream);
  }
  cudaFreeHost(pinned);
  if (failure) std::rethrow_exception(failure);
  if (o.on_progress) o.on_progress(done.load(), total);
}

}  // namespace mxs::cuda
