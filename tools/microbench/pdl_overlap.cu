// Does a PDL successor's CTA become resident while its predecessor's CTAs still run? (docs/PERF.md, session 19)
// A: one grid of CTAs that spin 20 us (optionally calling griddepcontrol.launch_dependents first, optionally with
// 120 KB of shared memory); B: launched with programmatic stream serialization, stamps %globaltimer at entry and
// after griddepcontrol.wait. Prints, per variant and repeat, when B's CTAs entered and passed their wait relative
// to A's start (us). Measured on an H100: with the trigger, in a graph, B's CTAs enter 0.5-1 us after A starts
// (3-6 us with stream launches) and pass the wait ~0.5-0.8 us after A's last CTA ends; without it, at A's end.
// Build and run (sm_90): nvcc -O2 -arch=sm_90a -o pdl_overlap tools/microbench/pdl_overlap.cu && ./pdl_overlap
#include <cstdio>
#include <cstdint>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include "microbench.cuh"
__global__ void A(uint64_t* rec, int trigger, int spin_ns, int smem_touch) {
  extern __shared__ int s[];
  uint64_t t0 = gt();
  if (threadIdx.x == 0) rec[blockIdx.x * 2] = t0;
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (trigger) asm volatile("griddepcontrol.launch_dependents;");
  if (smem_touch) s[threadIdx.x] = threadIdx.x;
  while (gt() < t0 + spin_ns) {}
  if (threadIdx.x == 0) rec[blockIdx.x * 2 + 1] = gt();
}
__global__ void B(uint64_t* rec) {
  uint64_t t0 = gt();
  if (threadIdx.x == 0) rec[blockIdx.x * 2] = t0;
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0) rec[blockIdx.x * 2 + 1] = gt();
}
int main() {
  int sms; cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  uint64_t *ra, *rb; CK(cudaMalloc(&ra, 1 << 20)); CK(cudaMalloc(&rb, 1 << 20));
  CK(cudaFuncSetAttribute(A, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
  cudaStream_t st; CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  struct V { int trigger, smemA, gridA, gridB, graph; };
  V vs[] = {{1, 0, sms, sms, 0}, {0, 0, sms, sms, 0}, {1, 0, sms, sms, 1}, {1, 120 * 1024, sms, sms, 0},
            {1, 0, sms, 4 * sms, 0}, {1, 0, sms * 2, sms, 0}};
  for (const V& v : vs) {
    for (int rep = 0; rep < 3; ++rep) {
      auto launch = [&]() -> int {
        A<<<v.gridA, 128, v.smemA, st>>>(ra, v.trigger, 20000, v.smemA > 0);
        cudaLaunchConfig_t cfg{}; cfg.gridDim = dim3(v.gridB); cfg.blockDim = dim3(128); cfg.stream = st;
        cudaLaunchAttribute at[1]; at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1; cfg.attrs = at; cfg.numAttrs = 1;
        CK(cudaLaunchKernelEx(&cfg, B, rb));
        return 0;
      };
      if (v.graph) {
        cudaGraph_t g; cudaGraphExec_t ge;
        CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal)); if (launch()) return 1;
        CK(cudaStreamEndCapture(st, &g)); CK(cudaGraphInstantiate(&ge, g, 0)); CK(cudaGraphLaunch(ge, st));
      } else if (launch()) return 1;
      CK(cudaStreamSynchronize(st));
      std::vector<uint64_t> a(2 * v.gridA), b(2 * v.gridB);
      CK(cudaMemcpy(a.data(), ra, a.size() * 8, cudaMemcpyDeviceToHost));
      CK(cudaMemcpy(b.data(), rb, b.size() * 8, cudaMemcpyDeviceToHost));
      uint64_t a0 = ~0ull, a0max = 0, a1min = ~0ull, a1 = 0, b0 = ~0ull, b0max = 0, bw = ~0ull, bwmax = 0;
      for (int i = 0; i < v.gridA; ++i) a0 = std::min(a0, a[2*i]), a0max = std::max(a0max, a[2*i]), a1min = std::min(a1min, a[2*i+1]), a1 = std::max(a1, a[2*i+1]);
      for (int i = 0; i < v.gridB; ++i) b0 = std::min(b0, b[2*i]), b0max = std::max(b0max, b[2*i]), bw = std::min(bw, b[2*i+1]), bwmax = std::max(bwmax, b[2*i+1]);
      auto us = [&](uint64_t t) { return (double(t) - double(a0)) / 1000.0; };
      printf("trig %d smemA %6d gridA %3d gridB %3d graph %d | A start %.2f..%.2f end %.2f..%.2f | B entry %.2f..%.2f after-wait %.2f..%.2f us\n",
             v.trigger, v.smemA, v.gridA, v.gridB, v.graph, 0.0, us(a0max), us(a1min), us(a1), us(b0), us(b0max), us(bw), us(bwmax));
    }
  }
  return 0;
}
