// Small helpers of request.h: finish reason names (OpenAI spelling) and timing summaries.
#include "engine/request.h"

namespace mxs {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "unknown";
}

double RequestTimings::mean_tpot_s() const {
  if (token_times.size() < 2) return 0.0;
  return (token_times.back() - token_times.front()) / double(token_times.size() - 1);
}

}  // namespace mxs
