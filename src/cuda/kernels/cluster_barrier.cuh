// The split cluster barrier of a kernel whose CTAs write into each other's shared memory (distributed shared
// memory, sm_90): every CTA arrives at its top and waits just before its first remote write, so that no CTA writes
// into a CTA that has not started yet (compute-sanitizer racecheck flags such writes as invalid). The wait comes
// long after every CTA of the cluster started, so it costs nothing in practice. Users: moe_router_norm,
// moe_combine's cluster norm, the decode attention's cluster merge.
#pragma once

namespace mxs::cuda {

__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); }

}  // namespace mxs::cuda
