// Per-CTA timeline records of the batch-1 decode kernels, for finding where a step's time goes between and inside
// kernels (what no event timer shows: when each CTA was placed, passed griddepcontrol.wait and ended). Compiled in
// only by a build configured with -DMXS_CTA_TRACE=ON (a separate build folder); every hook is empty otherwise.
// Record: 32 bytes {kernel << 24 | SM << 16 | CTA (linear, low 16 bits), t_mark - t_start (ns, 0 if unset: an
// optional point inside the kernel, mark()), t_start, t_wait, t_end} in %globaltimer
// nanoseconds, appended by thread 0 of each CTA at its end (one atomic on the buffer's count). Thread 0 keeps the
// stamps in shared memory, not registers: kernels at an occupancy cliff (o_proj at 80 registers, 3 CTAs per SM)
// keep their configuration in a trace build. Buffer: a 32-byte
// header {count, capacity} then the records; cuda/cta_trace.h binds it and writes the CSV that
// scripts/cta_trace.py reads. Each instrumented .cu has its own copy of the buffer pointer (no relocatable device
// code), bound through the function MXS_CTA_TRACE_BINDER defines there.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace mxs::cuda {

enum CtaTraceKernel : uint32_t {
  kTraceQkv = 1,        // qkv_rope (gemv_warp_kernel)
  kTraceAttention = 2,  // attention_decode_mma
  kTraceOProj = 3,      // o_proj + residual (gemv_stream_kernel)
  kTraceRouter = 4,     // moe_router_norm
  kTraceGateUp = 5,     // moe_gemv gate_up, one token
  kTraceDown = 6,       // moe_gemv down (split kernel)
  kTraceLmHead = 7,     // gemv_bf16_kernel (LM head + argmax)
};

struct CtaTraceRec {
  uint32_t meta, pad;
  uint64_t t_start, t_wait, t_end;
};

#ifdef MXS_CTA_TRACE
namespace {
__device__ CtaTraceRec* g_cta_trace_buf = nullptr;  // this translation unit's copy (see above)
}
__device__ __forceinline__ uint64_t cta_trace_clock() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ uint64_t* cta_trace_stamps() {
  __shared__ uint64_t s_stamps[3];
  return s_stamps;
}
struct CtaTrace {
  __device__ CtaTrace() {
    if (threadIdx.x == 0) cta_trace_stamps()[0] = cta_trace_clock(), cta_trace_stamps()[1] = cta_trace_stamps()[2] = 0;
  }
  __device__ void mark() {
    if (threadIdx.x == 0) cta_trace_stamps()[2] = cta_trace_clock();
  }
  __device__ void waited() {
    if (threadIdx.x == 0) cta_trace_stamps()[1] = cta_trace_clock();
  }
  __device__ void end(uint32_t kernel) const {
    CtaTraceRec* buf = g_cta_trace_buf;
    if (threadIdx.x != 0 || buf == nullptr) return;
    const uint64_t t2 = cta_trace_clock(), t0 = cta_trace_stamps()[0], t1 = cta_trace_stamps()[1];
    const uint64_t tm = cta_trace_stamps()[2];
    unsigned* hdr = reinterpret_cast<unsigned*>(buf);
    const unsigned i = atomicAdd(hdr, 1u);
    if (i >= hdr[1]) return;
    uint32_t sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    const uint32_t cta = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    buf[1 + i] =
        CtaTraceRec{kernel << 24 | (sm & 0xffu) << 16 | (cta & 0xffffu), tm ? uint32_t(tm - t0) : 0u, t0, t1, t2};
  }
};
#define MXS_CTA_TRACE_BINDER(name)                                       \
  void cta_trace_bind_##name(void* buf) {                                \
    cudaMemcpyToSymbol(g_cta_trace_buf, &buf, sizeof(buf));              \
  }
#else
struct CtaTrace {
  __device__ void waited() {}
  __device__ void mark() {}
  __device__ void end(uint32_t) const {}
};
#define MXS_CTA_TRACE_BINDER(name)
#endif

}  // namespace mxs::cuda
