// Shared by the hand-built microbenchmarks in this folder (each a single nvcc command in its header): the error
// check of main()'s CUDA calls and the %globaltimer clock (ns) that timestamps CTAs.
#pragma once
#include <cstdint>
#include <cstdio>

#include <cuda_runtime.h>

// Returns 1 from main() with the file, line and CUDA error when a call fails.
#define CK(x)                                                                         \
  do {                                                                                \
    cudaError_t e = (x);                                                              \
    if (e != cudaSuccess) {                                                           \
      printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));                \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

__device__ __forceinline__ uint64_t gt() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
