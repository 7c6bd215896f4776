// run_offline: submit, keep max_in_flight requests going, gather events into results (offline.h).
#include "engine/offline.h"

#include <memory>
#include <unordered_map>

#include "common/error.h"
#include "common/timer.h"

namespace mxs {

int64_t OfflineRun::num_output_tokens() const {
  int64_t n = 0;
  for (const auto& r : results) n += int64_t(r.tokens.size());
  return n;
}

int64_t OfflineRun::num_prompt_tokens() const {
  int64_t n = 0;
  for (const auto& r : results) n += r.num_prompt_tokens;
  return n;
}

OfflineRun run_offline(Engine& engine, std::vector<Request> requests, const OfflineOptions& options) {
  OfflineRun run;
  run.results.resize(requests.size());
  auto events = std::make_shared<EventQueue>();
  std::unordered_map<uint64_t, size_t> index_of;  // engine id -> input index
  const size_t limit = options.max_in_flight > 0 ? size_t(options.max_in_flight) : requests.size();
  size_t next = 0, in_flight = 0;
  const double start = now_seconds();

  auto submit_more = [&] {
    while (next < requests.size() && in_flight < limit) {
      const size_t i = next++;
      OfflineResult& r = run.results[i];
      r.num_prompt_tokens = int(requests[i].prompt.size());
      try {
        r.id = engine.submit(std::move(requests[i]), events);
        index_of[r.id] = i;
        ++in_flight;
      } catch (const Error& e) {
        r.finish = FinishReason::kError;
        r.error = e.what();
      }
    }
  };

  submit_more();
  while (in_flight > 0) {
    TokenEvent ev;
    events->pop(&ev);
    const auto it = index_of.find(ev.request_id);
    if (it == index_of.end()) continue;
    const size_t i = it->second;
    OfflineResult& r = run.results[i];
    r.tokens.insert(r.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
    r.text += ev.text;
    if (options.on_event) options.on_event(i, ev);
    if (ev.finished()) {
      r.finish = ev.finish;
      r.error = ev.error;
      r.stop_token = ev.stop_token;
      r.stop_string = ev.stop_string;
      r.num_prompt_tokens = ev.num_prompt_tokens;
      r.num_cached_tokens = ev.num_cached_tokens;
      r.num_preemptions = ev.num_preemptions;
      r.timings = std::move(ev.timings);
      --in_flight;
      submit_more();
    }
  }
  run.wall_s = now_seconds() - start;
  run.metrics = engine.metrics();
  return run;
}

}  // namespace mxs
