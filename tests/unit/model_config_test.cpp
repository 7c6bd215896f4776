// ModelConfig: presets (spec §1.1/1.2), the HF config.json round trip, rope_scaling vs v5 rope_parameters,
// layer_types, eos from generation_config.json, the original/config.json schema, and unsupported values.
#include "model/config.h"
#include "model_test_util.h"

namespace mxs {
namespace {

using nlohmann::json;
using test::expect_error;
using test::TempDir;

// The hub's openai/gpt-oss-20b config.json (spec §1.1).
json hub_20b_config() {
  json layer_types = json::array();
  for (int i = 0; i < 24; ++i) layer_types.push_back(i % 2 == 0 ? "sliding_attention" : "full_attention");
  json j = json::parse(R"({
    "architectures": ["GptOssForCausalLM"], "attention_bias": true, "attention_dropout": 0.0,
    "eos_token_id": 200002, "experts_per_token": 4, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2880,
    "initial_context_length": 4096, "initializer_range": 0.02, "intermediate_size": 2880,
    "max_position_embeddings": 131072, "model_type": "gpt_oss", "num_attention_heads": 64,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 8, "num_local_experts": 32,
    "output_router_logits": false, "pad_token_id": 199999,
    "quantization_config": {"modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                            "model.embed_tokens", "lm_head"], "quant_method": "mxfp4"},
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"beta_fast": 32.0, "beta_slow": 1.0, "factor": 32.0, "original_max_position_embeddings": 4096,
                     "rope_type": "yarn", "truncate": false},
    "rope_theta": 150000, "router_aux_loss_coef": 0.9, "sliding_window": 128, "swiglu_limit": 7.0,
    "tie_word_embeddings": false, "transformers_version": "4.55.0.dev0", "use_cache": true, "vocab_size": 201088})");
  j["layer_types"] = layer_types;
  return j;
}

TEST(ModelConfig, Hub20bParses) {
  const ModelConfig c = ModelConfig::from_json(hub_20b_config());
  EXPECT_EQ(c.vocab_size, 201088);
  EXPECT_EQ(c.hidden_size, 2880);
  EXPECT_EQ(c.num_layers, 24);
  EXPECT_EQ(c.num_experts, 32);
  EXPECT_EQ(c.experts_per_token, 4);
  EXPECT_EQ(c.q_dim(), 4096);
  EXPECT_EQ(c.kv_dim(), 512);
  EXPECT_EQ(c.qkv_dim(), 5120);
  EXPECT_EQ(c.kv_group(), 8);
  EXPECT_EQ(c.rope_theta, 150000.0);
  EXPECT_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_original_max_position, 4096);
  EXPECT_FALSE(c.rope_truncate);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_EQ(c.quant_method, "mxfp4");
  EXPECT_TRUE(c.is_sliding(0));
  EXPECT_FALSE(c.is_sliding(1));
  EXPECT_TRUE(c.is_sliding(22));
  EXPECT_EQ(c.eos_token_ids, std::vector<int>{200002});
}

TEST(ModelConfig, PresetsMatchSpec) {
  const ModelConfig c20 = ModelConfig::preset("20b");
  EXPECT_EQ(c20.to_json(), ModelConfig::from_json(hub_20b_config()).to_json());
  // to_json of the 20b preset is the hub file, key for key (eos: config.json holds only <|return|>).
  json hub = hub_20b_config();
  EXPECT_EQ(c20.to_json(), hub) << c20.to_json().dump(1);

  const ModelConfig c120 = ModelConfig::preset("120b");
  EXPECT_EQ(c120.num_layers, 36);
  EXPECT_EQ(c120.num_experts, 128);
  EXPECT_EQ(c120.layer_sliding.size(), 36u);
  EXPECT_EQ(c120.hidden_size, 2880);

  const ModelConfig t = ModelConfig::preset("tiny");
  EXPECT_EQ(t.vocab_size, 201088);
  EXPECT_EQ(t.hidden_size, 64);
  EXPECT_EQ(t.intermediate_size, 64);
  EXPECT_EQ(t.num_layers, 4);
  EXPECT_EQ(t.num_heads, 16);
  EXPECT_EQ(t.num_kv_heads, 2);
  EXPECT_EQ(t.kv_group(), 8);
  EXPECT_EQ(t.head_dim, 64);
  EXPECT_EQ(t.num_experts, 8);
  EXPECT_EQ(t.experts_per_token, 4);
  EXPECT_EQ(t.sliding_window, 128);
  EXPECT_EQ(t.layer_sliding, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(t.rope_theta, c20.rope_theta);
  EXPECT_EQ(t.rms_norm_eps, c20.rms_norm_eps);
  EXPECT_EQ(t.swiglu_limit, c20.swiglu_limit);
  expect_error([] { ModelConfig::preset("7b"); }, {"7b", "tiny, 20b, 120b"});
}

TEST(ModelConfig, PresetWithOtherDepth) {
  // `mkmodel --layers N`: the preset's width, N layers alternating sliding / full, valid as a config.json.
  const ModelConfig c = ModelConfig::preset("120b", 3);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.num_experts, 128);
  EXPECT_EQ(c.hidden_size, ModelConfig::preset("120b").hidden_size);
  EXPECT_EQ(c.layer_sliding, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(ModelConfig::from_json(c.to_json()).to_json(), c.to_json());
  EXPECT_EQ(ModelConfig::preset("20b", 24).to_json(), ModelConfig::preset("20b").to_json());
  expect_error([] { ModelConfig::preset("20b", 0); }, {"at least one layer"});
}

TEST(ModelConfig, RoundTripThroughJson) {
  for (const char* name : {"tiny", "20b", "120b"}) {
    const ModelConfig c = ModelConfig::preset(name);
    const ModelConfig back = ModelConfig::from_json(c.to_json());
    EXPECT_EQ(back.to_json(), c.to_json()) << name;
    EXPECT_EQ(back.layer_sliding, c.layer_sliding);
  }
  // Written the way a person would (no float noise).
  EXPECT_NE(ModelConfig::preset("20b").to_json().dump().find("\"rms_norm_eps\":1e-05"), std::string::npos);
}

TEST(ModelConfig, RopeParametersV5EqualsRopeScaling) {
  json old_style = hub_20b_config();
  json v5 = hub_20b_config();
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 150000.0}, {"factor", 32.0},
                           {"beta_fast", 32.0},  {"beta_slow", 1.0},       {"original_max_position_embeddings", 4096},
                           {"truncate", false}};
  const ModelConfig a = ModelConfig::from_json(old_style);
  const ModelConfig b = ModelConfig::from_json(v5);
  EXPECT_EQ(a.to_json(), b.to_json());
  // Values really come from rope_parameters.
  v5["rope_parameters"]["rope_theta"] = 10000.0;
  v5["rope_parameters"]["factor"] = 8.0;
  v5["rope_parameters"]["truncate"] = true;
  const ModelConfig c = ModelConfig::from_json(v5);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_factor, 8.0);
  EXPECT_TRUE(c.rope_truncate);
}

TEST(ModelConfig, LayerTypesAndDefault) {
  json j = hub_20b_config();
  j["layer_types"][3] = "sliding_attention";
  EXPECT_TRUE(ModelConfig::from_json(j).is_sliding(3));
  j.erase("layer_types");
  const ModelConfig c = ModelConfig::from_json(j);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(c.is_sliding(i), i % 2 == 0);
  j["layer_types"] = {"sliding_attention", "full_attention"};
  expect_error([&] { ModelConfig::from_json(j, "cfg/config.json"); }, {"cfg/config.json", "layer_types has 2"});
  j["layer_types"] = json::array();
  for (int i = 0; i < 24; ++i) j["layer_types"].push_back("chunked_attention");
  expect_error([&] { ModelConfig::from_json(j); }, {"layer_types[0]", "chunked_attention"});
}

TEST(ModelConfig, EosFromGenerationConfig) {
  TempDir tmp;
  write_file_atomic(tmp / "config.json", hub_20b_config().dump());
  EXPECT_EQ(ModelConfig::from_file(tmp / "config.json").eos_token_ids, std::vector<int>{200002});
  write_file_atomic(tmp / "generation_config.json",
                    R"({"bos_token_id": 199998, "eos_token_id": [200002, 199999, 200012], "pad_token_id": 199999})");
  EXPECT_EQ(ModelConfig::from_file(tmp / "config.json").eos_token_ids, (std::vector<int>{200002, 199999, 200012}));
}

TEST(ModelConfig, OriginalSchema) {
  const json j = json::parse(R"({"num_hidden_layers": 36, "num_experts": 128, "experts_per_token": 4,
    "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880, "swiglu_limit": 7.0, "head_dim": 64,
    "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128, "initial_context_length": 4096,
    "rope_theta": 150000, "rope_scaling_factor": 32.0, "rope_ntk_alpha": 1, "rope_ntk_beta": 32})");
  const ModelConfig c = ModelConfig::from_original_json(j);
  EXPECT_EQ(c.to_json(), ModelConfig::preset("120b").to_json());
  EXPECT_EQ(ModelConfig::from_original_json(ModelConfig::preset("20b").to_original_json()).to_json(),
            ModelConfig::preset("20b").to_json());
}

// ---- unsupported values: the message names the file, the key, the value and what is supported.

TEST(ModelConfigBadInput, HeadDim80) {
  TempDir tmp;
  json j = hub_20b_config();
  j["head_dim"] = 80;
  write_file_atomic(tmp / "config.json", j.dump());
  expect_error([&] { ModelConfig::from_file(tmp / "config.json"); },
               {tmp / "config.json", "head_dim = 80 is not supported (supported: 64)"});
}

TEST(ModelConfigBadInput, OtherUnsupportedValues) {
  auto with = [](const char* key, json value) {
    json j = hub_20b_config();
    j[key] = value;
    return j;
  };
  expect_error([&] { ModelConfig::from_json(with("hidden_size", 2890)); }, {"hidden_size = 2890", "multiple of 32"});
  expect_error([&] { ModelConfig::from_json(with("intermediate_size", 100)); }, {"intermediate_size = 100"});
  expect_error([&] { ModelConfig::from_json(with("num_experts_per_tok", 33)); }, {"num_experts_per_tok = 33"});
  expect_error([&] { ModelConfig::from_json(with("num_key_value_heads", 7)); }, {"num_key_value_heads = 7"});
  expect_error([&] { ModelConfig::from_json(with("model_type", "llama")); }, {"model_type", "llama"});
  expect_error([&] { ModelConfig::from_json(with("vocab_size", "big")); }, {"vocab_size", "integer"});
  expect_error([&] { ModelConfig::from_json(with("tie_word_embeddings", true)); }, {"tie_word_embeddings"});
  json q = hub_20b_config();
  q["quantization_config"]["quant_method"] = "gptq";
  expect_error([&] { ModelConfig::from_json(q); }, {"quant_method = \"gptq\"", "mxfp4"});
  json r = hub_20b_config();
  r["rope_scaling"]["rope_type"] = "linear";
  expect_error([&] { ModelConfig::from_json(r); }, {"rope_scaling.rope_type = \"linear\"", "yarn"});
  json m = hub_20b_config();
  m.erase("num_hidden_layers");
  expect_error([&] { ModelConfig::from_json(m); }, {"missing key \"num_hidden_layers\""});
  // No quantization_config is accepted (quant_method ""); the loader decides from the tensors.
  json nq = hub_20b_config();
  nq.erase("quantization_config");
  EXPECT_EQ(ModelConfig::from_json(nq).quant_method, "");
}

TEST(ModelConfigBadInput, InvalidJsonFile) {
  TempDir tmp;
  write_file_atomic(tmp / "config.json", "{\"vocab_size\": ");
  expect_error([&] { ModelConfig::from_file(tmp / "config.json"); }, {tmp / "config.json", "invalid JSON"});
}

}  // namespace
}  // namespace mxs
