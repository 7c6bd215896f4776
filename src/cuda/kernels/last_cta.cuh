// "Last CTA to finish does the epilogue": an arrival counter per unit of work (a row, a (token, kv head), a
// kernel). Every thread calls last_cta_arrive after its global stores; it returns true in every thread of the
// CTA that arrived last (and that CTA may read what the others stored, through L2: __ldcg). One fence, in
// thread 0 after the barrier, publishes the whole CTA's stores (the barrier orders them before it and the
// fence is cumulative); a fence in every thread made all of them wait on the memory barrier (ncu: the largest
// stall of the MoE GEMVs).
#pragma once

namespace mxs::cuda {

__device__ __forceinline__ bool last_cta_arrive(unsigned* counter, unsigned n_arrivals) {
  __shared__ bool s_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    s_last = atomicAdd(counter, 1u) == n_arrivals - 1;
  }
  __syncthreads();
  const bool last = s_last;
  if (last) __threadfence();  // acquire: the other CTAs' stores
  return last;
}

}  // namespace mxs::cuda
