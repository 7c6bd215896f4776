// What small host-to-device copies cost on the GPU's timeline (docs/PERF.md, session 19): a kernel spins 20 us
// (so that everything after it is queued before the GPU gets there), then N copies of 256 bytes from pinned
// memory, then a kernel stamps %globaltimer; printed: first kernel's end -> second kernel's start (us). Mode 5: a
// plain kernel + a D2H copy + one H2D copy (a step's sampling, results and next inputs). Measured on an H100:
// 1.8 us with no copy, +2.4 us per copy (7 copies: 18-20 us).
// Build and run: nvcc -O2 -arch=sm_90a -o small_copies tools/microbench/small_copies.cu && ./small_copies
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>
#include "microbench.cuh"
__global__ void stamp(uint64_t* rec, int i) { if (threadIdx.x == 0) rec[i] = gt(); }
__global__ void spin(uint64_t* rec, int i) { uint64_t t0 = gt(); while (gt() < t0 + 20000) {} if (threadIdx.x == 0) rec[i] = gt(); }
int main() {
  uint64_t* rec; CK(cudaMalloc(&rec, 4096));
  char* h; CK(cudaHostAlloc(&h, 1 << 20, cudaHostAllocDefault));
  char* d; CK(cudaMalloc(&d, 1 << 20));
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  uint64_t hr[8];
  for (int mode = 0; mode < 6; ++mode) {
    for (int rep = 0; rep < 4; ++rep) {
      // spin first so that all later work is queued before the GPU reaches it (host out of the loop)
      spin<<<1, 32, 0, st>>>(rec, 0);
      int n = 0;
      if (mode == 1) n = 1; if (mode == 2) n = 3; if (mode == 3) n = 7; if (mode == 4) n = 9;
      for (int i = 0; i < n; ++i) CK(cudaMemcpyAsync(d + i * 4096, h + i * 4096, 256, cudaMemcpyHostToDevice, st));
      if (mode == 5) {  // a plain kernel + a D2H copy + an H2D copy (sampling, results, next inputs)
        stamp<<<1, 32, 0, st>>>(rec, 3);
        CK(cudaMemcpyAsync(h + 65536, d + 65536, 256, cudaMemcpyDeviceToHost, st));
        CK(cudaMemcpyAsync(d, h, 2048, cudaMemcpyHostToDevice, st));
      }
      stamp<<<1, 32, 0, st>>>(rec, 1);
      CK(cudaStreamSynchronize(st));
      CK(cudaMemcpy(hr, rec, 64, cudaMemcpyDeviceToHost));
      if (rep > 0) printf("mode %d (%d H2D copies%s): spin end -> next kernel %.2f us\n", mode, n,
                          mode == 5 ? ", + kernel + D2H + H2D" : "", (double(hr[1]) - double(hr[0])) / 1e3);
    }
  }
  return 0;
}
