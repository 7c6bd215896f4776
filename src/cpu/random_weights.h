// In-memory random gpt-oss weights for tests and benchmarks of the CPU backend: every tensor of
// weights.h with the shapes of a given config, filled from a seeded generator (no file involved).
// Not a checkpoint format: `mxserve mkmodel` writes real checkpoints.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/weights.h"

namespace mxs::cpu {

struct RandomWeights {
  std::vector<std::unique_ptr<std::vector<uint8_t>>> buffers;  // own the bytes behind the views
  ModelWeights weights;
};

// Linear weights ~ U(-1, 1) / sqrt(in), biases and sinks small, norms near 1, MXFP4 codes uniform with
// scale bytes around 2^-3 (so activations stay O(1) at the small sizes tests use).
std::unique_ptr<RandomWeights> make_random_weights(const ModelConfig& config, uint64_t seed);

// A small config for unit tests: head_dim 64 (required), GQA, sliding layers, a few experts.
ModelConfig small_test_config(int vocab = 512, int hidden = 64, int layers = 2, int heads = 4, int kv_heads = 2,
                              int experts = 4, int top_k = 2, int intermediate = 64);

}  // namespace mxs::cpu
