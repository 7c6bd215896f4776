// gpt-oss model configuration, read from a Hugging Face config.json (gpt-oss-spec.md §1) and validated
// against what this code supports. Accepts both `rope_scaling` (<= 4.57) and `rope_parameters` (v5).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mxs {

struct ModelConfig {
  int vocab_size = 201088;
  int hidden_size = 2880;         // d_model
  int intermediate_size = 2880;   // per-expert FFN width (gate_up has 2x rows, interleaved)
  int num_layers = 24;
  int num_heads = 64;             // query heads
  int num_kv_heads = 8;           // GQA: query head h reads kv head h / (num_heads / num_kv_heads)
  int head_dim = 64;
  int num_experts = 32;
  int experts_per_token = 4;
  int sliding_window = 128;       // keys seen on a sliding layer: the token itself + 127 previous
  int max_position_embeddings = 131072;
  float rms_norm_eps = 1e-5f;
  float swiglu_limit = 7.0f;
  float swiglu_alpha = 1.702f;
  // YaRN RoPE (NeoX half-split), see spec §3.3.
  double rope_theta = 150000.0;
  double rope_factor = 32.0;
  double rope_beta_fast = 32.0;
  double rope_beta_slow = 1.0;
  int rope_original_max_position = 4096;
  bool rope_truncate = false;
  // layer_sliding[i]: layer i uses the sliding window (even layers in gpt-oss).
  std::vector<bool> layer_sliding;
  // Token ids that end generation (generation_config.json / config eos_token_id).
  std::vector<int> eos_token_ids = {200002, 199999, 200012};
  int pad_token_id = 199999;
  // "mxfp4" for the HF MXFP4 checkpoint; "" when the checkpoint has no quantization_config
  // (e.g. experts dequantized to bf16).
  std::string quant_method = "mxfp4";

  int q_dim() const { return num_heads * head_dim; }      // 4096
  int kv_dim() const { return num_kv_heads * head_dim; }  // 512
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }  // 5120
  int kv_group() const { return num_heads / num_kv_heads; }
  bool is_sliding(int layer) const { return layer_sliding[size_t(layer)]; }

  // Parse + validate. `source` names the file in error messages. Throws mxs::Error naming the key,
  // the value found and what is supported (e.g. "config.json: head_dim = 80, supported: 64").
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // Reads config.json; generation_config.json next to it, when present, sets eos_token_ids.
  static ModelConfig from_file(const std::string& path);
  // OpenAI's original/config.json (spec §1.3: num_experts, rope_scaling_factor, rope_ntk_alpha/beta, ...).
  static ModelConfig from_original_json(const nlohmann::json& j, const std::string& source = "original/config.json");

  // The HF config.json this config corresponds to (what mkmodel writes).
  nlohmann::json to_json() const;
  // The original/config.json this config corresponds to (spec §1.3).
  nlohmann::json to_original_json() const;

  // Presets for mkmodel and tests: "20b", "120b", "tiny" (real vocab, small everything else).
  static ModelConfig preset(const std::string& name);
  // The preset with `num_layers` layers instead (alternating sliding / full as every preset; `mkmodel --layers`:
  // a model's full width at a depth where random weights do not yet amplify rounding differences).
  static ModelConfig preset(const std::string& name, int num_layers);
};

}  // namespace mxs
