// mkmodel: deterministic random gpt-oss checkpoints in the exact HF layout (sharded safetensors + index,
// config.json, generation_config.json, tokenizer files), or in the OpenAI original/ or bf16-experts layouts
// for format-detection tests. Same seed -> same bytes on any machine (integer PRNG, IEEE mul/div only).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace mxs {

enum class CheckpointLayout {
  kHf,            // the target: HF MXFP4 (model.layers.N.mlp.experts.*_blocks/_scales U8)
  kOriginal,      // OUT/original/{model.safetensors, config.json, dtypes.json} (spec §2.2)
  kHfBf16Experts, // HF names with experts dequantized to bf16 [E, H, 2I] / [E, I, H] and no
                  // quantization_config; expert values are random bf16, not the dequantized MXFP4 ones
};
const char* layout_name(CheckpointLayout l);                      // "hf", "original", "bf16-experts"
bool layout_from_name(const std::string& name, CheckpointLayout* out);

struct MkmodelOptions {
  uint64_t seed = 0;
  std::string out_dir;
  std::string tokenizer_path;  // tokenizer.json to copy in ("" = none); its tokenizer_config.json is used if beside it
  CheckpointLayout layout = CheckpointLayout::kHf;
  uint64_t max_shard_bytes = 5000000000ull;  // HF's default max_shard_size ("5GB"); split at tensor boundaries
  bool progress = false;                     // progress bar on stderr
};

struct MkmodelResult {
  std::vector<std::string> files;  // everything written, relative to out_dir
  uint64_t tensor_bytes = 0;       // safetensors payload (excluding headers)
  uint64_t file_bytes = 0;         // safetensors files as written (including headers)
  double seconds = 0;
};

MkmodelResult write_random_checkpoint(const ModelConfig& config, const MkmodelOptions& options);

// Convenience: the HF layout with default options.
MkmodelResult write_random_checkpoint(const ModelConfig& config, uint64_t seed, const std::string& out_dir,
                                      const std::string& tokenizer_path = "");

// The real gpt-oss tokenizer.json if one is available: $MXSERVE_TOKENIZER, else
// cache_dir()/tokenizer/tokenizer.json (where scripts/fetch-tokenizer.sh puts it); "" if neither exists.
std::string find_tokenizer_json();

// Values mkmodel stores, exposed for tests: element `index` of the random stream `key` as an approximately
// standard normal (Irwin-Hall sum of four 16-bit uniforms, |z| <= 2*sqrt(3)), and the MXFP4 quantization of
// 32 floats (scale = the smallest power of 2 with max|w| / scale <= 6; returns the e8m0 byte).
float mkmodel_normal(uint64_t key, uint64_t index);
uint8_t mkmodel_quantize_block(const float* w32, uint8_t* packed16);
// The 32 weights of MXFP4 block `block` (row-major over [E * out, in/32]) of stream `key`, ~N(0, stddev^2):
// Irwin-Hall of four 8-bit uniforms, two per 64-bit draw (mkmodel_normal's 16-bit version costs twice the hashing).
void mkmodel_mxfp4_block_weights(uint64_t key, uint64_t block, float stddev, float* w32);
// The e2m1 code mkmodel stores for x (the branch-free twin of mxs::f32_to_e2m1; tests check they agree).
uint8_t mkmodel_e2m1_code(float x);

}  // namespace mxs
