// gpt-oss weights on the device: one arena holding every tensor the kernels read, in the layouts they want
// (docs/KERNELS.md): q/k/v fused into one [(n_heads + 2 n_kv) * 64, H] matrix (+ bias), the MXFP4 experts
// packed in place after the upload (moe_gemm_pack.h: a byte permutation inside each 64-row group, the
// checkpoint's sizes), everything else as stored in the checkpoint (bf16 row-major [out, in]). Uploaded
// once from the mmap by parallel workers through pinned staging (host_upload.h), or filled with random values on
// the device (benchmarks without a checkpoint).
#pragma once
#include <cstdint>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/device_arena.h"
#include "cuda/kernels/bf12_weights.h"
#include "cuda/kernels/lm_head_screen.h"
#include "cuda/kernels/moe_gemv_mxfp4.h"
#include "model/config.h"
#include "model/weights.h"

namespace mxs::cuda {

struct DeviceLayerWeights {
  const void* input_norm = nullptr;  // [H] bf16
  const void* w_qkv = nullptr;       // [(n_heads + 2 n_kv) * 64, H] bf16: q rows, then k, then v
  const void* b_qkv = nullptr;       // [(n_heads + 2 n_kv) * 64] bf16
  const void* w_o = nullptr;         // [H, n_heads * 64] bf16
  const void* b_o = nullptr;         // [H] bf16
  const void* sinks = nullptr;       // [n_heads] bf16
  const void* post_norm = nullptr;   // [H] bf16
  const void* router_w = nullptr;    // [E, H] bf16
  const void* router_b = nullptr;    // [E] bf16
  MoeGemmWeights experts;            // packed (moe_gemm_pack.h); biases as stored
  Bf12Weights w_qkv_bf12, w_o_bf12;  // lossless 12-bit copies (pack_dense_bf12; bytes == nullptr: none)
};

struct DeviceWeights {
  ModelConfig config;
  DeviceArena arena;
  const void* embed = nullptr;       // [V, H] bf16
  const void* final_norm = nullptr;  // [H] bf16
  const void* lm_head = nullptr;     // [V, H] bf16
  const float* inv_freq = nullptr;   // [head_dim / 2] fp32 YaRN inverse frequencies
  float mscale = 1.0f;               // YaRN attention factor, folded into cos/sin
  std::vector<DeviceLayerWeights> layers;
  double upload_seconds = 0.0;
  // bf12 copies of the dense weights (common/bf12.h) for the bandwidth-bound batch-1..7 GEMVs, in their own
  // arena: the bf16 originals stay for the GEMMs of larger batches and prefill.
  DeviceArena bf12_arena;
  Bf12Weights lm_head_bf12;          // bytes == nullptr: not packed
  size_t bf12_weights = 0, bf12_exceptions = 0;
  // The int8 screening copy of the LM head for greedy steps (lm_head_screen.h), in its own arena; q == nullptr: none.
  DeviceArena lm_screen_arena;
  LmScreenWeights lm_head_screen;
};

// Bytes of the weights arena for `config`.
size_t device_weights_bytes(const ModelConfig& config);

// Uploads `w` (checked against its config: a tensor with the wrong size is an error naming it). Prints a
// progress bar on stderr when `progress`.
DeviceWeights upload_weights(const ModelWeights& w, bool progress);

// Random weights with the magnitudes of a trained checkpoint (bf16 ~U(-0.03, 0.03), norms 1, MXFP4 scales
// around 2^-6), generated on the device: for benchmarks without a checkpoint. Routing is ~uniform.
DeviceWeights random_weights(const ModelConfig& config, uint64_t seed);

// Which dense weights get bf12 copies.
struct Bf12Set {
  bool lm_head = false, o_proj = false, qkv = false;
  bool any() const { return lm_head || o_proj || qkv; }
};

// Packs bf12 copies of the selected dense weights (the LM head, every layer's o_proj / q/k/v) into
// dw->bf12_arena (sized exactly after an exception-counting pass) and logs the exception rate.
void pack_dense_bf12(DeviceWeights* dw, const Bf12Set& which);

// Packs the LM head's int8 screening copy (lm_head_screen.h: V x H bytes + 16 per row, 0.58 GB for gpt-oss) into
// dw->lm_screen_arena.
void pack_lm_head_screen(DeviceWeights* dw);

// YaRN inverse frequencies (spec §3.3, truncate = false) and the attention factor, fp32.
void yarn_tables(const ModelConfig& config, std::vector<float>* inv_freq, float* mscale);

}  // namespace mxs::cuda
