// Host side of the per-CTA timeline trace (kernels/cta_trace.cuh): a build with -DMXS_CTA_TRACE=ON records one
// entry per CTA of the batch-1 decode kernels while a buffer is bound. `bench decode` takes two traced steps when
// MXS_CTA_TRACE_OUT=FILE is set; scripts/cta_trace.py turns the CSV into per-layer phase tables.
#pragma once
#include <string>

namespace mxs::cuda {

// Whether this build has the trace hooks.
bool cta_trace_compiled();

// Records of the CTAs that end while a capture is open (at most `capacity`), written as CSV on close.
class CtaTraceCapture {
 public:
  explicit CtaTraceCapture(size_t capacity);
  ~CtaTraceCapture();
  CtaTraceCapture(const CtaTraceCapture&) = delete;
  CtaTraceCapture& operator=(const CtaTraceCapture&) = delete;
  // Unbinds the buffer (after the device is idle) and writes `kernel,cta,sm,t_start,t_wait,t_end,t_mark` rows,
  // times in ns from the earliest start (t_wait / t_mark -1: not reached / not marked). Returns the number of
  // records (a warning is logged if the buffer overflowed).
  size_t write_csv(const std::string& path);

 private:
  void* buf_ = nullptr;
  size_t capacity_;
};

}  // namespace mxs::cuda
