// Checkpoint -> typed gpt-oss weights: format detection (HF MXFP4 / OpenAI original / bf16 experts), binding of
// every spec §2.1 tensor with name, dtype and shape checks, and the original/ layout mapped onto the HF views.
#include "model/weights.h"

#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/log.h"
#include "common/paths.h"

namespace mxs {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string shape_str(const std::vector<int64_t>& shape) {
  TensorView t;
  t.shape = shape;
  return t.shape_str();
}

std::string basename_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool has_safetensors(const std::string& dir) {
  if (!dir_exists(dir)) return false;
  if (file_exists(join_path(dir, "model.safetensors.index.json"))) return true;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
    if (ends_with(entry.path().filename().string(), ".safetensors")) return true;
  MXS_CHECK(!ec, strfmt("%s: cannot list: %s", dir.c_str(), ec.message().c_str()));
  return false;
}

// Looks tensors up by name and checks dtype and shape; remembers which were used so that leftovers (a
// checkpoint with more layers or other tensors than config.json says) are reported.
class Binder {
 public:
  explicit Binder(const SafetensorsCheckpoint& ck) : ck_(ck) {}

  TensorView get(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
    const TensorView* t = ck_.find(name);
    if (!t) throw Error(strfmt("missing tensor %s (not in any of: %s)", name.c_str(), file_list().c_str()));
    if (t->dtype != dtype)
      throw Error(strfmt("%s: tensor %s has dtype %s, expected %s", t->file.c_str(), name.c_str(),
                         dtype_name(t->dtype), dtype_name(dtype)));
    if (t->shape != shape)
      throw Error(strfmt("%s: tensor %s has shape %s, expected %s (from config.json)", t->file.c_str(), name.c_str(),
                         t->shape_str().c_str(), shape_str(shape).c_str()));
    used_.insert(name);
    return *t;
  }

  // Every tensor of the checkpoint must have been bound.
  void check_all_used(const ModelConfig& c) const {
    std::vector<std::string> extra;
    for (const auto& [name, t] : ck_.all())
      if (!used_.count(name)) extra.push_back(name);
    if (extra.empty()) return;
    const TensorView* t = ck_.find(extra.front());
    throw Error(strfmt("%s: tensor %s is not part of gpt-oss as config.json describes it (num_hidden_layers = %d, "
                       "num_local_experts = %d); %zu unexpected tensor(s). Does config.json belong to these weights?",
                       t->file.c_str(), extra.front().c_str(), c.num_layers, c.num_experts, extra.size()));
  }

  std::string file_list() const {
    std::string s;
    const auto& files = ck_.files();
    for (size_t i = 0; i < files.size() && i < 6; ++i) s += (i ? ", " : "") + basename_of(files[i]->path());
    if (files.size() > 6) s += strfmt(", ... (%zu files)", files.size());
    return s + " in " + ck_.dir();
  }

 private:
  const SafetensorsCheckpoint& ck_;
  std::set<std::string> used_;
};

// Rows [begin, begin + count) of a row-major 2-D (or 1-D) tensor, as a view into the same mapping.
TensorView row_slice(const TensorView& t, int64_t begin, int64_t count, const char* what) {
  TensorView s = t;
  const int64_t row_elems = t.shape.size() > 1 ? t.numel() / t.shape[0] : 1;
  const size_t row_bytes = size_t(row_elems) * dtype_size(t.dtype);
  s.name = strfmt("%s[%lld:%lld] (%s)", t.name.c_str(), (long long)begin, (long long)(begin + count), what);
  s.shape[0] = count;
  s.data = t.data + size_t(begin) * row_bytes;
  s.nbytes = size_t(count) * row_bytes;
  return s;
}

ModelWeights bind_hf(std::shared_ptr<SafetensorsCheckpoint> ck, const ModelConfig& c) {
  ModelWeights w;
  w.config = c;
  w.format = CheckpointFormat::kHfMxfp4;
  w.dir = ck->dir();
  Binder b(*ck);
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size, E = c.num_experts;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  const DType bf = DType::kBF16, u8 = DType::kU8;
  w.embed = b.get("model.embed_tokens.weight", bf, {V, H});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = strfmt("model.layers.%d.", l);
    LayerWeights L;
    L.input_norm = b.get(p + "input_layernorm.weight", bf, {H});
    L.q_w = b.get(p + "self_attn.q_proj.weight", bf, {Q, H});
    L.q_b = b.get(p + "self_attn.q_proj.bias", bf, {Q});
    L.k_w = b.get(p + "self_attn.k_proj.weight", bf, {KV, H});
    L.k_b = b.get(p + "self_attn.k_proj.bias", bf, {KV});
    L.v_w = b.get(p + "self_attn.v_proj.weight", bf, {KV, H});
    L.v_b = b.get(p + "self_attn.v_proj.bias", bf, {KV});
    L.o_w = b.get(p + "self_attn.o_proj.weight", bf, {H, Q});
    L.o_b = b.get(p + "self_attn.o_proj.bias", bf, {H});
    L.sinks = b.get(p + "self_attn.sinks", bf, {c.num_heads});
    L.post_norm = b.get(p + "post_attention_layernorm.weight", bf, {H});
    L.router_w = b.get(p + "mlp.router.weight", bf, {E, H});
    L.router_b = b.get(p + "mlp.router.bias", bf, {E});
    ExpertWeights& x = L.experts;
    x.gate_up_blocks = b.get(p + "mlp.experts.gate_up_proj_blocks", u8, {E, 2 * I, H / 32, 16});
    x.gate_up_scales = b.get(p + "mlp.experts.gate_up_proj_scales", u8, {E, 2 * I, H / 32});
    x.gate_up_bias = b.get(p + "mlp.experts.gate_up_proj_bias", bf, {E, 2 * I});
    x.down_blocks = b.get(p + "mlp.experts.down_proj_blocks", u8, {E, H, I / 32, 16});
    x.down_scales = b.get(p + "mlp.experts.down_proj_scales", u8, {E, H, I / 32});
    x.down_bias = b.get(p + "mlp.experts.down_proj_bias", bf, {E, H});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = b.get("model.norm.weight", bf, {H});
  w.lm_head = b.get("lm_head.weight", bf, {V, H});
  b.check_all_used(c);
  w.checkpoint = std::move(ck);
  return w;
}

// The OpenAI original layout (spec §2.2): same bytes under other names; q/k/v are row ranges of the fused qkv.
ModelWeights bind_original(std::shared_ptr<SafetensorsCheckpoint> ck, const ModelConfig& c) {
  ModelWeights w;
  w.config = c;
  w.format = CheckpointFormat::kOriginal;
  w.dir = ck->dir();
  Binder b(*ck);
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size, E = c.num_experts;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  const DType bf = DType::kBF16, u8 = DType::kU8;
  w.embed = b.get("embedding.weight", bf, {V, H});
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = strfmt("block.%d.", l);
    LayerWeights L;
    L.input_norm = b.get(p + "attn.norm.scale", bf, {H});
    const TensorView qkv_w = b.get(p + "attn.qkv.weight", bf, {Q + 2 * KV, H});
    const TensorView qkv_b = b.get(p + "attn.qkv.bias", bf, {Q + 2 * KV});
    L.q_w = row_slice(qkv_w, 0, Q, "q");
    L.k_w = row_slice(qkv_w, Q, KV, "k");
    L.v_w = row_slice(qkv_w, Q + KV, KV, "v");
    L.q_b = row_slice(qkv_b, 0, Q, "q");
    L.k_b = row_slice(qkv_b, Q, KV, "k");
    L.v_b = row_slice(qkv_b, Q + KV, KV, "v");
    L.o_w = b.get(p + "attn.out.weight", bf, {H, Q});
    L.o_b = b.get(p + "attn.out.bias", bf, {H});
    L.sinks = b.get(p + "attn.sinks", bf, {c.num_heads});
    L.post_norm = b.get(p + "mlp.norm.scale", bf, {H});
    L.router_w = b.get(p + "mlp.gate.weight", bf, {E, H});
    L.router_b = b.get(p + "mlp.gate.bias", bf, {E});
    ExpertWeights& x = L.experts;
    x.gate_up_blocks = b.get(p + "mlp.mlp1_weight.blocks", u8, {E, 2 * I, H / 32, 16});
    x.gate_up_scales = b.get(p + "mlp.mlp1_weight.scales", u8, {E, 2 * I, H / 32});
    x.gate_up_bias = b.get(p + "mlp.mlp1_bias", bf, {E, 2 * I});
    x.down_blocks = b.get(p + "mlp.mlp2_weight.blocks", u8, {E, H, I / 32, 16});
    x.down_scales = b.get(p + "mlp.mlp2_weight.scales", u8, {E, H, I / 32});
    x.down_bias = b.get(p + "mlp.mlp2_bias", bf, {E, H});
    w.layers.push_back(std::move(L));
  }
  w.final_norm = b.get("norm.scale", bf, {H});
  w.lm_head = b.get("unembedding.weight", bf, {V, H});
  b.check_all_used(c);
  w.checkpoint = std::move(ck);
  return w;
}

// config.json of an original/ folder may use OpenAI's keys (spec §1.3) or, if someone copied it, HF's.
ModelConfig read_original_config(const std::string& dir) {
  const std::string path = join_path(dir, "config.json");
  MXS_CHECK(file_exists(path), strfmt("%s: missing config.json (the OpenAI original layout keeps it next to "
                                      "model.safetensors)", dir.c_str()));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error(strfmt("%s: invalid JSON: %s", path.c_str(), e.what()));
  }
  if (j.is_object() && j.contains("num_local_experts")) return ModelConfig::from_json(j, path);
  ModelConfig c = ModelConfig::from_original_json(j, path);
  // The original config has no token ids; the hub repo keeps generation_config.json one level up.
  const std::string gen = join_path(join_path(dir, ".."), "generation_config.json");
  if (file_exists(gen)) {
    nlohmann::json g;
    try {
      g = nlohmann::json::parse(read_file(gen));
    } catch (const nlohmann::json::exception& e) {
      throw Error(strfmt("%s: invalid JSON: %s", gen.c_str(), e.what()));
    }
    if (g.is_object()) {
      nlohmann::json cfg = c.to_json();
      for (const char* key : {"eos_token_id", "pad_token_id"})
        if (g.contains(key)) cfg[key] = g[key];
      const ModelConfig ids = ModelConfig::from_json(cfg, gen);
      if (g.contains("eos_token_id")) c.eos_token_ids = ids.eos_token_ids;
      c.pad_token_id = ids.pad_token_id;
    }
  }
  return c;
}

ModelWeights load_original(const std::string& dir) {
  std::shared_ptr<SafetensorsCheckpoint> ck = SafetensorsCheckpoint::open_dir(dir);
  const ModelConfig c = read_original_config(dir);
  MXS_LOG_INFO("%s: OpenAI original layout (block.N.*), mapped onto the HF tensor views", dir.c_str());
  return bind_original(std::move(ck), c);
}

}  // namespace

const char* format_name(CheckpointFormat f) {
  switch (f) {
    case CheckpointFormat::kHfMxfp4: return "HF MXFP4";
    case CheckpointFormat::kHfBf16Experts: return "HF with bf16 (dequantized) experts";
    case CheckpointFormat::kOriginal: return "OpenAI original";
    case CheckpointFormat::kUnknown: break;
  }
  return "unknown";
}

CheckpointFormat detect_format(const SafetensorsCheckpoint& ckpt) {
  bool mxfp4 = false, bf16_experts = false, original = false;
  for (const auto& [name, t] : ckpt.all()) {
    if (ends_with(name, ".mlp.experts.gate_up_proj_blocks")) mxfp4 = true;
    if (ends_with(name, ".mlp.experts.gate_up_proj") || ends_with(name, ".mlp.experts.down_proj")) bf16_experts = true;
    if (starts_with(name, "block.") && (ends_with(name, ".attn.qkv.weight") || ends_with(name, ".mlp.mlp1_weight.blocks")))
      original = true;
  }
  if (mxfp4) return CheckpointFormat::kHfMxfp4;
  if (bf16_experts) return CheckpointFormat::kHfBf16Experts;
  if (original) return CheckpointFormat::kOriginal;
  return CheckpointFormat::kUnknown;
}

ModelWeights load_model(const std::string& dir) {
  MXS_CHECK(dir_exists(dir), strfmt("%s: no such directory", dir.c_str()));
  const std::string original_dir = join_path(dir, "original");
  if (!has_safetensors(dir)) {
    // The hub repo without its top-level HF files, or `--include original/*` downloads.
    if (has_safetensors(original_dir)) return load_original(original_dir);
    throw Error(strfmt("%s: no model weights here (no model.safetensors.index.json, no *.safetensors, no "
                       "original/model.safetensors)",
                       dir.c_str()));
  }
  std::shared_ptr<SafetensorsCheckpoint> ck = SafetensorsCheckpoint::open_dir(dir);
  const CheckpointFormat format = detect_format(*ck);
  switch (format) {
    case CheckpointFormat::kHfMxfp4: {
      const std::string config_path = join_path(dir, "config.json");
      MXS_CHECK(file_exists(config_path), strfmt("%s: missing config.json next to the safetensors", dir.c_str()));
      const ModelConfig c = ModelConfig::from_file(config_path);
      if (c.quant_method.empty())
        MXS_LOG_WARN("%s has no quantization_config but the experts are MXFP4 (*_blocks/_scales); transformers will "
                     "not load it without quantization_config.quant_method = \"mxfp4\"",
                     config_path.c_str());
      return bind_hf(std::move(ck), c);
    }
    case CheckpointFormat::kOriginal:
      return load_original(dir);
    case CheckpointFormat::kHfBf16Experts: {
      std::string example;
      for (const auto& [name, t] : ck->all())
        if (ends_with(name, ".mlp.experts.gate_up_proj")) {
          example = strfmt("%s %s %s in %s", name.c_str(), t->shape_str().c_str(), dtype_name(t->dtype),
                           basename_of(t->file).c_str());
          break;
        }
      throw Error(strfmt(
          "%s: this checkpoint's MoE experts were dequantized to bf16 (e.g. %s). mxserve runs the MXFP4 experts "
          "as OpenAI published them: pass the folder of the original HF checkpoint (openai/gpt-oss-20b or -120b: "
          "config.json with quantization_config.quant_method = \"mxfp4\" and model.layers.N.mlp.experts."
          "gate_up_proj_blocks/_scales U8 tensors), or its original/ subfolder (block.N.mlp.mlp1_weight.blocks)",
          dir.c_str(), example.empty() ? "mlp.experts.down_proj" : example.c_str()));
    }
    case CheckpointFormat::kUnknown:
      break;
  }
  std::string names;
  int n = 0;
  for (const auto& [name, t] : ck->all()) {
    if (n++ == 4) break;
    names += (names.empty() ? "" : ", ") + name;
  }
  throw Error(strfmt("%s: not a gpt-oss checkpoint: none of model.layers.N.mlp.experts.gate_up_proj_blocks "
                     "(HF MXFP4), model.layers.N.mlp.experts.gate_up_proj (bf16 experts), block.N.attn.qkv.weight "
                     "(original) found among its %zu tensors (%s%s)",
                     dir.c_str(), ck->all().size(), names.c_str(), ck->all().size() > 4 ? ", ..." : ""));
}

}  // namespace mxs
