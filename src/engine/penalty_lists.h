// The distinct token ids the sampling penalties read (cpu/sampler.h steps 1-2), kept per sequence across steps so
// that a step costs only the tokens it adds: the repetition penalty's distinct ids of prompt + output, and the
// frequency / presence penalties' distinct output ids with their counts. A runner that samples on the device
// (CudaRunner) uploads these lists every step; rebuilt from the whole history each step they cost O(prompt + output)
// hash operations per sequence (a 4k-token prompt at batch 64: ~250k per step).
// Header-only: the CUDA runner (which cannot link the engine library) and the engine's tests both use it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace mxs {

class PenaltyLists {
 public:
  struct Lists {
    std::span<const int32_t> rep_ids;     // distinct ids of prompt + output (empty unless asked)
    std::span<const int32_t> out_ids;     // distinct output ids (empty unless asked)
    std::span<const int32_t> out_counts;  // their counts, parallel to out_ids
  };

  // The lists for sequence seq_id whose history is prompt + output; ids outside [0, vocab) are left out. An entry
  // extends itself when the history extends what it last saw (same prompt, output longer or equal), and is rebuilt
  // otherwise (another sequence under the same id, a history cut back, other lists asked for). The spans stay valid
  // until the next update() of the same sequence or end_step().
  Lists update(uint64_t seq_id, std::span<const int32_t> prompt, std::span<const int32_t> output, bool want_rep,
               bool want_out, int vocab) {
    Entry& e = entries_[seq_id];
    e.touched = true;
    if (!e.extends(prompt, output, want_rep, want_out, vocab)) {
      e = Entry{};
      e.touched = true, e.want_rep = want_rep, e.want_out = want_out, e.vocab = vocab;
      e.prompt_len = prompt.size();
      e.prompt_first = prompt.empty() ? -1 : prompt.front();
      e.prompt_last = prompt.empty() ? -1 : prompt.back();
      if (want_rep)
        for (int32_t id : prompt) e.add_rep(id);
    }
    for (size_t i = e.output_len; i < output.size(); ++i) {
      if (want_rep) e.add_rep(output[i]);
      if (want_out) e.add_out(output[i]);
    }
    e.output_len = output.size();
    e.output_last = output.empty() ? -1 : output.back();
    return Lists{e.rep_ids, e.out_ids, e.out_counts};
  }

  // Forgets the sequences no update() has touched since the previous end_step() (finished, aborted or not scheduled:
  // one that comes back is rebuilt).
  void end_step() {
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (!it->second.touched) {
        it = entries_.erase(it);
      } else {
        it->second.touched = false;
        ++it;
      }
    }
  }

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    bool touched = false, want_rep = false, want_out = false;
    int vocab = 0;
    size_t prompt_len = 0, output_len = 0;
    int32_t prompt_first = -1, prompt_last = -1, output_last = -1;
    std::vector<int32_t> rep_ids;
    std::unordered_set<int32_t> rep_seen;
    std::vector<int32_t> out_ids, out_counts;
    std::unordered_map<int32_t, size_t> out_index;  // id -> its position in out_ids

    // The history extends the one this entry saw (checked at its ends: sequence ids are not reused by the engine,
    // so this guards a caller's mistake, not a collision it must resolve exactly).
    bool extends(std::span<const int32_t> prompt, std::span<const int32_t> output, bool rep, bool out, int v) const {
      if (rep != want_rep || out != want_out || v != vocab || prompt.size() != prompt_len) return false;
      if (!prompt.empty() && (prompt.front() != prompt_first || prompt.back() != prompt_last)) return false;
      if (output.size() < output_len) return false;
      return output_len == 0 || output[output_len - 1] == output_last;
    }
    bool in_vocab(int32_t id) const { return id >= 0 && id < vocab; }
    void add_rep(int32_t id) {
      if (in_vocab(id) && rep_seen.insert(id).second) rep_ids.push_back(id);
    }
    void add_out(int32_t id) {
      if (!in_vocab(id)) return;
      const auto [it, added] = out_index.emplace(id, out_ids.size());
      if (added) {
        out_ids.push_back(id);
        out_counts.push_back(1);
      } else {
        ++out_counts[it->second];
      }
    }
  };
  std::unordered_map<uint64_t, Entry> entries_;
};

}  // namespace mxs
