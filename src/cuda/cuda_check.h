// CUDA error handling for the host side of the CUDA backend: CUDA_CHECK(call) throws mxs::Error naming the
// call, file and line; CUDA_CHECK_LAUNCH() checks the last kernel launch the same way. current_device_sms().
#pragma once
#include <cuda_runtime.h>

#include "common/error.h"

namespace mxs::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw Error(strfmt("CUDA error %s (%s) in %s at %s:%d", cudaGetErrorName(err), cudaGetErrorString(err), what,
                     file, line));
}

}  // namespace mxs::cuda

#define CUDA_CHECK(call)                                                            \
  do {                                                                              \
    const cudaError_t mxs_cuda_err_ = (call);                                       \
    if (mxs_cuda_err_ != cudaSuccess)                                               \
      ::mxs::cuda::throw_cuda_error(mxs_cuda_err_, #call, __FILE__, __LINE__);      \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace mxs::cuda {

// The current device's SM count (the launchers' persistent and wave-sized grids).
inline int current_device_sms() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  return n;
}

}  // namespace mxs::cuda
