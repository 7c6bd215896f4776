// Drives an EngineCore step by step over a scripted workload (arrival step, optional cancel step per
// request) and collects every request's events, checking invariants after each step.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "engine/engine_core.h"

namespace mxs::testing {

struct WorkItem {
  Request request;
  int arrive_step = 0;
  int cancel_step = -1;  // -1: never
};

struct ItemResult {
  std::vector<int32_t> tokens;
  std::string text;
  TokenEvent final_event;
  int num_final_events = 0;
  int num_events_after_final = 0;
  std::vector<std::string> text_deltas;
};

struct DriveResult {
  std::vector<ItemResult> items;
  EngineMetrics metrics;
  int steps = 0;
};

inline DriveResult drive(EngineCore& core, const std::vector<WorkItem>& work, int max_steps = 200000) {
  DriveResult out;
  out.items.resize(work.size());
  auto queue = std::make_shared<EventQueue>();
  std::map<uint64_t, size_t> index_of;
  size_t added = 0;
  auto pending_arrivals = [&] {
    for (const auto& w : work)
      if (w.arrive_step >= out.steps) return true;
    return false;
  };
  while ((pending_arrivals() || core.has_work()) && out.steps < max_steps) {
    for (size_t i = 0; i < work.size(); ++i) {
      if (work[i].arrive_step == out.steps) {
        core.add(i + 1, work[i].request, queue);
        index_of[i + 1] = i;
        ++added;
      }
      if (work[i].cancel_step == out.steps) core.abort(i + 1);
    }
    core.step();
    core.check_invariants();
    core.deliver_events();
    for (TokenEvent& ev : queue->drain()) {
      ItemResult& r = out.items[index_of.at(ev.request_id)];
      if (r.num_final_events > 0) ++r.num_events_after_final;
      r.tokens.insert(r.tokens.end(), ev.token_ids.begin(), ev.token_ids.end());
      r.text += ev.text;
      if (!ev.text.empty()) r.text_deltas.push_back(ev.text);
      if (ev.finished()) {
        ++r.num_final_events;
        r.final_event = std::move(ev);
      }
    }
    ++out.steps;
  }
  EXPECT_LT(out.steps, max_steps) << "the workload did not drain";
  EXPECT_EQ(added, work.size());
  out.metrics = core.metrics();
  return out;
}

}  // namespace mxs::testing
