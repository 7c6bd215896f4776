// Checkpoint -> typed weights for gpt-oss (spec §2). Every tensor of spec §2.1 is checked for name, dtype
// and shape against the config. Weights stay where the mmap put them (TensorView); backends read or upload.
// Format detection tells the HF MXFP4 layout (target) from the `original/` layout and from checkpoints whose
// experts were dequantized to bf16, with a precise message for each.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"

namespace mxs {

enum class CheckpointFormat {
  kHfMxfp4,       // model.layers.N.mlp.experts.gate_up_proj_blocks (U8) ...: the target
  kHfBf16Experts, // model.layers.N.mlp.experts.gate_up_proj [E, H, 2I] BF16 (dequantized)
  kOriginal,      // block.N.mlp.mlp1_weight.blocks ... (OpenAI original/ layout)
  kUnknown,
};
const char* format_name(CheckpointFormat f);

// Expert weights of one layer in MXFP4, as stored (shapes for 20b: E=32, H=I=2880).
struct ExpertWeights {
  TensorView gate_up_blocks;  // [E, 2I, H/32, 16] U8; row 2i = gate unit i, row 2i+1 = up unit i
  TensorView gate_up_scales;  // [E, 2I, H/32]     U8 (e8m0)
  TensorView gate_up_bias;    // [E, 2I]           BF16, interleaved like the rows
  TensorView down_blocks;     // [E, H, I/32, 16]  U8
  TensorView down_scales;     // [E, H, I/32]      U8
  TensorView down_bias;       // [E, H]            BF16
};

struct LayerWeights {
  TensorView input_norm;      // [H] BF16
  TensorView q_w, q_b;        // [n_head*64, H], [n_head*64] BF16
  TensorView k_w, k_b;        // [n_kv*64, H],   [n_kv*64]
  TensorView v_w, v_b;        // [n_kv*64, H],   [n_kv*64]
  TensorView o_w, o_b;        // [H, n_head*64], [H]
  TensorView sinks;           // [n_head] BF16
  TensorView post_norm;       // [H] BF16
  TensorView router_w, router_b;  // [E, H], [E] BF16
  ExpertWeights experts;
};

struct ModelWeights {
  ModelConfig config;
  CheckpointFormat format = CheckpointFormat::kHfMxfp4;
  std::string dir;
  TensorView embed;           // [V, H] BF16
  std::vector<LayerWeights> layers;
  TensorView final_norm;      // [H] BF16
  TensorView lm_head;         // [V, H] BF16 (untied)
  // Keeps the mmaps alive.
  std::shared_ptr<SafetensorsCheckpoint> checkpoint;
};

// Detects the format of the tensors in `ckpt` (by names and dtypes).
CheckpointFormat detect_format(const SafetensorsCheckpoint& ckpt);

// Loads `dir` (config.json + safetensors). Throws mxs::Error with the file and tensor at fault, or, for a
// recognised but unsupported format, what to pass instead (e.g. the parent folder of original/).
ModelWeights load_model(const std::string& dir);

}  // namespace mxs
