// Offline API for tools, benchmarks and tests: run a list of requests through an Engine, optionally at a
// bounded concurrency, stream their events to a callback (on the calling thread) and collect per-request
// results with timings (queue, TTFT, per-token, end).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace mxs {

struct OfflineResult {
  uint64_t id = 0;                 // engine request id (0 when rejected)
  std::vector<int32_t> tokens;     // generated, a final stop token included
  std::string text;                // detokenized, cut before a stop string
  FinishReason finish = FinishReason::kNone;
  std::string error;               // kError: why (a rejection at submission included)
  int32_t stop_token = -1;
  std::string stop_string;
  int num_prompt_tokens = 0;
  int num_cached_tokens = 0;
  int num_preemptions = 0;
  RequestTimings timings;
};

struct OfflineOptions {
  // Requests in flight at once (submitted in order, the next when one finishes); 0 = all at once.
  int max_in_flight = 0;
  // Every event, on the calling thread, with the index of its request in the input.
  std::function<void(size_t index, const TokenEvent& event)> on_event;
};

struct OfflineRun {
  std::vector<OfflineResult> results;  // in input order
  double wall_s = 0.0;                 // first submission to last final event
  EngineMetrics metrics;               // the engine's metrics at the end
  int64_t num_output_tokens() const;
  int64_t num_prompt_tokens() const;
};

// Blocks until every request has finished. A request the engine rejects gets finish = kError and the
// rejection message; the others still run.
OfflineRun run_offline(Engine& engine, std::vector<Request> requests, const OfflineOptions& options = {});

}  // namespace mxs
