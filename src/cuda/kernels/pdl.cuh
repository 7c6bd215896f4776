// Programmatic dependent launch (PDL, sm_90): a kernel launched with launch_pdl() may start while the previous
// kernel in the stream is still running. It must call griddep_wait() before it reads or writes any buffer that
// an earlier kernel produces or consumes; code before the wait may touch only constant data (weights, params),
// which is the point: a GEMV's weight loads and a table fill overlap the previous kernel's tail, and the
// launch latency between dependent kernels disappears. griddep_launch_dependents() lets the next kernel start
// launching once every CTA of this one has called it (or exited). Both are no-ops without PDL, so a kernel
// may also be launched the ordinary way. Captured into CUDA graphs as programmatic edges.
#pragma once
#include <cstdlib>

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace mxs::cuda {

__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" :::); }

// kernel<<<grid, block, smem, stream>>>(args...) with the programmatic-serialization attribute.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  static const bool disabled = std::getenv("MXS_NO_PDL") != nullptr;  // debugging: ordinary launches
  cfg.attrs = attr;
  cfg.numAttrs = disabled ? 0 : 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace mxs::cuda
