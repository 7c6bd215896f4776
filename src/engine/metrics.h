// Engine counters and gauges (a snapshot taken on the engine thread after each step), for the server's
// /metrics endpoint, the benchmarks and tests. Counters only grow; gauges are the state after the step.
#pragma once
#include <cstdint>

namespace mxs {

struct EngineMetrics {
  // Gauges.
  int num_running = 0;
  int num_waiting = 0;
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;     // referenced by a sequence (evictable cached blocks count as free)
  double kv_usage = 0.0;      // kv_blocks_used / kv_blocks_total
  double kv_usage_peak = 0.0;  // highest kv_usage of any step (after scheduling it)
  // kv_blocks_* and kv_usage describe the full-attention group (every layer with one group); the
  // sliding-window group, when the runner has one (0 otherwise):
  int kv_sliding_blocks_total = 0;
  int kv_sliding_blocks_used = 0;
  // Counters.
  uint64_t requests_added = 0;
  uint64_t requests_finished_stop = 0;
  uint64_t requests_finished_length = 0;
  uint64_t requests_aborted = 0;
  uint64_t requests_failed = 0;
  uint64_t prompt_tokens = 0;      // prompt tokens of added requests
  uint64_t generation_tokens = 0;  // sampled tokens
  uint64_t computed_tokens = 0;    // tokens run through the model: prefill chunks, decodes, recomputes
  uint64_t prefix_query_tokens = 0;  // tokens looked up in the prefix cache at admission (re-admissions too)
  uint64_t prefix_hit_tokens = 0;    // of which served from the cache
  uint64_t preemptions = 0;
  uint64_t steps = 0;
  uint64_t overlapped_steps = 0;   // async scheduling: steps submitted before the previous step's samples came back
  double step_seconds = 0.0;       // summed wall time of runner steps (scheduling included)

  double prefix_hit_rate() const { return prefix_query_tokens ? double(prefix_hit_tokens) / prefix_query_tokens : 0.0; }
  double mean_step_ms() const { return steps ? 1e3 * step_seconds / double(steps) : 0.0; }
};

}  // namespace mxs
