// mkmodel: the tensor list of each layout, the counter-based value generator (every element is a pure function
// of (seed, tensor name, index), so threads and chunking cannot change a byte), and the sharded streaming writer.
#include "model/mkmodel.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <map>

#include <nlohmann/json.hpp>

#include "common/bf16.h"
#include "common/error.h"
#include "common/mxfp4.h"
#include "common/paths.h"
#include "common/thread_pool.h"
#include "model/safetensors.h"

namespace mxs {
namespace {

using nlohmann::json;

// splitmix64's output function: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Element `index` of stream `key`: the splitmix64 sequence evaluated at position index (counter-based).
inline uint64_t random_u64(uint64_t key, uint64_t index) { return mix64(key + (index + 1) * 0x9e3779b97f4a7c15ull); }

// Sum of four 16-bit uniforms, centred: an integer in [-131070, 131070] with standard deviation 65536/sqrt(3)
// (up to 1e-9). Converting it to float is exact, so the only rounding is the single multiply that follows.
inline int32_t irwin_hall4(uint64_t r) {
  return int32_t(r & 0xffff) + int32_t((r >> 16) & 0xffff) + int32_t((r >> 32) & 0xffff) + int32_t(r >> 48) -
         2 * 65535;
}
constexpr float kIrwinHallToUnit = 1.7320508075688772f / 65536.0f;  // sqrt(3) / 65536

// The coarser twin for MXFP4 weights, two normals per 64-bit draw (half the hashing, which dominates the 20b
// preset's ~19 G expert values): four 8-bit uniforms, centred, in [-510, 510], standard deviation 256/sqrt(3)
// (up to 2e-5). 1021 levels are far finer than the 3-bit e2m1 mantissa they are quantized to.
inline int32_t irwin_hall4_u8(uint32_t r) {
  return int32_t(r & 0xff) + int32_t((r >> 8) & 0xff) + int32_t((r >> 16) & 0xff) + int32_t(r >> 24) - 2 * 255;
}
constexpr float kIrwinHallU8ToUnit = 1.7320508075688772f / 256.0f;  // sqrt(3) / 256

// Branch-free nearest e2m1 code, ties to the even code: the same function as mxs::f32_to_e2m1 (the mkmodel test
// checks that on a dense sweep), inlined because mkmodel quantizes ~19 G values for the 20b preset.
// Magnitude code = number of the midpoints 0.25 .75 1.25 1.75 2.5 3.5 5 that |x| passes; at a tie the comparison
// (> or >=) sends it to the even code.
inline uint8_t e2m1_code(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  // |x| as bits: for non-negative floats the integer order is the float order, so the comparisons run as
  // integer ops the compiler vectorizes. NaN (bits above inf) gets code 0 like f32_to_e2m1, without a branch.
  const uint32_t a = u & 0x7fffffffu;
  const uint32_t code = (a <= 0x7f800000u) * ((a > 0x3e800000u) + (a >= 0x3f400000u) + (a > 0x3fa00000u) + (a >= 0x3fe00000u) +
                        (a > 0x40200000u) + (a >= 0x40600000u) + (a > 0x40a00000u));  // .25 .75 1.25 1.75 2.5 3.5 5
  return uint8_t(((u >> 28) & 8u) | code);
}

enum class Kind {
  kNormal,     // bf16 ~ N(0, std^2)
  kNormGain,   // bf16 RMSNorm gain: 1 + k/256, k in [-8, 8]
  kMxBlocks,   // U8 [E, out, in/32, 16]: e2m1 nibbles of N(0, std^2) weights
  kMxScales,   // U8 [E, out, in/32]: the e8m0 scales of the same weights
};

// A tensor is a stack of row ranges ("parts") along dim 0, each drawn from its own stream; only the fused
// original qkv has more than one part (its q, k, v rows use the streams of the HF q/k/v tensors, so both
// layouts hold the same values).
struct Part {
  uint64_t key;
  int64_t rows;
};

struct TensorSpec {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  Kind kind;
  float stddev = 0;
  std::vector<Part> parts;
  std::string scales_name;  // kMxBlocks: the matching kMxScales tensor (filled from the same pass)

  // Rows = product of all dims but the last (all but the last two for MXFP4 blocks); row_bytes = the rest.
  int64_t rows() const {
    const size_t keep = kind == Kind::kMxBlocks ? 2 : 1;
    int64_t r = 1;
    for (size_t i = 0; i + keep < shape.size(); ++i) r *= shape[i];
    return r;
  }
  int64_t nbytes() const {
    int64_t n = int64_t(dtype_size(dtype));
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t row_bytes() const { return nbytes() / rows(); }
};

class SpecBuilder {
 public:
  SpecBuilder(uint64_t seed) : seed_key_(mix64(seed ^ 0x6d786d6f64656c31ull)) {}  // "mxmodel1"

  uint64_t key(const std::string& stream) const { return mix64(fnv1a(stream) ^ seed_key_); }

  void normal(const std::string& name, const std::string& stream, std::vector<int64_t> shape, float stddev) {
    specs.push_back({name, DType::kBF16, shape, Kind::kNormal, stddev, {{key(stream), shape[0]}}, ""});
  }
  void gain(const std::string& name, const std::string& stream, int64_t n) {
    specs.push_back({name, DType::kBF16, {n}, Kind::kNormGain, 0, {{key(stream), n}}, ""});
  }
  // The pair blocks + scales of an [E, out, in] MXFP4 weight; `stream` names the logical weight.
  void mxfp4(const std::string& blocks, const std::string& scales, const std::string& stream, int64_t E, int64_t out,
             int64_t in) {
    const float sd = 1.0f / std::sqrt(float(in));
    specs.push_back({blocks, DType::kU8, {E, out, in / 32, 16}, Kind::kMxBlocks, sd, {{key(stream), E * out}}, scales});
    specs.push_back({scales, DType::kU8, {E, out, in / 32}, Kind::kMxScales, sd, {{key(stream), E * out}}, ""});
  }

  std::vector<TensorSpec> specs;

 private:
  uint64_t seed_key_;
};

// Magnitudes: linear weights N(0, 1/fan_in) so that every projection of an RMS-normalised input is O(1);
// router logits ~N(0, 1) so that routing varies; biases 0.02; sinks N(0, 1); embedding N(0, 1).
std::vector<TensorSpec> tensor_specs(const ModelConfig& c, CheckpointLayout layout, uint64_t seed) {
  SpecBuilder b(seed);
  const int64_t V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size, E = c.num_experts;
  const int64_t Q = c.q_dim(), KV = c.kv_dim();
  const float sd_h = 1.0f / std::sqrt(float(H)), sd_q = 1.0f / std::sqrt(float(Q)), sd_i = 1.0f / std::sqrt(float(I));
  const float sd_bias = 0.02f;
  const bool orig = layout == CheckpointLayout::kOriginal;

  b.normal(orig ? "embedding.weight" : "model.embed_tokens.weight", "model.embed_tokens.weight", {V, H}, 1.0f);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = strfmt("model.layers.%d.", l);
    const std::string o = strfmt("block.%d.", l);
    auto name = [&](const char* hf, const char* original) { return orig ? o + original : p + hf; };
    b.gain(name("input_layernorm.weight", "attn.norm.scale"), p + "input_layernorm.weight", H);
    if (orig) {
      b.specs.push_back({o + "attn.qkv.weight", DType::kBF16, {Q + 2 * KV, H}, Kind::kNormal, sd_h,
                         {{b.key(p + "self_attn.q_proj.weight"), Q},
                          {b.key(p + "self_attn.k_proj.weight"), KV},
                          {b.key(p + "self_attn.v_proj.weight"), KV}},
                         ""});
      b.specs.push_back({o + "attn.qkv.bias", DType::kBF16, {Q + 2 * KV}, Kind::kNormal, sd_bias,
                         {{b.key(p + "self_attn.q_proj.bias"), Q},
                          {b.key(p + "self_attn.k_proj.bias"), KV},
                          {b.key(p + "self_attn.v_proj.bias"), KV}},
                         ""});
      // A 1-D tensor is one row: give its parts in elements (rows() == 1 is handled in generate_rows).
    } else {
      b.normal(p + "self_attn.q_proj.weight", p + "self_attn.q_proj.weight", {Q, H}, sd_h);
      b.normal(p + "self_attn.q_proj.bias", p + "self_attn.q_proj.bias", {Q}, sd_bias);
      b.normal(p + "self_attn.k_proj.weight", p + "self_attn.k_proj.weight", {KV, H}, sd_h);
      b.normal(p + "self_attn.k_proj.bias", p + "self_attn.k_proj.bias", {KV}, sd_bias);
      b.normal(p + "self_attn.v_proj.weight", p + "self_attn.v_proj.weight", {KV, H}, sd_h);
      b.normal(p + "self_attn.v_proj.bias", p + "self_attn.v_proj.bias", {KV}, sd_bias);
    }
    b.normal(name("self_attn.o_proj.weight", "attn.out.weight"), p + "self_attn.o_proj.weight", {H, Q}, sd_q);
    b.normal(name("self_attn.o_proj.bias", "attn.out.bias"), p + "self_attn.o_proj.bias", {H}, sd_bias);
    b.normal(name("self_attn.sinks", "attn.sinks"), p + "self_attn.sinks", {c.num_heads}, 1.0f);
    b.gain(name("post_attention_layernorm.weight", "mlp.norm.scale"), p + "post_attention_layernorm.weight", H);
    b.normal(name("mlp.router.weight", "mlp.gate.weight"), p + "mlp.router.weight", {E, H}, sd_h);
    b.normal(name("mlp.router.bias", "mlp.gate.bias"), p + "mlp.router.bias", {E}, sd_bias);
    if (layout == CheckpointLayout::kHfBf16Experts) {
      // HF's dequantized layout: [E, in, out] (transposed for x @ W).
      b.normal(p + "mlp.experts.gate_up_proj", p + "mlp.experts.gate_up_proj", {E, H, 2 * I}, sd_h);
      b.normal(p + "mlp.experts.gate_up_proj_bias", p + "mlp.experts.gate_up_proj_bias", {E, 2 * I}, sd_bias);
      b.normal(p + "mlp.experts.down_proj", p + "mlp.experts.down_proj", {E, I, H}, sd_i);
      b.normal(p + "mlp.experts.down_proj_bias", p + "mlp.experts.down_proj_bias", {E, H}, sd_bias);
    } else {
      b.mxfp4(name("mlp.experts.gate_up_proj_blocks", "mlp.mlp1_weight.blocks"),
              name("mlp.experts.gate_up_proj_scales", "mlp.mlp1_weight.scales"), p + "mlp.experts.gate_up_proj", E,
              2 * I, H);
      b.normal(name("mlp.experts.gate_up_proj_bias", "mlp.mlp1_bias"), p + "mlp.experts.gate_up_proj_bias",
               {E, 2 * I}, sd_bias);
      b.mxfp4(name("mlp.experts.down_proj_blocks", "mlp.mlp2_weight.blocks"),
              name("mlp.experts.down_proj_scales", "mlp.mlp2_weight.scales"), p + "mlp.experts.down_proj", E, H, I);
      b.normal(name("mlp.experts.down_proj_bias", "mlp.mlp2_bias"), p + "mlp.experts.down_proj_bias", {E, H}, sd_bias);
    }
  }
  b.gain(orig ? "norm.scale" : "model.norm.weight", "model.norm.weight", H);
  b.normal(orig ? "unembedding.weight" : "lm_head.weight", "lm_head.weight", {V, H}, sd_h);
  return b.specs;
}

// Fills rows [r0, r1) of `t` into `out` (row r0 at out[0]). `scales_out`, for kMxBlocks, receives the scale
// bytes of the same rows (row r0 at scales_out[0]).
void generate_rows(const TensorSpec& t, int64_t r0, int64_t r1, uint8_t* out, uint8_t* scales_out) {
  const int64_t row_bytes = t.row_bytes();
  const int64_t rows_total = t.rows();
  // 1-D tensors are a single row whose parts are measured in elements; 2-D+ parts are measured in rows.
  const int64_t unit = rows_total == 1 && t.shape.size() == 1 ? 1 : 0;
  switch (t.kind) {
    case Kind::kNormal:
    case Kind::kNormGain: {
      const int64_t row_len = row_bytes / 2;
      const float mul = kIrwinHallToUnit * t.stddev;
      uint16_t* dst = reinterpret_cast<uint16_t*>(out);
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t i = 0; i < row_len; ++i) {
          // Locate the part holding (r, i) and the element's index inside that part's stream.
          int64_t pos = unit ? i : r, base = 0;
          size_t pi = 0;
          while (pi + 1 < t.parts.size() && pos >= base + t.parts[pi].rows) base += t.parts[pi++].rows;
          const uint64_t idx = unit ? uint64_t(pos - base) : uint64_t((r - base) * row_len + i);
          const uint64_t u = random_u64(t.parts[pi].key, idx);
          float v;
          if (t.kind == Kind::kNormal) {
            v = float(irwin_hall4(u)) * mul;
          } else {
            v = float(256 + int(u % 17) - 8) / 256.0f;  // exact
          }
          dst[(r - r0) * row_len + i] = f32_to_bf16(v).bits;
        }
      }
      break;
    }
    case Kind::kMxBlocks:
    case Kind::kMxScales: {
      const int64_t n_blocks = t.shape[2];
      const uint64_t key = t.parts[0].key;
      float w[32];
      uint8_t packed[16];
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t g = 0; g < n_blocks; ++g) {
          mkmodel_mxfp4_block_weights(key, uint64_t(r * n_blocks + g), t.stddev, w);
          const uint8_t scale = mkmodel_quantize_block(w, packed);
          if (t.kind == Kind::kMxBlocks) {
            std::memcpy(out + (r - r0) * row_bytes + g * 16, packed, 16);
            if (scales_out) scales_out[(r - r0) * n_blocks + g] = scale;
          } else {
            out[(r - r0) * n_blocks + g] = scale;
          }
        }
      }
      break;
    }
  }
}

std::string shard_name(size_t i, size_t n) {
  return strfmt("model-%05zu-of-%05zu.safetensors", i + 1, n);
}

// Progress on stderr: one line rewritten in place, at most ~8 updates per second.
class Progress {
 public:
  Progress(bool enabled, uint64_t total) : enabled_(enabled), total_(total), start_(now()) {}
  void add(uint64_t bytes) {
    done_ += bytes;
    if (!enabled_) return;
    const double t = now();
    if (t - last_ < 0.125 && done_ < total_) return;
    last_ = t;
    const double frac = total_ ? double(done_) / double(total_) : 1.0;
    const int width = 30, filled = int(frac * width);
    const double rate = (t - start_) > 0 ? double(done_) / (t - start_) : 0;
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %.2f / %.2f GB  %.0f MB/s  ETA %.0f s   ",
                 std::string(size_t(filled), '#').c_str(), std::string(size_t(width - filled), '.').c_str(),
                 100 * frac, done_ / 1e9, total_ / 1e9, rate / 1e6,
                 rate > 0 ? double(total_ - done_) / rate : 0.0);
    if (done_ >= total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }
  double elapsed() const { return now() - start_; }

 private:
  static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  bool enabled_;
  uint64_t total_, done_ = 0;
  double start_, last_ = 0;
};

// Writes `specs` into one safetensors file, generating in ~16 MB chunks on the thread pool while the previous
// chunk is written (double buffering).
void write_shard(const std::string& path, const std::vector<const TensorSpec*>& specs, Progress* progress) {
  std::vector<SafetensorsWriter::Entry> entries;
  for (const TensorSpec* t : specs) entries.push_back({t->name, t->dtype, t->shape});
  SafetensorsWriter writer(path, entries, {{"format", "pt"}});  // transformers requires format "pt"

  constexpr int64_t kChunkBytes = 16 << 20;
  std::vector<uint8_t> buffers[2];
  int cur = 0;
  std::future<void> pending;
  std::map<std::string, std::vector<uint8_t>> scales_cache;  // scales computed with their blocks
  ThreadPool& pool = ThreadPool::global();

  for (const TensorSpec* t : specs) {
    const int64_t rows = t->rows(), row_bytes = t->row_bytes();
    if (t->kind == Kind::kMxScales && scales_cache.count(t->name)) {
      std::vector<uint8_t> s = std::move(scales_cache[t->name]);
      scales_cache.erase(t->name);
      if (pending.valid()) pending.get();
      buffers[cur] = std::move(s);
      const int b = cur;
      pending = std::async(std::launch::async, [&writer, &buffers, t, b, progress] {
        writer.write_tensor_part(t->name, buffers[b].data(), buffers[b].size());
        progress->add(buffers[b].size());
      });
      cur ^= 1;
      continue;
    }
    uint8_t* scales = nullptr;
    if (t->kind == Kind::kMxBlocks) {
      std::vector<uint8_t>& s = scales_cache[t->scales_name];
      s.resize(size_t(rows * t->shape[2]));
      scales = s.data();
    }
    const int64_t rows_per_chunk = std::max<int64_t>(1, kChunkBytes / std::max<int64_t>(row_bytes, 1));
    for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
      const int64_t r1 = std::min(rows, r0 + rows_per_chunk);
      // At most one write is in flight, and it reads buffers[cur ^ 1]: buffers[cur] is free to fill.
      std::vector<uint8_t>& buf = buffers[cur];
      buf.resize(size_t((r1 - r0) * row_bytes));
      uint8_t* dst = buf.data();
      const int64_t scale_stride = t->kind == Kind::kMxBlocks ? t->shape[2] : 0;
      pool.parallel_for(r1 - r0, [&](int64_t b, int64_t e) {
        generate_rows(*t, r0 + b, r0 + e, dst + b * row_bytes, scales ? scales + (r0 + b) * scale_stride : nullptr);
      });
      if (pending.valid()) pending.get();
      const int b = cur;
      pending = std::async(std::launch::async, [&writer, &buffers, t, b, progress] {
        writer.write_tensor_part(t->name, buffers[b].data(), buffers[b].size());
        progress->add(buffers[b].size());
      });
      cur ^= 1;
    }
  }
  if (pending.valid()) pending.get();
  writer.close();
}

void write_json(const std::string& path, const json& j) { write_file_atomic(path, j.dump(2) + "\n"); }

// Hard link when possible (the tokenizer is 27 MB), else a copy.
void link_or_copy(const std::string& from, const std::string& to) {
  std::error_code ec;
  std::filesystem::remove(to, ec);
  std::filesystem::create_hard_link(from, to, ec);
  if (!ec) return;
  std::filesystem::copy_file(from, to, std::filesystem::copy_options::overwrite_existing, ec);
  if (ec) throw Error(strfmt("cannot copy %s to %s: %s", from.c_str(), to.c_str(), ec.message().c_str()));
}

void write_tokenizer_files(const std::string& tokenizer_path, const std::string& dir, std::vector<std::string>* files) {
  MXS_CHECK(file_exists(tokenizer_path), strfmt("tokenizer file %s does not exist", tokenizer_path.c_str()));
  link_or_copy(tokenizer_path, join_path(dir, "tokenizer.json"));
  files->push_back("tokenizer.json");
  const size_t slash = tokenizer_path.find_last_of('/');
  const std::string beside =
      join_path(slash == std::string::npos ? "." : tokenizer_path.substr(0, slash), "tokenizer_config.json");
  if (file_exists(beside)) {
    link_or_copy(beside, join_path(dir, "tokenizer_config.json"));
  } else {
    // The hub file minus added_tokens_decoder (transformers takes the added tokens from tokenizer.json).
    write_json(join_path(dir, "tokenizer_config.json"),
               {{"bos_token", "<|startoftext|>"},
                {"clean_up_tokenization_spaces", false},
                {"eos_token", "<|return|>"},
                {"model_input_names", {"input_ids", "attention_mask"}},
                {"model_max_length", 1000000000000000019884624838656.0},
                {"pad_token", "<|endoftext|>"},
                {"tokenizer_class", "PreTrainedTokenizerFast"}});
  }
  files->push_back("tokenizer_config.json");
  write_json(join_path(dir, "special_tokens_map.json"),
             {{"bos_token", "<|startoftext|>"}, {"eos_token", "<|return|>"}, {"pad_token", "<|endoftext|>"}});
  files->push_back("special_tokens_map.json");
}

}  // namespace

uint8_t mkmodel_e2m1_code(float x) { return e2m1_code(x); }

void mkmodel_mxfp4_block_weights(uint64_t key, uint64_t block, float stddev, float* w32) {
  const float mul = kIrwinHallU8ToUnit * stddev;
  for (int j = 0; j < 16; ++j) {
    const uint64_t r = random_u64(key, block * 16 + uint64_t(j));
    w32[2 * j] = float(irwin_hall4_u8(uint32_t(r))) * mul;
    w32[2 * j + 1] = float(irwin_hall4_u8(uint32_t(r >> 32))) * mul;
  }
}

float mkmodel_normal(uint64_t key, uint64_t index) {
  return float(irwin_hall4(random_u64(key, index))) * kIrwinHallToUnit;
}

uint8_t mkmodel_quantize_block(const float* w32, uint8_t* packed16) {
  // max |w| through the bit patterns (an integer max the compiler vectorizes; exact for non-NaN input).
  uint32_t amax_bits = 0;
  for (int k = 0; k < 32; ++k) {
    uint32_t u;
    std::memcpy(&u, &w32[k], 4);
    amax_bits = std::max(amax_bits, u & 0x7fffffffu);
  }
  float amax;
  std::memcpy(&amax, &amax_bits, 4);
  int e = 0;  // block scale 2^e
  if (amax > 0) {
    // amax / 6 = m * 2^e with m in [0.5, 1): 2^e is the smallest power of 2 >= amax / 6, unless m == 0.5 exactly.
    const float m = std::frexp(amax / 6.0f, &e);
    if (m == 0.5f) e -= 1;
  }
  e = std::clamp(e, -126, 127);
  // x = w * 2^-e is exact (ldexp by a power-of-2 product); 2^-e is built from the exponent bits where it is a
  // normal float (always, for weights that are not astronomically large), else ldexp.
  uint8_t codes[32];
  if (-e <= 127) {
    float inv;
    const uint32_t bits = uint32_t(127 - e) << 23;
    std::memcpy(&inv, &bits, 4);
    for (int k = 0; k < 32; ++k) codes[k] = e2m1_code(w32[k] * inv);  // a loop the compiler vectorizes
  } else {
    for (int k = 0; k < 32; ++k) codes[k] = e2m1_code(std::ldexp(w32[k], -e));
  }
  for (int b = 0; b < 16; ++b) packed16[b] = uint8_t(codes[2 * b] | (codes[2 * b + 1] << 4));
  return uint8_t(e + 127);
}

const char* layout_name(CheckpointLayout l) {
  switch (l) {
    case CheckpointLayout::kHf: return "hf";
    case CheckpointLayout::kOriginal: return "original";
    case CheckpointLayout::kHfBf16Experts: return "bf16-experts";
  }
  return "?";
}

bool layout_from_name(const std::string& name, CheckpointLayout* out) {
  for (CheckpointLayout l : {CheckpointLayout::kHf, CheckpointLayout::kOriginal, CheckpointLayout::kHfBf16Experts})
    if (name == layout_name(l)) {
      *out = l;
      return true;
    }
  return false;
}

std::string find_tokenizer_json() {
  if (const char* env = std::getenv("MXSERVE_TOKENIZER"); env && *env && file_exists(env)) return env;
  const std::string cached = join_path(join_path(cache_dir(), "tokenizer"), "tokenizer.json");
  return file_exists(cached) ? cached : "";
}

MkmodelResult write_random_checkpoint(const ModelConfig& config, uint64_t seed, const std::string& out_dir,
                                      const std::string& tokenizer_path) {
  MkmodelOptions o;
  o.seed = seed;
  o.out_dir = out_dir;
  o.tokenizer_path = tokenizer_path;
  return write_random_checkpoint(config, o);
}

MkmodelResult write_random_checkpoint(const ModelConfig& config_in, const MkmodelOptions& opt) {
  MXS_CHECK(!opt.out_dir.empty(), "mkmodel: no output folder given");
  ModelConfig config = config_in;
  if (opt.layout == CheckpointLayout::kHfBf16Experts) config.quant_method = "";
  MkmodelResult result;
  const std::vector<TensorSpec> specs = tensor_specs(config, opt.layout, opt.seed);
  uint64_t total = 0;
  for (const TensorSpec& t : specs) total += uint64_t(t.nbytes());
  result.tensor_bytes = total;
  Progress progress(opt.progress, total);

  const bool orig = opt.layout == CheckpointLayout::kOriginal;
  const std::string weights_dir = orig ? join_path(opt.out_dir, "original") : opt.out_dir;
  const std::string prefix = orig ? "original/" : "";
  make_dirs(weights_dir);

  // Shards: consecutive tensors until the next would pass max_shard_bytes (the original layout is one file,
  // as on the hub).
  std::vector<std::vector<const TensorSpec*>> shards(1);
  uint64_t in_shard = 0;
  for (const TensorSpec& t : specs) {
    if (!orig && in_shard > 0 && in_shard + uint64_t(t.nbytes()) > opt.max_shard_bytes &&
        t.kind != Kind::kMxScales) {  // scales stay with their blocks (computed in the same pass)
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += uint64_t(t.nbytes());
  }

  json weight_map = json::object();
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string name = orig ? "model.safetensors" : shard_name(i, shards.size());
    const std::string path = join_path(weights_dir, name);
    write_shard(path, shards[i], &progress);
    result.files.push_back(prefix + name);
    result.file_bytes += uint64_t(std::filesystem::file_size(path));
    for (const TensorSpec* t : shards[i]) weight_map[t->name] = name;
  }

  if (orig) {
    write_json(join_path(weights_dir, "config.json"), config.to_original_json());
    json dtypes = json::object();
    for (const TensorSpec& t : specs)
      dtypes[t.name] = t.kind == Kind::kMxBlocks ? "FP4" : t.kind == Kind::kMxScales ? "UE8" : "BF16";
    write_json(join_path(weights_dir, "dtypes.json"), dtypes);
    result.files.push_back("original/config.json");
    result.files.push_back("original/dtypes.json");
  } else {
    write_json(join_path(opt.out_dir, "model.safetensors.index.json"),
               {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
    write_json(join_path(opt.out_dir, "config.json"), config.to_json());
    result.files.push_back("model.safetensors.index.json");
    result.files.push_back("config.json");
  }
  // Top level in every layout, as on the hub (original/ has no token ids of its own).
  write_json(join_path(opt.out_dir, "generation_config.json"),
             {{"bos_token_id", 199998},
              {"do_sample", true},
              {"eos_token_id", config.eos_token_ids},
              {"pad_token_id", config.pad_token_id},
              {"transformers_version", "4.55.0.dev0"}});
  result.files.push_back("generation_config.json");
  if (!opt.tokenizer_path.empty()) write_tokenizer_files(opt.tokenizer_path, opt.out_dir, &result.files);
  result.seconds = progress.elapsed();
  return result;
}

}  // namespace mxs
