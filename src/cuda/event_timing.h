// CUDA-event timing for the benchmarks and the tests' timing prints: one helper instead of a copy per file.
#pragma once
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace mxs::cuda {

// Mean milliseconds per call of fn(i) over i = 0 .. iters - 1, after `warmup` untimed calls fn(0 .. warmup - 1);
// events on the default stream (the callers launch there).
template <typename Fn>
double mean_ms_per_call(int warmup, int iters, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  CUDA_CHECK(cudaEventRecord(e0));
  for (int i = 0; i < iters; ++i) fn(i);
  CUDA_CHECK(cudaEventRecord(e1));
  CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return double(ms) / iters;
}

}  // namespace mxs::cuda
