// How long does a kernel boundary take in a PDL chain, griddepcontrol.wait vs a counter the predecessor's CTAs
// release and the successor's CTAs poll (acquire)? A graph of N chained kernels, each streaming MB megabytes of
// its own weights (8 x 16 B per thread requested before the wait, like the decode GEMVs) over G CTAs of 256
// threads; per variant the graph's time / N. Modes: 0 griddepcontrol.wait; 1 poll the predecessor's counter
// (thread 0, ld.acquire.gpu, then a CTA barrier), no sleep; 2 the same with __nanosleep(64) between polls;
// 3 griddepcontrol.wait but every CTA also releases its counter (the signal's own cost).
// Build and run (sm_90): nvcc -O2 -arch=sm_90a -o flag_handoff tools/microbench/flag_handoff.cu && ./flag_handoff
#include <cstdio>
#include <cstdint>
#include <vector>
#include <cuda_runtime.h>
#include "microbench.cuh"

__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void red_release(unsigned* p) {
  asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(p) : "memory");
}
// 16 bytes past L1 (src/cuda/kernels/device_math.cuh's ldg_stream without its L2 policy: measured so, session 20).
__device__ __forceinline__ uint4 ldg_no_l1(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__global__ void __launch_bounds__(256) stage(const uint4* w, size_t vecs, unsigned* counters, int k, int mode,
                                             unsigned* out) {
  const size_t stride = size_t(gridDim.x) * 256, first = size_t(blockIdx.x) * 256 + threadIdx.x;
  const uint4* wk = w + size_t(k) * vecs;
  uint4 r[8];
#pragma unroll
  for (int i = 0; i < 8; ++i)
    r[i] = first + i * stride < vecs ? ldg_no_l1(wk + first + i * stride) : make_uint4(0, 0, 0, 0);
  if (mode == 0 || mode == 3 || k == 0) {
    asm volatile("griddepcontrol.wait;" ::: "memory");
  } else {
    if (threadIdx.x == 0) {
      const unsigned* c = counters + k - 1;
      while (ld_acquire(c) < gridDim.x)
        if (mode == 2) __nanosleep(64);
    }
    __syncthreads();
  }
  asm volatile("griddepcontrol.launch_dependents;");
  unsigned acc = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) acc ^= r[i].x ^ r[i].y ^ r[i].z ^ r[i].w;
  for (size_t v = first + 8 * stride; v < vecs; v += 8 * stride) {
#pragma unroll
    for (int i = 0; i < 8; ++i) r[i] = v + i * stride < vecs ? ldg_no_l1(wk + v + i * stride) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc ^= r[i].x ^ r[i].y ^ r[i].z ^ r[i].w;
  }
  if (acc == 0x12345678u) out[blockIdx.x] = acc;  // (keeps the loads)
  __syncthreads();
  if (threadIdx.x == 0 && mode != 0) red_release(counters + k);
}

int main() {
  const int N = 144;
  const size_t max_mb = 24;
  const size_t max_vecs = max_mb * (1 << 20) / 16;
  uint4* w;
  unsigned *counters, *out;
  CK(cudaMalloc(&w, N * max_vecs * 16));
  CK(cudaMemset(w, 1, N * max_vecs * 16));
  CK(cudaMalloc(&counters, N * 4));
  CK(cudaMalloc(&out, 1 << 16));
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  struct V { int mb_x10, grid; };
  const V vs[] = {{0, 132}, {0, 264}, {0, 900}, {200, 132}, {200, 264}, {200, 900}, {60, 132}};
  printf("| MB | CTAs | pdl wait us/kernel | poll | poll+sleep64 | pdl wait + release |\n|---|---|---|---|---|---|\n");
  for (const V& v : vs) {
    const size_t vecs = std::max<size_t>(size_t(v.mb_x10) * (1 << 20) / 160, 1);
    double us[4];
    for (int mode = 0; mode < 4; ++mode) {
      cudaGraph_t g;
      cudaGraphExec_t ge;
      CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      CK(cudaMemsetAsync(counters, 0, N * 4, st));
      for (int k = 0; k < N; ++k) {
        cudaLaunchConfig_t cfg{};
        cfg.gridDim = dim3(v.grid);
        cfg.blockDim = dim3(256);
        cfg.stream = st;
        cudaLaunchAttribute at[1];
        at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = k == 0 ? 0 : 1;
        CK(cudaLaunchKernelEx(&cfg, stage, (const uint4*)w, vecs, counters, k, mode, out));
      }
      CK(cudaStreamEndCapture(st, &g));
      CK(cudaGraphInstantiate(&ge, g, 0));
      for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(e0, st));
      const int reps = 20;
      for (int i = 0; i < reps; ++i) CK(cudaGraphLaunch(ge, st));
      CK(cudaEventRecord(e1, st));
      CK(cudaStreamSynchronize(st));
      float ms;
      CK(cudaEventElapsedTime(&ms, e0, e1));
      us[mode] = ms * 1000.0 / reps / N;
      CK(cudaGraphExecDestroy(ge));
      CK(cudaGraphDestroy(g));
    }
    printf("| %.1f | %d | %.2f | %.2f | %.2f | %.2f |\n", v.mb_x10 / 10.0, v.grid, us[0], us[1], us[2], us[3]);
  }
  return 0;
}
