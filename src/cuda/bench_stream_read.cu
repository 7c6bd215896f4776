// See bench_stream_read.h.
#include "cuda/bench_stream_read.h"

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "cuda/bench_runner.h"
#include "cuda/cuda_check.h"
#include "cuda/event_timing.h"
#include "cuda/kernels/bulk_copy.cuh"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/pdl.cuh"

namespace mxs::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kLdgPerThread = 8;                       // 16-byte loads in flight per thread
constexpr int kLdgCtaBytes = kThreads * kLdgPerThread * 16;  // 32 KB per CTA
constexpr int kBulkMaxBytes = 220 * 1024;              // one CTA's share in shared memory
constexpr uint32_t kBulkPiece = 16384;                 // bytes per cp.async.bulk

// The loaded words are folded into one value that is stored only if it equals an impossible pattern: the
// loads cannot be removed, nothing is written.
__device__ __forceinline__ void keep(unsigned v, unsigned* sink) {
  if (v == 0x9e3779b9u) sink[blockIdx.x] = v;
}

__global__ void __launch_bounds__(kThreads) read_ldg_kernel(const uint4* w, size_t n_vec, unsigned* sink) {
  uint4 r[kLdgPerThread];
  const size_t base = size_t(blockIdx.x) * kLdgPerThread * kThreads + threadIdx.x;
#pragma unroll
  for (int i = 0; i < kLdgPerThread; ++i) {
    const size_t v = base + size_t(i) * kThreads;
    r[i] = v < n_vec ? ldg_stream(w + v) : make_uint4(0, 0, 0, 0);
  }
  griddep_wait();
  griddep_launch_dependents();
  unsigned s = 0;
#pragma unroll
  for (int i = 0; i < kLdgPerThread; ++i) s ^= r[i].x ^ r[i].y ^ r[i].z ^ r[i].w;
  keep(s, sink);
}

__global__ void __launch_bounds__(kThreads) read_bulk_kernel(const unsigned char* w, size_t bytes, size_t share,
                                                             unsigned* sink) {
  extern __shared__ __align__(128) unsigned char s_buf[];
  __shared__ uint64_t bar;
  const size_t beg = size_t(blockIdx.x) * share, end = beg + share < bytes ? beg + share : bytes;
  const uint32_t mine = beg < end ? uint32_t(end - beg) : 0u;
  if (threadIdx.x == 0) {
    mbarrier_init(&bar, 1);
    fence_mbarrier_init();
    mbarrier_arrive_expect_tx(&bar, mine);
    for (uint32_t o = 0; o < mine; o += kBulkPiece)
      bulk_copy_g2s(s_buf + o, w + beg + o, mine - o < kBulkPiece ? mine - o : kBulkPiece, &bar);
  }
  griddep_wait();
  griddep_launch_dependents();
  __syncthreads();  // the barrier's initialization
  mbarrier_wait(&bar, 0);
  unsigned s = 0;
  const uint4* v = reinterpret_cast<const uint4*>(s_buf);
  for (uint32_t i = threadIdx.x; i < mine / 16; i += kThreads) s ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  keep(s, sink);
}

__global__ void empty_kernel(unsigned* sink) {
  griddep_wait();
  griddep_launch_dependents();
  keep(threadIdx.x, sink);
}

// Mean microseconds per launch of a graph of `chain` launches (launch(i) queues launch i on `stream`), replayed
// `reps` times after one untimed replay. `stream` is a blocking stream, so mean_ms_per_call's events on the
// default stream bracket the replays.
template <typename F>
double time_chain(cudaStream_t stream, int chain, int reps, F&& launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < chain; ++i) launch(i);
  CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = mean_ms_per_call(1, reps, [&](int) { CUDA_CHECK(cudaGraphLaunch(exec, stream)); });
  CUDA_CHECK(cudaGraphExecDestroy(exec));
  CUDA_CHECK(cudaGraphDestroy(graph));
  return ms * 1e3 / chain;
}

}  // namespace

BenchStreamReadResult run_bench_stream_read(const BenchStreamReadOptions& o) {
  MXS_CHECK(!o.megabytes.empty() && o.chain >= 1 && o.reps >= 1, "bench stream-read: sizes, chain and reps needed");
  BenchStreamReadResult r;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  r.device = prop.name, r.num_sms = prop.multiProcessorCount;
  r.copy_gb_s = measure_copy_gb_s();

  const double max_mb = *std::max_element(o.megabytes.begin(), o.megabytes.end());
  MXS_CHECK(max_mb > 0 && max_mb <= 4096, strfmt("bench stream-read: sizes must be in (0, 4096] MB (got %.1f)", max_mb));
  const size_t buf_bytes = (size_t(max_mb * 1e6) + 4095) / 4096 * 4096;
  // Enough buffers that a rotation covers >= 1 GB (more than any L2), at most one per launch of the chain.
  const int n_bufs = int(std::min<size_t>(size_t(o.chain), std::max<size_t>(2, (size_t(1) << 30) / buf_bytes + 1)));
  std::vector<unsigned char*> bufs(size_t(n_bufs), nullptr);
  for (auto& b : bufs) {
    CUDA_CHECK(cudaMalloc(&b, buf_bytes));
    CUDA_CHECK(cudaMemset(b, 0x5a, buf_bytes));
  }
  unsigned* sink = nullptr;
  CUDA_CHECK(cudaMalloc(&sink, 1 << 20));
  CUDA_CHECK(cudaFuncSetAttribute(read_bulk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kBulkMaxBytes));
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreate(&stream));  // blocking: see time_chain

  const int sms = r.num_sms;
  r.us_empty = time_chain(stream, o.chain, o.reps,
                          [&](int) { launch_pdl(empty_kernel, dim3(sms), dim3(kThreads), 0, stream, sink); });
  for (double mb : o.megabytes) {
    BenchStreamReadRow row;
    row.megabytes = mb;
    const size_t bytes = size_t(mb * 1e6) / 16 * 16, n_vec = bytes / 16;
    const int ldg_grid = int((bytes + kLdgCtaBytes - 1) / kLdgCtaBytes);
    row.us_ldg = time_chain(stream, o.chain, o.reps, [&](int i) {
      launch_pdl(read_ldg_kernel, dim3(ldg_grid), dim3(kThreads), 0, stream,
                 reinterpret_cast<const uint4*>(bufs[size_t(i % n_bufs)]), n_vec, sink);
    });
    const size_t share = ((bytes + size_t(sms) - 1) / size_t(sms) + 15) & ~size_t(15);  // 16-byte multiples
    if (share <= size_t(kBulkMaxBytes))
      row.us_bulk = time_chain(stream, o.chain, o.reps, [&](int i) {
        launch_pdl(read_bulk_kernel, dim3(sms), dim3(kThreads), share, stream,
                   static_cast<const unsigned char*>(bufs[size_t(i % n_bufs)]), bytes, share, sink);
      });
    r.rows.push_back(row);
  }
  CUDA_CHECK(cudaStreamDestroy(stream));
  for (auto* b : bufs) cudaFree(b);
  cudaFree(sink);
  return r;
}

}  // namespace mxs::cuda
