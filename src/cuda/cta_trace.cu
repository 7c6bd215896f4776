// See cta_trace.h.
#include "cuda/cta_trace.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/cta_trace.cuh"

namespace mxs::cuda {

#ifdef MXS_CTA_TRACE
// One binder per instrumented translation unit (MXS_CTA_TRACE_BINDER there).
void cta_trace_bind_qkv_rope(void*);
void cta_trace_bind_gemv_bf16(void*);
void cta_trace_bind_attention_decode_mma(void*);
void cta_trace_bind_moe_router(void*);
void cta_trace_bind_moe_gemv_mxfp4(void*);
namespace {
void bind_all(void* buf) {
  cta_trace_bind_qkv_rope(buf);
  cta_trace_bind_gemv_bf16(buf);
  cta_trace_bind_attention_decode_mma(buf);
  cta_trace_bind_moe_router(buf);
  cta_trace_bind_moe_gemv_mxfp4(buf);
  CUDA_CHECK(cudaDeviceSynchronize());
}
}  // namespace
bool cta_trace_compiled() { return true; }
#else
namespace {
void bind_all(void*) {}
}  // namespace
bool cta_trace_compiled() { return false; }
#endif

CtaTraceCapture::CtaTraceCapture(size_t capacity) : capacity_(capacity) {
  MXS_CHECK(cta_trace_compiled(), "CTA trace: this build has no trace hooks (configure with -DMXS_CTA_TRACE=ON)");
  CUDA_CHECK(cudaMalloc(&buf_, (capacity_ + 1) * sizeof(CtaTraceRec)));
  const unsigned hdr[2] = {0u, unsigned(capacity_)};
  CUDA_CHECK(cudaMemset(buf_, 0, sizeof(CtaTraceRec)));
  CUDA_CHECK(cudaMemcpy(buf_, hdr, sizeof(hdr), cudaMemcpyHostToDevice));
  bind_all(buf_);
}

CtaTraceCapture::~CtaTraceCapture() {
  if (buf_ == nullptr) return;
  bind_all(nullptr);
  cudaFree(buf_);
}

size_t CtaTraceCapture::write_csv(const std::string& path) {
  CUDA_CHECK(cudaDeviceSynchronize());
  bind_all(nullptr);
  unsigned hdr[2] = {0u, 0u};
  CUDA_CHECK(cudaMemcpy(hdr, buf_, sizeof(hdr), cudaMemcpyDeviceToHost));
  const size_t n = std::min<size_t>(hdr[0], capacity_);
  if (hdr[0] > capacity_) MXS_LOG_WARN("CTA trace: %u records, kept the first %zu", hdr[0], capacity_);
  std::vector<CtaTraceRec> recs(n);
  CUDA_CHECK(cudaMemcpy(recs.data(), static_cast<CtaTraceRec*>(buf_) + 1, n * sizeof(CtaTraceRec),
                        cudaMemcpyDeviceToHost));
  uint64_t t0 = ~0ull;
  for (const CtaTraceRec& r : recs) t0 = std::min(t0, r.t_start);
  FILE* f = std::fopen(path.c_str(), "w");
  MXS_CHECK(f != nullptr, "CTA trace: cannot write " + path);
  std::fprintf(f, "kernel,cta,sm,t_start,t_wait,t_end,t_mark\n");
  for (const CtaTraceRec& r : recs)
    std::fprintf(f, "%u,%u,%u,%llu,%lld,%llu,%lld\n", r.meta >> 24, r.meta & 0xffffu, (r.meta >> 16) & 0xffu,
                 (unsigned long long)(r.t_start - t0), r.t_wait ? (long long)(r.t_wait - t0) : -1LL,
                 (unsigned long long)(r.t_end - t0), r.pad ? (long long)(r.t_start - t0 + r.pad) : -1LL);
  std::fclose(f);
  cudaFree(buf_);
  buf_ = nullptr;
  return n;
}

}  // namespace mxs::cuda
