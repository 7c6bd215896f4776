// How many thread-block clusters of n CTAs fit at once when each CTA fills an SM (one CTA per SM, as a batch-1
// q/k/v GEMV with 176 registers x 256 threads does), and how fast 128 such CTAs in clusters of 16 stream a q/k/v-sized
// weight set (29.5 MB, bf16 20b) against 132 and 128 CTAs without clusters. The question behind it: can one
// 16-CTA cluster per kv head (8 x 16 = 128 CTAs) compute q/k/v and then the attention of its head, with the q
// exchange and the split merge in distributed shared memory (docs/PLAN-persistent-decode.md, session 18's estimate)?
// Build and run (sm_90): nvcc -O2 -arch=sm_90a -o cluster_fit tools/microbench/cluster_fit.cu && ./cluster_fit
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include "microbench.cuh"

constexpr int kThreads = 256;
constexpr int kInFlight = 24;  // 16-byte loads per lane in flight (gemv_warp_kernel: 2 rows x 12 vectors at K = 2880)

// Each CTA streams its contiguous slice [blockIdx.x * per, +per) of w (uint4 units) and writes a checksum.
__global__ void __launch_bounds__(kThreads, 1) stream_slice(const uint4* w, size_t per, unsigned* out) {
  extern __shared__ unsigned s_pad[];  // (dynamic smem only to force one CTA per SM)
  const uint4* p = w + blockIdx.x * per;
  unsigned acc = 0;
  for (size_t base = 0; base < per; base += size_t(kThreads) * kInFlight) {
    uint4 v[kInFlight];
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) {
      const size_t idx = base + size_t(i) * kThreads + threadIdx.x;
      if (idx < per) asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                                  : "=r"(v[i].x), "=r"(v[i].y), "=r"(v[i].z), "=r"(v[i].w) : "l"(p + idx));
      else v[i] = make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int i = 0; i < kInFlight; ++i) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  }
  if (acc == 0x12345678u) s_pad[0] = acc, out[blockIdx.x] = s_pad[0];  // (never: keeps the loads)
}

int main() {
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int smem = 150 * 1024;  // one CTA per SM
  CK(cudaFuncSetAttribute(stream_slice, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CK(cudaFuncSetAttribute(stream_slice, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  printf("SMs %d; clusters that fit at once with one 256-thread CTA per SM:\n", sms);
  for (int n : {1, 2, 4, 8, 12, 16}) {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(n * 8);
    cfg.blockDim = dim3(kThreads);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = unsigned(n), at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.attrs = at, cfg.numAttrs = 1;
    int clusters = 0;
    cudaError_t e = cudaOccupancyMaxActiveClusters(&clusters, stream_slice, &cfg);
    printf("  cluster %2d: %3d clusters (%3d CTAs)%s\n", n, clusters, clusters * n,
           e == cudaSuccess ? "" : cudaGetErrorString(e));
  }
  // 29.5 MB per pass; 10 buffers so that no pass finds its bytes in L2.
  const size_t bytes = size_t(5120) * 2880 * 2, n_buf = 10;
  const size_t n_vec = bytes / 16;
  uint4* w;
  unsigned* out;
  CK(cudaMalloc(&w, bytes * n_buf));
  CK(cudaMemset(w, 1, bytes * n_buf));
  CK(cudaMalloc(&out, 4096));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  struct V { int grid, cluster; };
  for (const V v : {V{sms, 1}, V{128, 1}, V{128, 16}, V{128, 8}, V{64, 8}, V{sms, 1}, V{128, 16}}) {
    const size_t per = (n_vec + v.grid - 1) / v.grid;
    auto launch = [&](int i) {
      cudaLaunchConfig_t cfg{};
      cfg.gridDim = dim3(v.grid);
      cfg.blockDim = dim3(kThreads);
      cfg.dynamicSmemBytes = smem;
      cudaLaunchAttribute at[1];
      at[0].id = cudaLaunchAttributeClusterDimension;
      at[0].val.clusterDim.x = unsigned(v.cluster), at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
      cfg.attrs = at, cfg.numAttrs = 1;
      return cudaLaunchKernelEx(&cfg, stream_slice, w + (i % n_buf) * n_vec, per, out);
    };
    for (int i = 0; i < 20; ++i) CK(launch(i));
    const int iters = 200;
    CK(cudaEventRecord(e0));
    for (int i = 0; i < iters; ++i) CK(launch(i));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double us = 1e3 * ms / iters;
    printf("grid %3d cluster %2d: %.2f us per 29.5 MB pass, %.0f GB/s\n", v.grid, v.cluster, us,
           double(bytes) / (us * 1e3));
  }
  return 0;
}
