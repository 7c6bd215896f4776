// Programmatic dependent launch (PDL, sm_90): a kernel launched with launch_pdl() may start while the previous
// kernel in the stream is still running. It must call griddep_wait() before it reads or writes any buffer that
// an earlier kernel produces or consumes; code before the wait may touch only constant data (weights, params),
// which is the point: a GEMV's weight loads and a table fill overlap the previous kernel's tail, and the
// launch latency between dependent kernels disappears. griddep_launch_dependents() lets the next kernel start
// launching once every CTA of this one has called it (or exited). Both are no-ops without PDL, so a kernel
// may also be launched the ordinary way. Captured into CUDA graphs as programmatic edges.
// Placement (H100, session 19: tools/microbench/pdl_overlap.cu and the CTA trace, kernels/cta_trace.cuh): once every
// CTA of the predecessor has called griddep_launch_dependents, the successor's CTAs are placed wherever registers,
// shared memory and threads allow, 0.5-1 us later inside a graph, while the predecessor still runs; at batch 1
// every decode kernel's CTAs are resident 2-12 us before their wait returns, and the wait returns 0.6-0.8 us after
// the predecessor's last CTA ends. (Session 12 had seen placement only at the predecessor's exits: its q/k/v
// filled every SM's registers.) Weight bytes the successor requests early compete with the predecessor's (an
// o_proj asking L2 for its next groups during the attention: o_proj -1 us, attention +0.9 us). What pays (H100, session 13, q/k/v's fused
// prologue): loading everything the predecessor does not write before the wait, so that one round trip follows it
// instead of a chain (1.95 -> 1.93 ms per batch-1 step), and not putting more weight bytes in flight ahead of that
// round trip than needed (half of the first group after it: 1.937 -> 1.924 ms); the same in the one-token MoE down GEMV
// (4 of 9 k-tiles before the wait, session 14: 1.93 -> 1.91 ms). Commands and commits: docs/PERF.md, sessions 13-14.
// Invariant: every kernel calls griddep_launch_dependents() only after its own griddep_wait(). So when a kernel
// runs, its predecessor has at least passed its wait, i.e. everything queued before the predecessor (the
// step's input copies, the kernels two or more back) has completed: such data (e.g. the route index in
// moe_gemv's down launch) may also be read before the wait. Only the immediate predecessor's outputs, and any
// buffer it may still read, need the wait.
#pragma once
#include <cstdlib>

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"

namespace mxs::cuda {

__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void griddep_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" :::); }

// kernel<<<grid, block, smem, stream>>>(args...) with the programmatic-serialization attribute; with a cluster
// shape other than 1 x 1 x 1 also as thread-block clusters of that shape (grid a multiple of it).
template <typename... KArgs, typename... Args>
void launch_pdl_cluster(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                        dim3 cluster, Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n = 0;
  static const bool disabled = std::getenv("MXS_NO_PDL") != nullptr;  // debugging: ordinary launches
  if (!disabled) {
    attr[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (cluster.x * cluster.y * cluster.z > 1) {
    attr[n].id = cudaLaunchAttributeClusterDimension;
    attr[n].val.clusterDim.x = cluster.x, attr[n].val.clusterDim.y = cluster.y, attr[n].val.clusterDim.z = cluster.z;
    ++n;
  }
  cfg.attrs = attr;
  cfg.numAttrs = n;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  launch_pdl_cluster(kernel, grid, block, smem, stream, dim3(1, 1, 1), std::forward<Args>(args)...);
}

}  // namespace mxs::cuda
