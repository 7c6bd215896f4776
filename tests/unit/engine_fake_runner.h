// Test doubles for the engine tests: a deterministic FakeRunner that checks the paged-KV contract, and a
// FakeTokenizer with a tiny made-up vocabulary.
//
// FakeRunner keeps its own "KV" per physical slot: the (token, position) written there. Each step it
// writes the new tokens through the sequence's block table, then reads back the whole context
// [0, context_len) through the table and checks that it is the sequence's own history (prompt + output
// tokens from the SequenceStep). Any block-manager or scheduler bug (a shared block overwritten, a stale
// table, a wrong position, a block freed while in use and reused) shows up as a violation, and also
// changes the sampled token: the next token is a hash of the tokens READ from the KV, so outputs depend on
// the exact context the table exposes.
//
// With window > 0 it also plays the sliding-window layers: each step reads the window positions
// [sliding_window_start(first new position, window), context_len) back and hashes the last token's window
// into the sample.
// With num_sliding_blocks > 0 (two KV groups) those reads and the writes go through sliding_block_table
// into a separate store: an entry the window reads must be valid, released entries (kNoBlock) are never
// touched, and a sequence never holds more than ceil((window + n) / block_size) + 1 sliding blocks in a step
// of n new tokens. With num_sliding_blocks == 0 the same positions are read through block_table, so a run
// with one group and a run with two groups must produce identical tokens.
#pragma once
#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/model_runner.h"
#include "text/special_tokens.h"
#include "text/tokenizer.h"

namespace mxs::testing {

class FakeRunner : public ModelRunner {
 public:
  static constexpr int kTokenRange = 1000;  // generated tokens are in [1, kTokenRange] unless a stop

  FakeRunner(int block_size, int num_blocks, int num_sliding_blocks = 0, int window = 0)
      : layout_{block_size, num_blocks, num_sliding_blocks} {
    config_.vocab_size = 201088;
    config_.max_position_embeddings = 1 << 16;
    config_.sliding_window = window;
    kv_.assign(size_t(block_size) * size_t(num_blocks), Slot{});
    sliding_kv_.assign(size_t(block_size) * size_t(num_sliding_blocks), Slot{});
  }

  const ModelConfig& config() const override { return config_; }
  KvCacheLayout kv_layout() const override { return layout_; }
  std::string name() const override { return "fake"; }

  // One in `stop_period` samples (by hash) is <|return|>; 0 = never.
  int stop_period = 0;
  // A sequence whose history contains this token gets ok = false.
  int32_t fail_token = -1;
  // Sleep per step (threaded tests that need a request to still be running).
  int sleep_us = 0;

  // Observations.
  std::vector<std::string> violations;
  std::map<uint64_t, int64_t> tokens_computed;  // per seq_id, all steps
  int max_step_tokens = 0;
  int max_step_seqs = 0;
  int max_sliding_live = 0;  // most sliding blocks one sequence held in one step (two groups)
  int64_t steps = 0;
  std::vector<std::vector<std::pair<uint64_t, int>>> step_log;  // per step: (seq_id, num_tokens)

  void step(const StepBatch& batch, StepOutput* out) override {
    ++steps;
    if (sleep_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    MXS_CHECK(batch.tokens.size() == batch.positions.size(), "tokens/positions size mismatch");
    max_step_tokens = std::max(max_step_tokens, int(batch.tokens.size()));
    max_step_seqs = std::max(max_step_seqs, int(batch.seqs.size()));
    std::vector<std::pair<uint64_t, int>> log;
    std::set<int64_t> written, sliding_written;  // slots written this step: no two sequences may share one
    std::set<uint64_t> ids;
    int32_t expected_offset = 0;
    for (const SequenceStep& s : batch.seqs) {
      log.emplace_back(s.seq_id, s.num_tokens);
      if (!ids.insert(s.seq_id).second) violate(s, "sequence twice in one batch");
      if (s.token_offset != expected_offset) violate(s, "token_offset not contiguous");
      expected_offset += s.num_tokens;
      if (s.num_tokens < 1 || s.context_len < s.num_tokens) violate(s, "bad num_tokens/context_len");
      if (int64_t(s.block_table.size()) * layout_.block_size < s.context_len) violate(s, "block table too short");
      for (int32_t b : s.block_table)
        if (b < 0 || b >= layout_.num_blocks) violate(s, "block id out of range");
      if (two_groups()) check_sliding_table(s);
      else if (!s.sliding_block_table.empty()) violate(s, "sliding table without a sliding group");
      const std::vector<int32_t> history = history_of(s);
      if (int(history.size()) < s.context_len) violate(s, "context_len beyond the sequence's tokens");
      if (s.sample && int(history.size()) != s.context_len) violate(s, "sample before the last token");
      if (!violations.empty()) continue;
      for (int i = 0; i < s.num_tokens; ++i) {
        const int32_t pos = batch.positions[size_t(s.token_offset + i)];
        const int32_t token = batch.tokens[size_t(s.token_offset + i)];
        if (pos != s.context_len - s.num_tokens + i) violate(s, "positions not contiguous");
        if (token != history[size_t(pos)]) violate(s, "new token differs from the sequence's history");
        const int64_t slot = slot_of(s, pos);
        if (!written.insert(slot).second) violate(s, "two writes to one KV slot in one step");
        kv_[size_t(slot)] = Slot{token, pos};
        if (two_groups()) {
          const int64_t sslot = sliding_slot_of(s, pos);
          if (!sliding_written.insert(sslot).second) violate(s, "two writes to one sliding KV slot in one step");
          sliding_kv_[size_t(sslot)] = Slot{token, pos};
        }
      }
      tokens_computed[s.seq_id] += s.num_tokens;
    }
    expected_offset == int32_t(batch.tokens.size()) ? void() : violations.push_back("tokens not covered by seqs");
    step_log.push_back(std::move(log));

    // "Attention": read the context back through the table, then sample.
    for (const SequenceStep& s : batch.seqs) {
      const std::vector<int32_t> history = history_of(s);
      // Sliding layers: the window of every new token, through the sliding table with two groups.
      uint64_t hw = 0x89abcdef;
      if (config_.sliding_window > 0 && violations.empty()) {
        for (int32_t p = sliding_window_start(s.context_len - s.num_tokens, config_.sliding_window);
             p < s.context_len && p < int(history.size()); ++p) {
          const Slot& slot = two_groups() ? sliding_kv_[size_t(sliding_slot_of(s, p))] : kv_[size_t(slot_of(s, p))];
          if (slot.pos != p || slot.token != history[size_t(p)])
            violate(s, "window KV read back is not the sequence's history at position " + std::to_string(p));
          // The sample depends on the last token's window only (independent of how tokens are chunked).
          if (p >= sliding_window_start(s.context_len - 1, config_.sliding_window))
            hw = splitmix64(hw ^ uint64_t(uint32_t(slot.token)) ^ (uint64_t(p) << 32));
        }
      }
      if (!s.sample) continue;
      SampleOutput so;
      so.seq_id = s.seq_id;
      uint64_t h = 0x1234567 ^ hw;
      bool failed = false;
      for (int32_t p = 0; p < s.context_len && p < int(history.size()); ++p) {
        const Slot& slot = kv_[size_t(slot_of(s, p))];
        if (slot.pos != p || slot.token != history[size_t(p)]) {
          violate(s, "KV read back through the table is not the sequence's history at position " + std::to_string(p));
        }
        h = splitmix64(h ^ uint64_t(uint32_t(slot.token)) ^ (uint64_t(p) << 32));
        failed |= slot.token == fail_token;
      }
      if (s.sampling && !s.sampling->greedy())
        h ^= uint64_t(sample_uniform(s.sampling->seed, s.output_tokens.size()) * 1e6);
      h = splitmix64(h);
      so.token = stop_period > 0 && h % uint64_t(stop_period) == 0 ? tok::kReturn : int32_t(1 + (h >> 8) % kTokenRange);
      if (s.sampling && s.sampling->logprobs) so.logprob = -float(h % 100) / 10.0f;
      if (failed) {
        so.ok = false;
        so.error = "injected sampler failure";
      }
      out->samples.push_back(std::move(so));
    }
  }

 private:
  struct Slot {
    int32_t token = -1;
    int32_t pos = -1;
  };
  bool two_groups() const { return layout_.num_sliding_blocks > 0; }
  int64_t slot_of(const SequenceStep& s, int32_t pos) const {
    return int64_t(s.block_table[size_t(pos / layout_.block_size)]) * layout_.block_size + pos % layout_.block_size;
  }
  int64_t sliding_slot_of(const SequenceStep& s, int32_t pos) const {
    return int64_t(s.sliding_block_table[size_t(pos / layout_.block_size)]) * layout_.block_size +
           pos % layout_.block_size;
  }
  // The entries the window reads are valid; released ones are kNoBlock; the live count stays in bound.
  void check_sliding_table(const SequenceStep& s) {
    const int bs = layout_.block_size, W = config_.sliding_window;
    if (int64_t(s.sliding_block_table.size()) * bs < s.context_len) return violate(s, "sliding table too short");
    const int first = sliding_window_start(s.context_len - s.num_tokens, W) / bs;
    int live = 0;
    for (int b = 0; b < int(s.sliding_block_table.size()); ++b) {
      const int32_t id = s.sliding_block_table[size_t(b)];
      if (id == kNoBlock) {
        if (b >= first) violate(s, "kNoBlock in the window at sliding block " + std::to_string(b));
        continue;
      }
      ++live;
      if (id < 0 || id >= layout_.num_sliding_blocks) violate(s, "sliding block id out of range");
    }
    max_sliding_live = std::max(max_sliding_live, live);
    if (live > (W + s.num_tokens + bs - 1) / bs + 1)
      violate(s, "holds " + std::to_string(live) + " sliding blocks for a window of " + std::to_string(W) +
                     " and " + std::to_string(s.num_tokens) + " new tokens");
  }
  static std::vector<int32_t> history_of(const SequenceStep& s) {
    std::vector<int32_t> h(s.prompt_tokens.begin(), s.prompt_tokens.end());
    h.insert(h.end(), s.output_tokens.begin(), s.output_tokens.end());
    return h;
  }
  void violate(const SequenceStep& s, const std::string& what) {
    violations.push_back("seq " + std::to_string(s.seq_id) + ": " + what);
  }

  KvCacheLayout layout_;
  ModelConfig config_;
  std::vector<Slot> kv_;          // [num_blocks * block_size]
  std::vector<Slot> sliding_kv_;  // [num_sliding_blocks * block_size]
};

// Token t in [1, 1000] has the text of 1 + t % 3 letters ('a' + (t + i) % 26); 1001 and 1002 are the two
// halves of "é" (0xC3 0xA9); the harmony specials are specials without text.
class FakeTokenizer : public Tokenizer {
 public:
  FakeTokenizer() {
    for (int t = 0; t <= FakeRunner::kTokenRange; ++t) {
      std::string s;
      for (int i = 0; i < 1 + t % 3; ++i) s += char('a' + (t + i) % 26);
      text_[t] = s;
    }
    text_[1001] = "\xC3";
    text_[1002] = "\xA9";
  }
  std::vector<int32_t> encode(std::string_view) const override { throw Error("FakeTokenizer cannot encode"); }
  std::vector<int32_t> encode_with_specials(std::string_view) const override {
    throw Error("FakeTokenizer cannot encode");
  }
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string s;
    for (int32_t id : ids) s += std::string(token_bytes(id));
    return s;
  }
  std::string_view token_bytes(int32_t id) const override {
    auto it = text_.find(id);
    if (it != text_.end()) return it->second;
    return is_special(id) ? std::string_view("<|special|>") : std::string_view();
  }
  bool is_special(int32_t id) const override { return id >= 199998; }
  std::optional<int32_t> special_id(std::string_view) const override { return std::nullopt; }
  int vocab_size() const override { return 201088; }

 private:
  std::map<int32_t, std::string> text_;
};

}  // namespace mxs::testing
