// What `mxserve inspect` reports about a loaded checkpoint: parameter counts and bytes by group, active
// parameters per token, and the bytes a batch-1 decode step must read with the resulting bandwidth ceilings
// (docs PERF.md §Limits). Computed from the tensors actually loaded, not from the config alone.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/weights.h"

namespace mxs {

struct ParamGroup {
  std::string name;     // "experts", "attention", "router", "embeddings", "lm head", "norms"
  int64_t params = 0;   // MXFP4 values count as one parameter each; e8m0 scales are not parameters
  uint64_t bytes = 0;   // as stored (MXFP4 blocks + scales, bf16)
};

struct ModelSummary {
  std::string dir;
  CheckpointFormat format = CheckpointFormat::kUnknown;
  ModelConfig config;
  std::vector<std::pair<std::string, uint64_t>> files;  // shard path -> file size
  std::vector<ParamGroup> groups;
  int64_t total_params = 0;
  uint64_t total_bytes = 0;
  // Per decoded token, excluding the input embedding (a row lookup): top-k experts + everything else.
  int64_t active_params = 0;
  // Bytes one batch-1 decode step reads: top-k experts (blocks + scales + biases) in every layer, attention
  // q/k/v/o (+ biases, sinks), router, norms, LM head, one embedding row. KV-cache reads are not included.
  uint64_t decode_bytes_experts = 0, decode_bytes_attention = 0, decode_bytes_lm_head = 0, decode_bytes_other = 0;
  uint64_t decode_bytes() const {
    return decode_bytes_experts + decode_bytes_attention + decode_bytes_lm_head + decode_bytes_other;
  }
  // What the CUDA backend's default bf12 copies (common/bf12.h: the LM head, o_proj and q/k/v at 12 bits per weight
  // + 16 bytes per row, lossless) take off decode_bytes().
  uint64_t decode_bytes_saved_bf12 = 0;
  // What greedy steps of 1-8 sequences save on top of that: the LM head read from its int8 screening copy (1 byte per
  // weight + 16 per row, rows padded to 16) instead of bf12 (cuda backend, kernels/lm_head_screen.h; the few rows
  // recomputed exactly are not counted).
  uint64_t decode_bytes_saved_screen = 0;
};

// Copy bandwidths measured on the lent machines (PERF.md): the batch-1 decode ceiling is bandwidth / bytes.
constexpr double kH100CopyBytesPerSec = 3.0e12;
constexpr double kH200CopyBytesPerSec = 4.3e12;

ModelSummary summarize_model(const ModelWeights& w);
std::string summary_text(const ModelSummary& s);
nlohmann::json summary_json(const ModelSummary& s);

}  // namespace mxs
