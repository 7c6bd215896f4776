// load_model / detect_format: a mkmodel checkpoint loads with every tensor bound; missing tensor, wrong shape,
// wrong dtype and bad config.json are errors naming the file and tensor; the original/ layout loads onto the same
// bytes; bf16-expert checkpoints are refused with what to pass instead.
#include <cstring>

#include "model/mkmodel.h"
#include "model/weights.h"
#include "model_test_util.h"

namespace mxs {
namespace {

using test::expect_error;
using test::micro_config;
using test::RawTensor;
using test::rewrite_checkpoint;
using test::TempDir;

// One micro checkpoint (HF layout) shared by the tests of this file.
class WeightsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    write_random_checkpoint(micro_config(), 7, dir_->path());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static const std::string& hf_dir() { return dir_->path(); }
  static TempDir* dir_;
};
TempDir* WeightsTest::dir_ = nullptr;

bool same_bytes(const TensorView& a, const TensorView& b) {
  return a.nbytes == b.nbytes && a.shape == b.shape && a.dtype == b.dtype && std::memcmp(a.data, b.data, a.nbytes) == 0;
}

TEST_F(WeightsTest, LoadsEveryTensor) {
  const ModelWeights w = load_model(hf_dir());
  const ModelConfig c = micro_config();
  EXPECT_EQ(w.format, CheckpointFormat::kHfMxfp4);
  EXPECT_EQ(w.config.to_json(), c.to_json());
  ASSERT_EQ(int(w.layers.size()), c.num_layers);
  EXPECT_EQ(w.embed.shape_str(), "[1024, 64]");
  EXPECT_EQ(w.lm_head.shape_str(), "[1024, 64]");
  EXPECT_EQ(w.final_norm.shape_str(), "[64]");
  const LayerWeights& L = w.layers[1];
  EXPECT_EQ(L.q_w.shape_str(), "[1024, 64]");
  EXPECT_EQ(L.k_w.shape_str(), "[128, 64]");
  EXPECT_EQ(L.v_b.shape_str(), "[128]");
  EXPECT_EQ(L.o_w.shape_str(), "[64, 1024]");
  EXPECT_EQ(L.sinks.shape_str(), "[16]");
  EXPECT_EQ(L.router_w.shape_str(), "[4, 64]");
  EXPECT_EQ(L.experts.gate_up_blocks.shape_str(), "[4, 128, 2, 16]");
  EXPECT_EQ(L.experts.gate_up_scales.shape_str(), "[4, 128, 2]");
  EXPECT_EQ(L.experts.down_blocks.shape_str(), "[4, 64, 2, 16]");
  EXPECT_EQ(L.experts.down_bias.shape_str(), "[4, 64]");
  EXPECT_EQ(L.experts.gate_up_blocks.dtype, DType::kU8);
  EXPECT_EQ(L.q_w.dtype, DType::kBF16);
  // Every view points into a live mapping.
  std::vector<const TensorView*> all = {&w.embed, &w.lm_head, &w.final_norm};
  for (const LayerWeights& l : w.layers)
    for (const TensorView* t : {&l.input_norm, &l.q_w, &l.q_b, &l.k_w, &l.k_b, &l.v_w, &l.v_b, &l.o_w, &l.o_b,
                                &l.sinks, &l.post_norm, &l.router_w, &l.router_b, &l.experts.gate_up_blocks,
                                &l.experts.gate_up_scales, &l.experts.gate_up_bias, &l.experts.down_blocks,
                                &l.experts.down_scales, &l.experts.down_bias})
      all.push_back(t);
  EXPECT_EQ(all.size(), 3u + 19u * 2u);
  size_t bytes = 0;
  for (const TensorView* t : all) {
    ASSERT_NE(t->data, nullptr) << t->name;
    ASSERT_EQ(t->nbytes, size_t(t->numel()) * dtype_size(t->dtype)) << t->name;
    bytes += t->nbytes;
  }
  EXPECT_EQ(bytes, w.checkpoint->total_bytes());
}

TEST_F(WeightsTest, MissingTensor) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>& ts) {
    std::erase_if(ts, [](const RawTensor& t) { return t.name == "model.layers.1.mlp.router.bias"; });
  });
  expect_error([&] { load_model(bad.path()); },
               {"missing tensor model.layers.1.mlp.router.bias", "not in any of", "model.safetensors"});
}

TEST_F(WeightsTest, WrongShape) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>& ts) {
    for (RawTensor& t : ts)
      if (t.name == "model.layers.1.self_attn.q_proj.weight") t.shape = {64, 1024};  // transposed
  });
  expect_error([&] { load_model(bad.path()); },
               {"model.safetensors: tensor model.layers.1.self_attn.q_proj.weight has shape [64, 1024], "
                "expected [1024, 64]"});
}

TEST_F(WeightsTest, WrongDtype) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>& ts) {
    for (RawTensor& t : ts)
      if (t.name == "model.layers.0.self_attn.sinks") {
        t.dtype = DType::kF32;  // [16] F32 = 64 bytes: keep the byte size consistent
        t.bytes.resize(64);
      }
  });
  expect_error([&] { load_model(bad.path()); },
               {"model.safetensors: tensor model.layers.0.self_attn.sinks has dtype F32, expected BF16"});
}

TEST_F(WeightsTest, ConfigWithUnsupportedHeadDim) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>&) {});
  nlohmann::json j = nlohmann::json::parse(read_file(bad / "config.json"));
  j["head_dim"] = 80;
  write_file_atomic(bad / "config.json", j.dump());
  expect_error([&] { load_model(bad.path()); }, {bad / "config.json", "head_dim = 80 is not supported (supported: 64)"});
}

TEST_F(WeightsTest, ConfigDisagreesWithTensors) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>&) {});
  nlohmann::json j = nlohmann::json::parse(read_file(bad / "config.json"));
  j["num_hidden_layers"] = 1;
  j["layer_types"] = {"sliding_attention"};
  write_file_atomic(bad / "config.json", j.dump());
  expect_error([&] { load_model(bad.path()); }, {"model.layers.1.", "not part of gpt-oss", "num_hidden_layers = 1"});
}

TEST_F(WeightsTest, MissingConfig) {
  TempDir bad;
  rewrite_checkpoint(hf_dir(), bad.path(), [](std::vector<RawTensor>&) {});
  std::filesystem::remove(bad / "config.json");
  expect_error([&] { load_model(bad.path()); }, {bad.path(), "missing config.json"});
}

TEST(Weights, EmptyAndMissingFolders) {
  TempDir empty;
  expect_error([&] { load_model(empty.path()); }, {empty.path(), "no model weights"});
  expect_error([&] { load_model(empty / "nope"); }, {"nope", "no such directory"});
}

TEST(Weights, UnknownTensorsAreNotAModel) {
  TempDir tmp;
  SafetensorsWriter w(tmp / "model.safetensors", {{"encoder.weight", DType::kF32, {2}}});
  float x[2] = {0, 0};
  w.write_tensor("encoder.weight", x, 8);
  w.close();
  EXPECT_EQ(detect_format(*SafetensorsCheckpoint::open_dir(tmp.path())), CheckpointFormat::kUnknown);
  expect_error([&] { load_model(tmp.path()); }, {"not a gpt-oss checkpoint", "encoder.weight"});
}

TEST_F(WeightsTest, OriginalLayoutLoadsTheSameValues) {
  TempDir orig;
  MkmodelOptions o;
  o.seed = 7;
  o.out_dir = orig.path();
  o.layout = CheckpointLayout::kOriginal;
  write_random_checkpoint(micro_config(), o);
  ASSERT_TRUE(file_exists(orig / "original/model.safetensors"));
  ASSERT_TRUE(file_exists(orig / "original/config.json"));
  EXPECT_EQ(detect_format(*SafetensorsCheckpoint::open_dir(orig / "original")), CheckpointFormat::kOriginal);

  const ModelWeights hf = load_model(hf_dir());
  // Both the parent folder (hub layout: no top-level weights) and original/ itself load.
  for (const std::string& dir : {orig.path(), orig / "original"}) {
    const ModelWeights w = load_model(dir);
    EXPECT_EQ(w.format, CheckpointFormat::kOriginal);
    // Same seed -> same values under the other names; q/k/v are row ranges of the fused qkv tensor.
    EXPECT_EQ(w.config.to_json(), hf.config.to_json());  // incl. eos ids from ../generation_config.json
    EXPECT_EQ(w.config.eos_token_ids, hf.config.eos_token_ids);
    EXPECT_TRUE(same_bytes(w.embed, hf.embed));
    EXPECT_TRUE(same_bytes(w.lm_head, hf.lm_head));
    EXPECT_TRUE(same_bytes(w.final_norm, hf.final_norm));
    for (size_t l = 0; l < hf.layers.size(); ++l) {
      const LayerWeights &a = w.layers[l], &b = hf.layers[l];
      for (auto [x, y] : {std::pair{&a.q_w, &b.q_w}, {&a.k_w, &b.k_w}, {&a.v_w, &b.v_w}, {&a.q_b, &b.q_b},
                          {&a.k_b, &b.k_b}, {&a.v_b, &b.v_b}, {&a.o_w, &b.o_w}, {&a.o_b, &b.o_b},
                          {&a.sinks, &b.sinks}, {&a.input_norm, &b.input_norm}, {&a.post_norm, &b.post_norm},
                          {&a.router_w, &b.router_w}, {&a.router_b, &b.router_b},
                          {&a.experts.gate_up_blocks, &b.experts.gate_up_blocks},
                          {&a.experts.gate_up_scales, &b.experts.gate_up_scales},
                          {&a.experts.gate_up_bias, &b.experts.gate_up_bias},
                          {&a.experts.down_blocks, &b.experts.down_blocks},
                          {&a.experts.down_scales, &b.experts.down_scales},
                          {&a.experts.down_bias, &b.experts.down_bias}})
        EXPECT_TRUE(same_bytes(*x, *y)) << "layer " << l << " " << x->name << " vs " << y->name;
    }
  }
}

TEST_F(WeightsTest, TopLevelHfWinsOverOriginal) {
  TempDir both;
  rewrite_checkpoint(hf_dir(), both.path(), [](std::vector<RawTensor>&) {});
  MkmodelOptions o;
  o.seed = 9;
  o.out_dir = both.path();
  o.layout = CheckpointLayout::kOriginal;
  write_random_checkpoint(micro_config(), o);  // adds original/ beside the HF files
  EXPECT_EQ(load_model(both.path()).format, CheckpointFormat::kHfMxfp4);
}

TEST(Weights, Bf16ExpertsAreRefusedWithWhatToPass) {
  TempDir tmp;
  MkmodelOptions o;
  o.seed = 1;
  o.out_dir = tmp.path();
  o.layout = CheckpointLayout::kHfBf16Experts;
  write_random_checkpoint(micro_config(), o);
  EXPECT_EQ(detect_format(*SafetensorsCheckpoint::open_dir(tmp.path())), CheckpointFormat::kHfBf16Experts);
  EXPECT_EQ(nlohmann::json::parse(read_file(tmp / "config.json")).count("quantization_config"), 0u);
  expect_error([&] { load_model(tmp.path()); },
               {"dequantized to bf16", "mlp.experts.gate_up_proj [4, 64, 128] BF16", "MXFP4",
                "quant_method = \"mxfp4\"", "gate_up_proj_blocks", "original/"});
}

}  // namespace
}  // namespace mxs
