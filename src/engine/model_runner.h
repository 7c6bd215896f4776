// The seam between the engine and a backend (DESIGN.md §3): one scheduler step = one flat batch.
// A sequence contributes any number of new tokens (a prefill chunk or one decode token); there is no
// prefill/decode mode. The runner writes the new tokens' K/V into the paged KV cache through the
// sequence's block table, and samples one token for every sequence with `sample` set.
//
// Paged KV semantics (shared by CpuRunner and CudaRunner and by the block manager):
//   block_size tokens per block; logical block i of a sequence holds positions [i*bs, (i+1)*bs) (K and V,
//   [num_kv_heads, head_dim] bf16 per position, post-RoPE); block_table[i] is its physical id in
//   [0, num_blocks).
//   KV groups: with KvCacheLayout::num_sliding_blocks == 0 one pool and one table serve every layer. With
//   num_sliding_blocks > 0 the runner keeps two pools: the full-attention layers use block_table (ids in
//   [0, num_blocks)), the sliding-window layers use sliding_block_table (ids in [0, num_sliding_blocks)),
//   same logical indexing. A sliding layer's token at position p reads keys (p - window, p], so a step
//   whose first new token is at position f reads sliding positions [sliding_window_start(f, window),
//   context_len) only; the sliding table's entries below that block may be kNoBlock and must not be read.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/sampling_params.h"
#include "model/config.h"

namespace mxs {

// An entry of a sliding block table whose positions the sliding layers no longer read (below the window).
inline constexpr int32_t kNoBlock = -1;

// The first position the sliding layers read in a step whose first new token is at `first_new`.
inline int sliding_window_start(int first_new, int window) {
  return first_new >= window ? first_new - window + 1 : 0;
}

// A sliding pool size that never runs dry for `max_seqs` running sequences and `max_tokens_per_step` new
// tokens per step: between steps a sequence holds <= ceil(window / bs) + 1 sliding blocks, and a step of n
// new tokens <= ceil(window / bs) + 2 + floor((n - 1) / bs) (see docs/ARCHITECTURE.md).
inline int sliding_pool_blocks(int window, int block_size, int max_seqs, int max_tokens_per_step) {
  return max_seqs * ((window + block_size - 1) / block_size + 2) + (max_tokens_per_step + block_size - 1) / block_size;
}

// The smallest sliding pool the engine accepts: one sequence alone can always run one new token (its table
// then spans at most (window + block_size - 2) / block_size + 1 blocks).
inline int min_sliding_pool_blocks(int window, int block_size) { return (window + 2 * block_size - 2) / block_size; }

struct KvCacheLayout {
  int block_size = 16;  // tokens per block
  int num_blocks = 0;   // physical blocks in the (full-attention) pool
  // > 0: the sliding-window layers have their own pool of this many blocks, addressed through
  // SequenceStep::sliding_block_table; 0: one pool and one table for every layer.
  int num_sliding_blocks = 0;
};

struct SequenceStep {
  uint64_t seq_id = 0;
  int32_t token_offset = 0;  // index of this sequence's first new token in StepBatch::tokens
  int32_t num_tokens = 0;    // new tokens this step (>= 1)
  int32_t context_len = 0;   // tokens in the KV cache after this step (= last position + 1)
  std::span<const int32_t> block_table;  // >= ceil(context_len / block_size) entries
  // Only when KvCacheLayout::num_sliding_blocks > 0 (else empty): the sliding layers' table, same length
  // rule; entries below block sliding_window_start(context_len - num_tokens, window) / block_size may be
  // kNoBlock.
  std::span<const int32_t> sliding_block_table;
  bool sample = false;       // sample from the logits of the last new token
  bool return_logits = false;  // copy the full logits of the last new token into the output (tests)
  const SamplingParams* sampling = nullptr;   // required when sample
  std::span<const int32_t> prompt_tokens;     // for the repetition penalty
  std::span<const int32_t> output_tokens;     // generated so far: penalties, and the RNG step counter
};

struct StepBatch {
  std::vector<int32_t> tokens;     // [n_tokens] new tokens of all sequences, each sequence contiguous
  std::vector<int32_t> positions;  // [n_tokens] absolute positions (0-based)
  std::vector<SequenceStep> seqs;
};

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleOutput {
  uint64_t seq_id = 0;
  int32_t token = -1;
  float logprob = 0.0f;             // when sampling->logprobs (log-softmax of the raw logits)
  std::vector<TokenLogprob> top;    // sampling->top_logprobs best, descending
  std::vector<float> logits;        // when return_logits: [vocab] fp32 copy of the (bf16) logits
  bool ok = true;                   // false: this sequence failed (error says why); others are unaffected
  std::string error;
};

struct StepOutput {
  std::vector<SampleOutput> samples;  // one per sequence with sample set, in batch order
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual KvCacheLayout kv_layout() const = 0;  // fixed for the runner's lifetime
  virtual std::string name() const = 0;         // "cpu", "cuda"
  // Runs one step. Throws mxs::Error only for a batch the runner cannot run at all (a bug in the caller);
  // a per-sequence problem is reported in its SampleOutput.
  virtual void step(const StepBatch& batch, StepOutput* out) = 0;
};

}  // namespace mxs
