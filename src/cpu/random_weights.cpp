// Random in-memory weights (see random_weights.h); std::mt19937_64 so a seed gives the same model anywhere.
#include "cpu/random_weights.h"

#include <cmath>
#include <cstring>
#include <random>

#include "common/bf16.h"

namespace mxs::cpu {
namespace {

class Filler {
 public:
  Filler(RandomWeights* rw, uint64_t seed) : rw_(rw), rng_(seed) {}

  // bf16 tensor of `shape`, values center + U(-1, 1) * spread.
  TensorView bf16_tensor(const std::string& name, std::vector<int64_t> shape, float center, float spread) {
    const int64_t n = count(shape);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    TensorView t = alloc(name, DType::kBF16, std::move(shape), size_t(n) * 2);
    auto* p = reinterpret_cast<bf16*>(const_cast<uint8_t*>(t.data));
    for (int64_t i = 0; i < n; ++i) p[i] = f32_to_bf16(center + spread * u(rng_));
    return t;
  }
  TensorView u8_tensor(const std::string& name, std::vector<int64_t> shape, int lo, int hi) {
    const int64_t n = count(shape);
    std::uniform_int_distribution<int> u(lo, hi);
    TensorView t = alloc(name, DType::kU8, std::move(shape), size_t(n));
    auto* p = const_cast<uint8_t*>(t.data);
    for (int64_t i = 0; i < n; ++i) p[i] = uint8_t(u(rng_));
    return t;
  }

 private:
  static int64_t count(const std::vector<int64_t>& shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  TensorView alloc(const std::string& name, DType dtype, std::vector<int64_t> shape, size_t nbytes) {
    rw_->buffers.push_back(std::make_unique<std::vector<uint8_t>>(nbytes));
    TensorView t;
    t.name = name;
    t.file = "<random>";
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data = rw_->buffers.back()->data();
    t.nbytes = nbytes;
    return t;
  }
  RandomWeights* rw_;
  std::mt19937_64 rng_;
};

}  // namespace

std::unique_ptr<RandomWeights> make_random_weights(const ModelConfig& c, uint64_t seed) {
  auto rw = std::make_unique<RandomWeights>();
  Filler f(rw.get(), seed);
  const int64_t H = c.hidden_size, I = c.intermediate_size, E = c.num_experts, V = c.vocab_size;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  ModelWeights& w = rw->weights;
  w.config = c;
  w.format = CheckpointFormat::kHfMxfp4;
  w.dir = "<random>";
  w.embed = f.bf16_tensor("model.embed_tokens.weight", {V, H}, 0.0f, 1.0f);
  const float in_h = 1.0f / std::sqrt(float(H)), in_q = 1.0f / std::sqrt(float(Q));
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights lw;
    lw.input_norm = f.bf16_tensor(p + "input_layernorm.weight", {H}, 1.0f, 0.2f);
    lw.q_w = f.bf16_tensor(p + "self_attn.q_proj.weight", {Q, H}, 0.0f, 2.0f * in_h);
    lw.q_b = f.bf16_tensor(p + "self_attn.q_proj.bias", {Q}, 0.0f, 0.1f);
    lw.k_w = f.bf16_tensor(p + "self_attn.k_proj.weight", {KV, H}, 0.0f, 2.0f * in_h);
    lw.k_b = f.bf16_tensor(p + "self_attn.k_proj.bias", {KV}, 0.0f, 0.1f);
    lw.v_w = f.bf16_tensor(p + "self_attn.v_proj.weight", {KV, H}, 0.0f, in_h);
    lw.v_b = f.bf16_tensor(p + "self_attn.v_proj.bias", {KV}, 0.0f, 0.1f);
    lw.o_w = f.bf16_tensor(p + "self_attn.o_proj.weight", {H, Q}, 0.0f, in_q);
    lw.o_b = f.bf16_tensor(p + "self_attn.o_proj.bias", {H}, 0.0f, 0.1f);
    lw.sinks = f.bf16_tensor(p + "self_attn.sinks", {c.num_heads}, 0.0f, 2.0f);
    lw.post_norm = f.bf16_tensor(p + "post_attention_layernorm.weight", {H}, 1.0f, 0.2f);
    lw.router_w = f.bf16_tensor(p + "mlp.router.weight", {E, H}, 0.0f, in_h);
    lw.router_b = f.bf16_tensor(p + "mlp.router.bias", {E}, 0.0f, 0.1f);
    ExpertWeights& ew = lw.experts;
    ew.gate_up_blocks = f.u8_tensor(p + "mlp.experts.gate_up_proj_blocks", {E, 2 * I, H / 32, 16}, 0, 255);
    ew.gate_up_scales = f.u8_tensor(p + "mlp.experts.gate_up_proj_scales", {E, 2 * I, H / 32}, 122, 124);
    ew.gate_up_bias = f.bf16_tensor(p + "mlp.experts.gate_up_proj_bias", {E, 2 * I}, 0.0f, 0.2f);
    ew.down_blocks = f.u8_tensor(p + "mlp.experts.down_proj_blocks", {E, H, I / 32, 16}, 0, 255);
    ew.down_scales = f.u8_tensor(p + "mlp.experts.down_proj_scales", {E, H, I / 32}, 122, 124);
    ew.down_bias = f.bf16_tensor(p + "mlp.experts.down_proj_bias", {E, H}, 0.0f, 0.2f);
    w.layers.push_back(std::move(lw));
  }
  w.final_norm = f.bf16_tensor("model.norm.weight", {H}, 1.0f, 0.2f);
  w.lm_head = f.bf16_tensor("lm_head.weight", {V, H}, 0.0f, 2.0f * in_h);
  return rw;
}

ModelConfig small_test_config(int vocab, int hidden, int layers, int heads, int kv_heads, int experts, int top_k,
                              int intermediate) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_layers = layers;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = 64;
  c.num_experts = experts;
  c.experts_per_token = top_k;
  c.layer_sliding.assign(size_t(layers), false);
  for (int l = 0; l < layers; l += 2) c.layer_sliding[size_t(l)] = true;  // even layers slide, as gpt-oss
  return c;
}

}  // namespace mxs::cpu
