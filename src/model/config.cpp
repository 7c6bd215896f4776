// ModelConfig: parsing of HF config.json (rope_scaling or v5 rope_parameters), of OpenAI's original/config.json,
// validation against what mxserve implements, the HF config.json mkmodel writes, and the presets.
#include "model/config.h"

#include <cmath>
#include <cstdlib>

#include "common/error.h"
#include "common/paths.h"

namespace mxs {
namespace {

using nlohmann::json;

// Typed access to one key with an error naming the file, the key and what was found.
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

  int get_int(const char* key, int fallback, bool required = false) const {
    if (!has(key)) {
      MXS_CHECK(!required, strfmt("%s: missing key \"%s\"", source_.c_str(), key));
      return fallback;
    }
    const json& v = j_.at(key);
    if (v.is_number_integer()) {
      const int64_t x = v.get<int64_t>();
      MXS_CHECK(x >= INT32_MIN && x <= INT32_MAX,
                strfmt("%s: %s = %lld is out of range", source_.c_str(), key, (long long)x));
      return int(x);
    }
    // Some writers emit integral floats (e.g. 4096.0).
    if (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>() && std::fabs(v.get<double>()) < 2e9)
      return int(v.get<double>());
    throw Error(strfmt("%s: %s = %s must be an integer", source_.c_str(), key, v.dump().c_str()));
  }

  double get_double(const char* key, double fallback, bool required = false) const {
    if (!has(key)) {
      MXS_CHECK(!required, strfmt("%s: missing key \"%s\"", source_.c_str(), key));
      return fallback;
    }
    const json& v = j_.at(key);
    MXS_CHECK(v.is_number(), strfmt("%s: %s = %s must be a number", source_.c_str(), key, v.dump().c_str()));
    return v.get<double>();
  }

  bool get_bool(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    MXS_CHECK(v.is_boolean(), strfmt("%s: %s = %s must be true or false", source_.c_str(), key, v.dump().c_str()));
    return v.get<bool>();
  }

  std::string get_string(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_.at(key);
    MXS_CHECK(v.is_string(), strfmt("%s: %s = %s must be a string", source_.c_str(), key, v.dump().c_str()));
    return v.get<std::string>();
  }

 private:
  const json& j_;
  const std::string& source_;
};

// eos_token_id is an int or a list of ints (HF allows both).
std::vector<int> parse_token_ids(const json& v, const std::string& source, const char* key) {
  std::vector<int> ids;
  auto one = [&](const json& x) {
    MXS_CHECK(x.is_number_integer() && x.get<int64_t>() >= 0 && x.get<int64_t>() <= INT32_MAX,
              strfmt("%s: %s contains %s, expected a token id", source.c_str(), key, x.dump().c_str()));
    ids.push_back(x.get<int>());
  };
  if (v.is_array()) {
    for (const json& x : v) one(x);
  } else {
    one(v);
  }
  return ids;
}

void unsupported(const std::string& source, const char* key, const std::string& value, const char* supported) {
  throw Error(strfmt("%s: %s = %s is not supported (supported: %s)", source.c_str(), key, value.c_str(), supported));
}

// Checks that the values fit what the kernels and the CPU reference implement (closed dispatch).
void validate(const ModelConfig& c, const std::string& s) {
  auto positive = [&](const char* key, int v) {
    if (v <= 0) unsupported(s, key, std::to_string(v), "a positive integer");
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_layers);
  positive("num_attention_heads", c.num_heads);
  positive("num_key_value_heads", c.num_kv_heads);
  positive("num_local_experts", c.num_experts);
  positive("num_experts_per_tok", c.experts_per_token);
  positive("sliding_window", c.sliding_window);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.head_dim != 64) unsupported(s, "head_dim", std::to_string(c.head_dim), "64");
  if (c.hidden_size % 32 != 0)
    unsupported(s, "hidden_size", std::to_string(c.hidden_size), "a multiple of 32 (the MXFP4 block size)");
  if (c.intermediate_size % 32 != 0)
    unsupported(s, "intermediate_size", std::to_string(c.intermediate_size),
                "a multiple of 32 (the MXFP4 block size)");
  if (c.num_heads % c.num_kv_heads != 0)
    throw Error(strfmt("%s: num_attention_heads = %d is not a multiple of num_key_value_heads = %d", s.c_str(),
                       c.num_heads, c.num_kv_heads));
  if (c.experts_per_token > c.num_experts)
    throw Error(strfmt("%s: num_experts_per_tok = %d exceeds num_local_experts = %d", s.c_str(),
                       c.experts_per_token, c.num_experts));
  if (!(c.rms_norm_eps > 0.0f && c.rms_norm_eps < 1.0f))
    unsupported(s, "rms_norm_eps", strfmt("%g", c.rms_norm_eps), "0 < eps < 1");
  if (!(c.swiglu_limit > 0.0f)) unsupported(s, "swiglu_limit", strfmt("%g", c.swiglu_limit), "a positive number");
  if (!(c.swiglu_alpha > 0.0f)) unsupported(s, "swiglu_alpha", strfmt("%g", c.swiglu_alpha), "a positive number");
  if (!(c.rope_theta > 0.0)) unsupported(s, "rope_theta", strfmt("%g", c.rope_theta), "a positive number");
  if (!(c.rope_factor >= 1.0)) unsupported(s, "rope_scaling.factor", strfmt("%g", c.rope_factor), ">= 1");
  if (!(c.rope_beta_fast > 0.0 && c.rope_beta_slow > 0.0))
    throw Error(strfmt("%s: rope beta_fast = %g, beta_slow = %g must be positive", s.c_str(), c.rope_beta_fast,
                       c.rope_beta_slow));
  positive("rope_scaling.original_max_position_embeddings", c.rope_original_max_position);
  if (int(c.layer_sliding.size()) != c.num_layers)
    throw Error(strfmt("%s: layer_types has %zu entries, num_hidden_layers = %d", s.c_str(), c.layer_sliding.size(),
                       c.num_layers));
  if (c.quant_method != "mxfp4" && !c.quant_method.empty())
    unsupported(s, "quantization_config.quant_method", "\"" + c.quant_method + "\"", "\"mxfp4\"");
  for (int id : c.eos_token_ids)
    if (id >= c.vocab_size)
      throw Error(strfmt("%s: eos_token_id %d is outside the vocabulary (vocab_size = %d)", s.c_str(), id,
                         c.vocab_size));
}

// A float config value as the decimal a person wrote (1e-05, not 9.999999747378752e-06).
double shortest_double(float f) {
  for (int digits = 1; digits < 9; ++digits) {
    const double d = std::strtod(strfmt("%.*g", digits, double(f)).c_str(), nullptr);
    if (float(d) == f) return d;
  }
  return double(f);
}

std::vector<bool> alternating_layers(int n) {
  std::vector<bool> sliding(size_t(std::max(n, 0)));
  for (int i = 0; i < n; ++i) sliding[size_t(i)] = (i % 2 == 0);
  return sliding;
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  MXS_CHECK(j.is_object(), strfmt("%s: expected a JSON object", source.c_str()));
  const Reader r(j, source);
  ModelConfig c;

  const std::string model_type = r.get_string("model_type", "gpt_oss");
  if (model_type != "gpt_oss") unsupported(source, "model_type", "\"" + model_type + "\"", "\"gpt_oss\"");

  c.vocab_size = r.get_int("vocab_size", 0, true);
  c.hidden_size = r.get_int("hidden_size", 0, true);
  c.intermediate_size = r.get_int("intermediate_size", 0, true);
  c.num_layers = r.get_int("num_hidden_layers", 0, true);
  c.num_heads = r.get_int("num_attention_heads", 0, true);
  c.num_kv_heads = r.get_int("num_key_value_heads", c.num_heads);
  c.head_dim = r.get_int("head_dim", c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.num_experts = r.get_int("num_local_experts", 0, true);
  // HF reads num_experts_per_tok; experts_per_token is the original config's leftover (same value).
  c.experts_per_token = r.get_int("num_experts_per_tok", r.get_int("experts_per_token", 0), !r.has("experts_per_token"));
  c.sliding_window = r.get_int("sliding_window", c.sliding_window);
  c.max_position_embeddings = r.get_int("max_position_embeddings", c.max_position_embeddings);
  c.rms_norm_eps = float(r.get_double("rms_norm_eps", c.rms_norm_eps));
  c.swiglu_limit = float(r.get_double("swiglu_limit", c.swiglu_limit));
  c.swiglu_alpha = float(r.get_double("swiglu_alpha", c.swiglu_alpha));

  if (!r.get_bool("attention_bias", true))
    unsupported(source, "attention_bias", "false", "true (gpt-oss has q/k/v/o biases)");
  if (r.get_bool("tie_word_embeddings", false))
    unsupported(source, "tie_word_embeddings", "true", "false (gpt-oss has a separate lm_head)");

  // RoPE: v5 `rope_parameters` (rope_theta inside) or <= 4.57 `rope_scaling` + top-level `rope_theta`.
  const char* rope_key = r.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  MXS_CHECK(r.has(rope_key), strfmt("%s: missing rope_scaling (or rope_parameters); gpt-oss uses YaRN RoPE",
                                    source.c_str()));
  const json& rope = j.at(rope_key);
  MXS_CHECK(rope.is_object(), strfmt("%s: %s must be an object", source.c_str(), rope_key));
  const std::string rope_source = source + ": " + rope_key;
  const Reader rr(rope, rope_source);
  const std::string rope_type = rr.get_string("rope_type", rr.get_string("type", ""));
  if (rope_type != "yarn") unsupported(source, (std::string(rope_key) + ".rope_type").c_str(), "\"" + rope_type + "\"",
                                       "\"yarn\"");
  c.rope_theta = rr.has("rope_theta") ? rr.get_double("rope_theta", 0) : r.get_double("rope_theta", 0, true);
  c.rope_factor = rr.get_double("factor", c.rope_factor);
  c.rope_beta_fast = rr.get_double("beta_fast", c.rope_beta_fast);
  c.rope_beta_slow = rr.get_double("beta_slow", c.rope_beta_slow);
  c.rope_original_max_position = rr.get_int("original_max_position_embeddings", c.rope_original_max_position);
  c.rope_truncate = rr.get_bool("truncate", c.rope_truncate);

  if (r.has("layer_types")) {
    const json& lt = j.at("layer_types");
    MXS_CHECK(lt.is_array(), strfmt("%s: layer_types must be a list", source.c_str()));
    c.layer_sliding.clear();
    for (size_t i = 0; i < lt.size(); ++i) {
      const std::string t = lt[i].is_string() ? lt[i].get<std::string>() : lt[i].dump();
      if (t == "sliding_attention") {
        c.layer_sliding.push_back(true);
      } else if (t == "full_attention") {
        c.layer_sliding.push_back(false);
      } else {
        unsupported(source, strfmt("layer_types[%zu]", i).c_str(), "\"" + t + "\"",
                    "\"sliding_attention\", \"full_attention\"");
      }
    }
  } else {
    c.layer_sliding = alternating_layers(c.num_layers);
  }

  if (r.has("eos_token_id")) c.eos_token_ids = parse_token_ids(j.at("eos_token_id"), source, "eos_token_id");
  c.pad_token_id = r.get_int("pad_token_id", c.pad_token_id);

  c.quant_method.clear();
  if (r.has("quantization_config")) {
    const json& q = j.at("quantization_config");
    MXS_CHECK(q.is_object(), strfmt("%s: quantization_config must be an object", source.c_str()));
    c.quant_method = Reader(q, source).get_string("quant_method", "");
    if (c.quant_method.empty()) unsupported(source, "quantization_config.quant_method", "(missing)", "\"mxfp4\"");
  }
  validate(c, source);
  return c;
}

ModelConfig ModelConfig::from_original_json(const json& j, const std::string& source) {
  MXS_CHECK(j.is_object(), strfmt("%s: expected a JSON object", source.c_str()));
  const Reader r(j, source);
  ModelConfig c;
  // Key names of OpenAI's ModelConfig (gpt_oss/torch/model.py); spec §1.3 gives the HF equivalents.
  c.vocab_size = r.get_int("vocab_size", 0, true);
  c.hidden_size = r.get_int("hidden_size", 0, true);
  c.intermediate_size = r.get_int("intermediate_size", 0, true);
  c.num_layers = r.get_int("num_hidden_layers", 0, true);
  c.num_heads = r.get_int("num_attention_heads", 0, true);
  c.num_kv_heads = r.get_int("num_key_value_heads", 0, true);
  c.head_dim = r.get_int("head_dim", 0, true);
  c.num_experts = r.get_int("num_experts", 0, true);
  c.experts_per_token = r.get_int("experts_per_token", 0, true);
  c.sliding_window = r.get_int("sliding_window", c.sliding_window);
  c.swiglu_limit = float(r.get_double("swiglu_limit", c.swiglu_limit));
  c.rope_theta = r.get_double("rope_theta", 0, true);
  c.rope_factor = r.get_double("rope_scaling_factor", c.rope_factor);
  c.rope_beta_fast = r.get_double("rope_ntk_beta", c.rope_beta_fast);
  c.rope_beta_slow = r.get_double("rope_ntk_alpha", c.rope_beta_slow);
  c.rope_original_max_position = r.get_int("initial_context_length", c.rope_original_max_position);
  c.rope_truncate = false;  // the HF converter adds truncate: false
  c.layer_sliding = alternating_layers(c.num_layers);
  c.quant_method = "mxfp4";
  // No token ids in this schema: keep the gpt-oss defaults that exist in this vocabulary.
  std::erase_if(c.eos_token_ids, [&](int id) { return id >= c.vocab_size; });
  if (c.pad_token_id >= c.vocab_size) c.pad_token_id = 0;
  validate(c, source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::parse_error& e) {
    throw Error(strfmt("%s: invalid JSON: %s", path.c_str(), e.what()));
  }
  ModelConfig c = from_json(j, path);
  // generation_config.json (next to config.json) is what HF generate stops on; it wins over config.json.
  const size_t slash = path.find_last_of('/');
  const std::string gen_path =
      join_path(slash == std::string::npos ? std::string(".") : path.substr(0, slash), "generation_config.json");
  if (file_exists(gen_path)) {
    json g;
    try {
      g = json::parse(read_file(gen_path));
    } catch (const json::parse_error& e) {
      throw Error(strfmt("%s: invalid JSON: %s", gen_path.c_str(), e.what()));
    }
    if (g.is_object() && g.contains("eos_token_id") && !g["eos_token_id"].is_null()) {
      c.eos_token_ids = parse_token_ids(g["eos_token_id"], gen_path, "eos_token_id");
      validate(c, gen_path);
    }
  }
  return c;
}

json ModelConfig::to_json() const {
  json layer_types = json::array();
  for (bool s : layer_sliding) layer_types.push_back(s ? "sliding_attention" : "full_attention");
  json j = {
      {"architectures", {"GptOssForCausalLM"}},
      {"attention_bias", true},
      {"attention_dropout", 0.0},
      {"eos_token_id", eos_token_ids.empty() ? 200002 : eos_token_ids.front()},
      {"experts_per_token", experts_per_token},
      {"head_dim", head_dim},
      {"hidden_act", "silu"},
      {"hidden_size", hidden_size},
      {"initial_context_length", rope_original_max_position},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"layer_types", layer_types},
      {"max_position_embeddings", max_position_embeddings},
      {"model_type", "gpt_oss"},
      {"num_attention_heads", num_heads},
      {"num_experts_per_tok", experts_per_token},
      {"num_hidden_layers", num_layers},
      {"num_key_value_heads", num_kv_heads},
      {"num_local_experts", num_experts},
      {"output_router_logits", false},
      {"pad_token_id", pad_token_id},
      {"rms_norm_eps", shortest_double(rms_norm_eps)},
      {"rope_scaling",
       {{"beta_fast", rope_beta_fast},
        {"beta_slow", rope_beta_slow},
        {"factor", rope_factor},
        {"original_max_position_embeddings", rope_original_max_position},
        {"rope_type", "yarn"},
        {"truncate", rope_truncate}}},
      {"rope_theta", rope_theta},
      {"router_aux_loss_coef", 0.9},
      {"sliding_window", sliding_window},
      {"swiglu_limit", shortest_double(swiglu_limit)},
      {"tie_word_embeddings", false},
      {"transformers_version", "4.55.0.dev0"},
      {"use_cache", true},
      {"vocab_size", vocab_size},
  };
  // rope_theta is integral in the hub file (150000); write it as an integer when it is one.
  if (rope_theta == std::floor(rope_theta) && rope_theta < 1e15) j["rope_theta"] = int64_t(rope_theta);
  if (!quant_method.empty())
    j["quantization_config"] = {
        {"modules_to_not_convert",
         {"model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"}},
        {"quant_method", quant_method}};
  return j;
}

json ModelConfig::to_original_json() const {
  json j = {
      {"num_hidden_layers", num_layers},
      {"num_experts", num_experts},
      {"experts_per_token", experts_per_token},
      {"vocab_size", vocab_size},
      {"hidden_size", hidden_size},
      {"intermediate_size", intermediate_size},
      {"swiglu_limit", shortest_double(swiglu_limit)},
      {"head_dim", head_dim},
      {"num_attention_heads", num_heads},
      {"num_key_value_heads", num_kv_heads},
      {"sliding_window", sliding_window},
      {"initial_context_length", rope_original_max_position},
      {"rope_theta", rope_theta},
      {"rope_scaling_factor", rope_factor},
      {"rope_ntk_alpha", rope_beta_slow},
      {"rope_ntk_beta", rope_beta_fast},
  };
  if (rope_theta == std::floor(rope_theta) && rope_theta < 1e15) j["rope_theta"] = int64_t(rope_theta);
  return j;
}

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;  // the defaults are gpt-oss-20b (spec §1.1)
  if (name == "20b") {
    // defaults
  } else if (name == "120b") {
    c.num_layers = 36;
    c.num_experts = 128;
  } else if (name == "tiny") {
    // Real vocabulary (so the real tokenizer works) and the real head geometry (head_dim 64, GQA group 8);
    // everything else small: ~52 MB of safetensors, dominated by the [201088, 64] embedding and LM head.
    c.hidden_size = 64;
    c.intermediate_size = 64;
    c.num_layers = 4;
    c.num_heads = 16;
    c.num_kv_heads = 2;
    c.num_experts = 8;
    c.experts_per_token = 4;
  } else {
    throw Error(strfmt("unknown model preset \"%s\" (known: tiny, 20b, 120b)", name.c_str()));
  }
  c.layer_sliding = alternating_layers(c.num_layers);
  return c;
}

ModelConfig ModelConfig::preset(const std::string& name, int num_layers) {
  ModelConfig c = preset(name);
  if (num_layers <= 0) throw Error(strfmt("a model needs at least one layer, got %d", num_layers));
  c.num_layers = num_layers;
  c.layer_sliding = alternating_layers(num_layers);
  return c;
}

}  // namespace mxs
