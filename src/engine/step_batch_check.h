// The per-sequence checks every ModelRunner applies to a StepBatch before running it (shared by CpuRunner and
// CudaRunner so that both reject the same inputs with the same words). Header-only: backends depend on the
// seam's headers, not on the engine library.
#pragma once
#include <cstdint>
#include <string>

#include "common/error.h"
#include "engine/model_runner.h"

namespace mxs {

// "" when sequence `q` of `batch` can run; else why not. The caller has already checked that q's token range
// lies inside the batch. max_context: the longest context the runner holds; num_blocks: the KV pool size.
inline std::string check_sequence_step(const StepBatch& batch, const SequenceStep& q, int vocab_size,
                                       int max_context, int block_size, int num_blocks) {
  if (q.context_len < q.num_tokens || q.context_len > max_context)
    return strfmt("context_len = %d with %d new tokens (max context %d)", q.context_len, q.num_tokens, max_context);
  if (int64_t(q.block_table.size()) * block_size < q.context_len)
    return strfmt("block table of %zu blocks cannot hold context_len = %d (block_size %d)", q.block_table.size(),
                  q.context_len, block_size);
  if (q.sample && q.sampling == nullptr) return "sample is set but sampling params are missing";
  for (int b = 0; b < (q.context_len + block_size - 1) / block_size; ++b)
    if (q.block_table[size_t(b)] < 0 || q.block_table[size_t(b)] >= num_blocks)
      return strfmt("block_table[%d] = %d is outside the pool [0, %d)", b, q.block_table[size_t(b)], num_blocks);
  for (int i = 0; i < q.num_tokens; ++i) {
    const int32_t tok = batch.tokens[size_t(q.token_offset + i)];
    const int32_t pos = batch.positions[size_t(q.token_offset + i)];
    if (tok < 0 || tok >= vocab_size) return strfmt("token id %d is outside the vocabulary [0, %d)", tok, vocab_size);
    if (pos != q.context_len - q.num_tokens + i)
      return strfmt("new token %d has position %d; the new tokens must be positions [%d, %d)", i, pos,
                    q.context_len - q.num_tokens, q.context_len);
  }
  return "";
}

// "" when q's sliding block table can serve its sliding layers; else why not. num_sliding_blocks == 0 (one
// table for all layers): nothing to check. Else the table must cover context_len and hold valid ids from the
// block of the first position the step reads (sliding_window_start) on; earlier entries are not read.
inline std::string check_sliding_table(const SequenceStep& q, int block_size, int num_sliding_blocks, int window) {
  if (num_sliding_blocks == 0) return "";
  if (int64_t(q.sliding_block_table.size()) * block_size < q.context_len)
    return strfmt("sliding block table of %zu blocks cannot hold context_len = %d (block_size %d)",
                  q.sliding_block_table.size(), q.context_len, block_size);
  const int first = sliding_window_start(q.context_len - q.num_tokens, window) / block_size;
  for (int b = first; b < (q.context_len + block_size - 1) / block_size; ++b)
    if (q.sliding_block_table[size_t(b)] < 0 || q.sliding_block_table[size_t(b)] >= num_sliding_blocks)
      return strfmt("sliding_block_table[%d] = %d is outside the sliding pool [0, %d) (the window reads it)", b,
                    q.sliding_block_table[size_t(b)], num_sliding_blocks);
  return "";
}

}  // namespace mxs
