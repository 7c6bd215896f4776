// summarize_model: counts and bytes by group from the loaded TensorViews, the batch-1 decode byte budget,
// and its text / JSON renderings for `mxserve inspect`.
#include "model/model_summary.h"

#include <filesystem>

#include "common/error.h"

namespace mxs {
namespace {

// MXFP4 blocks [.., in/32, 16] U8 hold two values per byte; the e8m0 scales are metadata of those values.
int64_t params_of(const TensorView& t, bool is_scales = false) {
  if (is_scales) return 0;
  return t.dtype == DType::kU8 && t.shape.size() == 4 ? int64_t(t.nbytes) * 2 : t.numel();
}

std::string human_bytes(double b) {
  if (b >= 1e9) return strfmt("%.2f GB", b / 1e9);
  if (b >= 1e6) return strfmt("%.1f MB", b / 1e6);
  if (b >= 1e3) return strfmt("%.1f kB", b / 1e3);
  return strfmt("%.0f B", b);
}

std::string human_count(double n) {
  if (n >= 1e9) return strfmt("%.3f B", n / 1e9);
  if (n >= 1e6) return strfmt("%.2f M", n / 1e6);
  if (n >= 1e3) return strfmt("%.1f k", n / 1e3);
  return strfmt("%.0f", n);
}

}  // namespace

ModelSummary summarize_model(const ModelWeights& w) {
  ModelSummary s;
  s.dir = w.dir;
  s.format = w.format;
  s.config = w.config;
  const ModelConfig& c = w.config;
  if (w.checkpoint)
    for (const auto& f : w.checkpoint->files()) s.files.emplace_back(f->path(), uint64_t(f->file_size()));

  ParamGroup experts{"experts"}, attention{"attention"}, router{"router"}, embeddings{"embeddings"},
      lm_head{"lm head"}, norms{"norms"};
  auto add = [](ParamGroup& g, const TensorView& t) {
    g.params += params_of(t);
    g.bytes += t.nbytes;
  };
  // One expert's share of an [E, ...] tensor, for the top-k bytes a token reads.
  const double k_over_e = double(c.experts_per_token) / double(c.num_experts);
  uint64_t expert_bytes_all = 0;
  int64_t expert_params_all = 0;
  for (const LayerWeights& L : w.layers) {
    for (const TensorView* t : {&L.q_w, &L.q_b, &L.k_w, &L.k_b, &L.v_w, &L.v_b, &L.o_w, &L.o_b, &L.sinks})
      add(attention, *t);
    add(router, L.router_w);
    add(router, L.router_b);
    add(norms, L.input_norm);
    add(norms, L.post_norm);
    const ExpertWeights& x = L.experts;
    for (const TensorView* t :
         {&x.gate_up_blocks, &x.gate_up_scales, &x.gate_up_bias, &x.down_blocks, &x.down_scales, &x.down_bias}) {
      const bool is_scales = t == &x.gate_up_scales || t == &x.down_scales;
      experts.params += params_of(*t, is_scales);
      experts.bytes += t->nbytes;
      expert_bytes_all += t->nbytes;
      expert_params_all += params_of(*t, is_scales);
    }
  }
  add(embeddings, w.embed);
  add(lm_head, w.lm_head);
  add(norms, w.final_norm);
  s.groups = {experts, attention, router, embeddings, lm_head, norms};
  for (const ParamGroup& g : s.groups) {
    s.total_params += g.params;
    s.total_bytes += g.bytes;
  }

  const int64_t active_experts = int64_t(double(expert_params_all) * k_over_e + 0.5);
  s.active_params = active_experts + attention.params + router.params + lm_head.params + norms.params;
  s.decode_bytes_experts = uint64_t(double(expert_bytes_all) * k_over_e + 0.5);
  s.decode_bytes_attention = attention.bytes;
  s.decode_bytes_lm_head = lm_head.bytes;
  s.decode_bytes_other = router.bytes + norms.bytes + uint64_t(c.hidden_size) * dtype_size(w.embed.dtype);
  if (w.lm_head.dtype == DType::kBF16) {
    // bf12: 1.5 bytes per weight + a 16-byte row header, for the LM head [V, H] and every o_proj [H, q_dim] and
    // q/k/v [qkv_dim, H]
    auto saved = [](uint64_t rows, uint64_t cols) { return rows * cols * 2 - rows * (cols * 3 / 2 + 16); };
    s.decode_bytes_saved_bf12 = saved(uint64_t(c.vocab_size), uint64_t(c.hidden_size)) +
                                uint64_t(c.num_layers) * (saved(uint64_t(c.hidden_size), uint64_t(c.q_dim())) +
                                                          saved(uint64_t(c.qkv_dim()), uint64_t(c.hidden_size)));
    const uint64_t V = uint64_t(c.vocab_size), H = uint64_t(c.hidden_size), V16 = (V + 15) / 16 * 16;
    s.decode_bytes_saved_screen = V * (H * 3 / 2 + 16) - V16 * (H + 16);
  }
  return s;
}

std::string summary_text(const ModelSummary& s) {
  const ModelConfig& c = s.config;
  std::string out;
  auto line = [&](const char* key, const std::string& value) { out += strfmt("%-13s%s\n", key, value.c_str()); };
  line("model", s.dir);
  line("format", format_name(s.format));
  uint64_t file_total = 0;
  for (const auto& f : s.files) file_total += f.second;
  std::string files = strfmt("%zu safetensors file(s), %s:", s.files.size(), human_bytes(double(file_total)).c_str());
  for (const auto& f : s.files) files += " " + std::filesystem::path(f.first).filename().string();
  line("files", files);

  std::string layers;
  int sliding = 0;
  for (bool b : c.layer_sliding) sliding += b ? 1 : 0;
  layers = strfmt("%d (%d sliding window %d, %d full attention)", c.num_layers, sliding, c.sliding_window,
                  c.num_layers - sliding);
  line("layers", layers);
  line("hidden", strfmt("%d, vocab %d", c.hidden_size, c.vocab_size));
  line("attention", strfmt("%d query heads, %d kv heads (GQA group %d), head_dim %d, sinks", c.num_heads,
                           c.num_kv_heads, c.kv_group(), c.head_dim));
  line("experts", strfmt("%d, top-%d, intermediate %d, MXFP4, SwiGLU alpha %g limit %g", c.num_experts,
                         c.experts_per_token, c.intermediate_size, c.swiglu_alpha, c.swiglu_limit));
  line("rope", strfmt("YaRN theta %g, factor %g, beta_fast %g, beta_slow %g, original context %d, max positions %d",
                      c.rope_theta, c.rope_factor, c.rope_beta_fast, c.rope_beta_slow, c.rope_original_max_position,
                      c.max_position_embeddings));
  std::string eos;
  for (int id : c.eos_token_ids) eos += (eos.empty() ? "" : ", ") + std::to_string(id);
  line("eos ids", eos);

  out += strfmt("\n%-13s%16s %12s %16s\n", "group", "params", "", "bytes");
  for (const ParamGroup& g : s.groups)
    out += strfmt("%-13s%16lld %12s %16llu  (%s)\n", g.name.c_str(), (long long)g.params,
                  human_count(double(g.params)).c_str(), (unsigned long long)g.bytes,
                  human_bytes(double(g.bytes)).c_str());
  out += strfmt("%-13s%16lld %12s %16llu  (%s)\n", "total", (long long)s.total_params,
                human_count(double(s.total_params)).c_str(), (unsigned long long)s.total_bytes,
                human_bytes(double(s.total_bytes)).c_str());
  out += strfmt("active params per token (top-%d experts, excluding the input embedding): %s\n",
                c.experts_per_token, human_count(double(s.active_params)).c_str());

  const double db = double(s.decode_bytes());
  out += strfmt("\ndecode, batch 1: %s read per token = experts %s + attention %s + LM head %s + other %s "
                "(KV cache not included)\n",
                human_bytes(db).c_str(), human_bytes(double(s.decode_bytes_experts)).c_str(),
                human_bytes(double(s.decode_bytes_attention)).c_str(),
                human_bytes(double(s.decode_bytes_lm_head)).c_str(), human_bytes(double(s.decode_bytes_other)).c_str());
  out += strfmt("ceiling: %.0f tok/s at 3.0 TB/s (H100 copy bandwidth), %.0f tok/s at 4.3 TB/s (H200)\n",
                kH100CopyBytesPerSec / db, kH200CopyBytesPerSec / db);
  if (s.decode_bytes_saved_bf12 > 0) {
    const double d12 = db - double(s.decode_bytes_saved_bf12);
    out += strfmt("with the cuda backend's bf12 copies of the LM head, o_proj and q/k/v (lossless, --bf12-dense; the "
                  "default below 4.5 TB/s, e.g. an H100: an H200 reads q/k/v from bf16, faster there): %s per "
                  "token, ceiling %.0f / %.0f tok/s\n",
                  human_bytes(d12).c_str(), kH100CopyBytesPerSec / d12, kH200CopyBytesPerSec / d12);
    const double dg = d12 - double(s.decode_bytes_saved_screen);
    out += strfmt("greedy steps (temperature 0) with the LM head's int8 screening copy (exact argmax, "
                  "--no-lm-head-screen turns it off): %s per token, ceiling %.0f / %.0f tok/s\n",
                  human_bytes(dg).c_str(), kH100CopyBytesPerSec / dg, kH200CopyBytesPerSec / dg);
  }
  return out;
}

nlohmann::json summary_json(const ModelSummary& s) {
  nlohmann::json groups = nlohmann::json::object();
  for (const ParamGroup& g : s.groups) groups[g.name] = {{"params", g.params}, {"bytes", g.bytes}};
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : s.files) files.push_back({{"path", f.first}, {"bytes", f.second}});
  const double db = double(s.decode_bytes());
  return {
      {"usable", true},
      {"dir", s.dir},
      {"format", format_name(s.format)},
      {"files", files},
      {"config", s.config.to_json()},
      {"groups", groups},
      {"total_params", s.total_params},
      {"total_bytes", s.total_bytes},
      {"active_params", s.active_params},
      {"decode_bytes_per_token",
       {{"total", s.decode_bytes()},
        {"experts", s.decode_bytes_experts},
        {"attention", s.decode_bytes_attention},
        {"lm_head", s.decode_bytes_lm_head},
        {"other", s.decode_bytes_other},
        {"total_bf12_default", s.decode_bytes() - s.decode_bytes_saved_bf12},
        {"total_greedy_screen", s.decode_bytes() - s.decode_bytes_saved_bf12 - s.decode_bytes_saved_screen}}},
      {"decode_ceiling_tok_s", {{"h100_3.0TBps", kH100CopyBytesPerSec / db}, {"h200_4.3TBps", kH200CopyBytesPerSec / db}}},
  };
}

}  // namespace mxs
