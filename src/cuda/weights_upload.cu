// Weight upload (parallel workers through pinned staging: host_upload.h) and
// device-side random weights. Layouts: weights_upload.h and docs/KERNELS.md.
#include "cuda/weights_upload.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include <cuda_bf16.h>

#include "common/error.h"
#include "common/log.h"
#include "common/timer.h"
#include "cuda/cuda_check.h"
#include "cuda/host_upload.h"
#include "cuda/kernels/moe_gemm_pack.h"

namespace mxs::cuda {
namespace {

// Sizes (bytes) of one layer's tensors.
struct LayerBytes {
  size_t norm, qkv_w, qkv_b, o_w, o_b, sinks, router_w, router_b, gu_blocks, gu_scales, gu_bias, dn_blocks,
      dn_scales, dn_bias;
};

LayerBytes layer_bytes(const ModelConfig& c) {
  const size_t H = c.hidden_size, I = c.intermediate_size, E = c.num_experts;
  LayerBytes b{};
  b.norm = H * 2;
  b.qkv_w = size_t(c.qkv_dim()) * H * 2;
  b.qkv_b = size_t(c.qkv_dim()) * 2;
  b.o_w = H * size_t(c.q_dim()) * 2;
  b.o_b = H * 2;
  b.sinks = size_t(c.num_heads) * 2;
  b.router_w = E * H * 2;
  b.router_b = E * 2;
  b.gu_blocks = E * 2 * I * H / 2;
  b.gu_scales = E * 2 * I * H / 32;
  b.gu_bias = E * 2 * I * 2;
  b.dn_blocks = E * H * I / 2;
  b.dn_scales = E * H * I / 32;
  b.dn_bias = E * H * 2;
  return b;
}

// Carves every device tensor out of the arena; `copy(dst, view, offset)` is called for each source tensor
// (nullptr view when filling randomly).
struct Carver {
  DeviceWeights* dw;
  template <typename F>
  void run(F&& place) {
    const ModelConfig& c = dw->config;
    const size_t H = c.hidden_size, V = c.vocab_size;
    const LayerBytes lb = layer_bytes(c);
    auto alloc = [&](const std::string& name, size_t bytes) { return dw->arena.alloc(name, bytes); };
    void* embed = alloc("embed", V * H * 2);
    place(embed, "embed", size_t(0), V * H * 2, -1);
    dw->embed = embed;
    dw->layers.resize(size_t(c.num_layers));
    for (int l = 0; l < c.num_layers; ++l) {
      DeviceLayerWeights& d = dw->layers[size_t(l)];
      const std::string p = "layers." + std::to_string(l) + ".";
      auto put = [&](const char* what, size_t bytes) {
        void* dst = alloc(p + what, bytes);
        place(dst, what, size_t(0), bytes, l);
        return dst;
      };
      d.input_norm = put("input_norm", lb.norm);
      // q, k, v rows into one matrix (and one bias).
      void* qkv = alloc(p + "w_qkv", lb.qkv_w);
      const size_t qb = size_t(c.q_dim()) * H * 2, kb = size_t(c.kv_dim()) * H * 2;
      place(qkv, "q_w", size_t(0), qb, l);
      place(static_cast<char*>(qkv) + qb, "k_w", size_t(0), kb, l);
      place(static_cast<char*>(qkv) + qb + kb, "v_w", size_t(0), kb, l);
      d.w_qkv = qkv;
      void* qkv_b = alloc(p + "b_qkv", lb.qkv_b);
      const size_t qbb = size_t(c.q_dim()) * 2, kbb = size_t(c.kv_dim()) * 2;
      place(qkv_b, "q_b", size_t(0), qbb, l);
      place(static_cast<char*>(qkv_b) + qbb, "k_b", size_t(0), kbb, l);
      place(static_cast<char*>(qkv_b) + qbb + kbb, "v_b", size_t(0), kbb, l);
      d.b_qkv = qkv_b;
      d.w_o = put("o_w", lb.o_w);
      d.b_o = put("o_b", lb.o_b);
      d.sinks = put("sinks", lb.sinks);
      d.post_norm = put("post_norm", lb.norm);
      d.router_w = put("router_w", lb.router_w);
      d.router_b = put("router_b", lb.router_b);
      d.experts.gate_up_blocks = static_cast<const uint8_t*>(put("gate_up_blocks", lb.gu_blocks));
      d.experts.gate_up_scales = static_cast<const uint8_t*>(put("gate_up_scales", lb.gu_scales));
      d.experts.gate_up_bias = put("gate_up_bias", lb.gu_bias);
      d.experts.down_blocks = static_cast<const uint8_t*>(put("down_blocks", lb.dn_blocks));
      d.experts.down_scales = static_cast<const uint8_t*>(put("down_scales", lb.dn_scales));
      d.experts.down_bias = put("down_bias", lb.dn_bias);
    }
    void* fnorm = alloc("final_norm", H * 2);
    place(fnorm, "final_norm", size_t(0), H * 2, -1);
    dw->final_norm = fnorm;
    void* lm = alloc("lm_head", V * H * 2);
    place(lm, "lm_head", size_t(0), V * H * 2, -1);
    dw->lm_head = lm;
  }
};

const TensorView& source_tensor(const ModelWeights& w, const std::string& what, int layer) {
  if (layer < 0) {
    if (what == "embed") return w.embed;
    if (what == "final_norm") return w.final_norm;
    return w.lm_head;
  }
  const LayerWeights& l = w.layers[size_t(layer)];
  const ExpertWeights& e = l.experts;
  if (what == "input_norm") return l.input_norm;
  if (what == "q_w") return l.q_w;
  if (what == "k_w") return l.k_w;
  if (what == "v_w") return l.v_w;
  if (what == "q_b") return l.q_b;
  if (what == "k_b") return l.k_b;
  if (what == "v_b") return l.v_b;
  if (what == "o_w") return l.o_w;
  if (what == "o_b") return l.o_b;
  if (what == "sinks") return l.sinks;
  if (what == "post_norm") return l.post_norm;
  if (what == "router_w") return l.router_w;
  if (what == "router_b") return l.router_b;
  if (what == "gate_up_blocks") return e.gate_up_blocks;
  if (what == "gate_up_scales") return e.gate_up_scales;
  if (what == "gate_up_bias") return e.gate_up_bias;
  if (what == "down_blocks") return e.down_blocks;
  if (what == "down_scales") return e.down_scales;
  return e.down_bias;
}

// The experts into the kernels' packed layout (moe_gemm_pack.h), in place: a byte permutation inside each
// 64-row group, same sizes, so the arena holds one copy of the experts.
void pack_experts_in_place(DeviceWeights* dw, cudaStream_t stream) {
  const ModelConfig& c = dw->config;
  const int E = c.num_experts, H = c.hidden_size, I = c.intermediate_size;
  for (DeviceLayerWeights& l : dw->layers) {
    auto* gub = const_cast<uint8_t*>(l.experts.gate_up_blocks);
    auto* gus = const_cast<uint8_t*>(l.experts.gate_up_scales);
    auto* dnb = const_cast<uint8_t*>(l.experts.down_blocks);
    auto* dns = const_cast<uint8_t*>(l.experts.down_scales);
    moe_gemm_pack_experts(gub, gus, gub, gus, E, 2 * I, H, stream);
    moe_gemm_pack_experts(dnb, dns, dnb, dns, E, H, I, stream);
  }
  // Per layer: is any scale byte > 128? If not, its kernels skip the dequantization's second factor.
  const size_t L = dw->layers.size();
  unsigned* d_max = nullptr;
  CUDA_CHECK(cudaMallocAsync(&d_max, L * sizeof(unsigned), stream));
  CUDA_CHECK(cudaMemsetAsync(d_max, 0, L * sizeof(unsigned), stream));
  for (size_t l = 0; l < L; ++l) {
    const MoeGemmWeights& x = dw->layers[l].experts;
    moe_scales_max_async(x.gate_up_scales, size_t(E) * 2 * I * (H / 32), d_max + l, stream);
    moe_scales_max_async(x.down_scales, size_t(E) * H * (I / 32), d_max + l, stream);
  }
  std::vector<unsigned> max_scale(L);
  CUDA_CHECK(cudaMemcpyAsync(max_scale.data(), d_max, L * sizeof(unsigned), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaFreeAsync(d_max, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  int n_big = 0;
  for (size_t l = 0; l < L; ++l) n_big += (dw->layers[l].experts.big_scales = max_scale[l] > 128);
  if (n_big > 0)
    MXS_LOG_INFO("%d of %zu layers have MXFP4 block scales > 2: their expert kernels take the slower dequantization",
                 n_big, L);
}

void finish_tables(DeviceWeights* dw) {
  std::vector<float> inv_freq;
  yarn_tables(dw->config, &inv_freq, &dw->mscale);
  float* d = dw->arena.alloc_as<float>("rope_inv_freq", inv_freq.size());
  CUDA_CHECK(cudaMemcpy(d, inv_freq.data(), inv_freq.size() * sizeof(float), cudaMemcpyHostToDevice));
  dw->inv_freq = d;
}

// Random fill: a counter hash per byte or element.
__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return uint32_t(x);
}

enum class Fill { kBf16Uniform, kBf16Const, kBytes, kScales };

__global__ void fill_kernel(void* dst, size_t n, Fill kind, float a, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t h = hash32(seed * 0x9e3779b97f4a7c15ull + i);
    switch (kind) {
      case Fill::kBf16Uniform:
        static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(a * (float(h >> 8) * (2.0f / 16777216.0f) - 1.0f));
        break;
      case Fill::kBf16Const: static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(a); break;
      case Fill::kBytes: static_cast<uint8_t*>(dst)[i] = uint8_t(h >> 24); break;
      case Fill::kScales: static_cast<uint8_t*>(dst)[i] = uint8_t(a) + uint8_t((h >> 24) % 3); break;
    }
  }
}

}  // namespace

void yarn_tables(const ModelConfig& c, std::vector<float>* inv_freq, float* mscale) {
  const double base = c.rope_theta, factor = c.rope_factor, dim = double(c.head_dim);
  const double l0 = double(c.rope_original_max_position);
  *mscale = float(factor <= 1.0 ? 1.0 : 0.1 * std::log(factor) + 1.0);
  auto correction_dim = [&](double num_rot) {
    return (dim * std::log(l0 / (num_rot * 2.0 * M_PI))) / (2.0 * std::log(base));
  };
  double low = correction_dim(c.rope_beta_fast), high = correction_dim(c.rope_beta_slow);
  if (c.rope_truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1.0);
  if (low == high) high += 0.001;
  const float low_f = float(low), range_f = float(high - low);
  const int half = c.head_dim / 2;
  inv_freq->resize(size_t(half));
  for (int i = 0; i < half; ++i) {
    const float pos_freq = std::pow(float(base), float(2 * i) / float(dim));  // fp32, as torch
    const float extrapolation = 1.0f / pos_freq;
    const float interpolation = 1.0f / (float(factor) * pos_freq);
    const float ramp = std::clamp((float(i) - low_f) / range_f, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    (*inv_freq)[size_t(i)] = interpolation * (1.0f - extrapolation_factor) + extrapolation * extrapolation_factor;
  }
}

size_t device_weights_bytes(const ModelConfig& c) {
  const LayerBytes b = layer_bytes(c);
  const size_t per_layer = DeviceArena::aligned(b.norm) * 2 + DeviceArena::aligned(b.qkv_w) +
                           DeviceArena::aligned(b.qkv_b) + DeviceArena::aligned(b.o_w) + DeviceArena::aligned(b.o_b) +
                           DeviceArena::aligned(b.sinks) + DeviceArena::aligned(b.router_w) +
                           DeviceArena::aligned(b.router_b) + DeviceArena::aligned(b.gu_blocks) +
                           DeviceArena::aligned(b.gu_scales) + DeviceArena::aligned(b.gu_bias) +
                           DeviceArena::aligned(b.dn_blocks) + DeviceArena::aligned(b.dn_scales) +
                           DeviceArena::aligned(b.dn_bias);
  const size_t vh = DeviceArena::aligned(size_t(c.vocab_size) * c.hidden_size * 2);
  return per_layer * size_t(c.num_layers) + 2 * vh + DeviceArena::aligned(size_t(c.hidden_size) * 2) + 4096;
}

DeviceWeights upload_weights(const ModelWeights& w, bool progress) {
  Stopwatch sw;
  DeviceWeights dw;
  dw.config = w.config;
  dw.arena = DeviceArena("weights", device_weights_bytes(w.config));

  // Every tensor's copy, checked first (a size that does not match the config names the tensor before any byte
  // moves), then copied by parallel workers through pinned staging (host_upload.h).
  std::vector<HostToDeviceCopy> copies;
  auto place = [&](void* dst, const char* what, size_t, size_t bytes, int layer) {
    const TensorView& t = source_tensor(w, what, layer);
    if (t.data == nullptr || t.nbytes != bytes)
      throw Error(strfmt("upload_weights: tensor '%s' (layer %d) has %zu bytes, expected %zu for this config",
                         t.name.empty() ? what : t.name.c_str(), layer, t.nbytes, bytes));
    copies.push_back({dst, t.data, bytes});
  };
  Carver{&dw}.run(place);
  HostUploadOptions uo;
  int last_pct = -1;
  size_t copied = 0;
  uo.on_progress = [&](size_t done, size_t total) {
    copied = done;
    const int pct = total > 0 ? int(100.0 * double(done) / double(total)) : 100;
    if (!progress || pct / 5 == last_pct / 5) return;
    last_pct = pct;
    const int bars = pct / 5;
    std::fprintf(stderr, "\rloading weights to the GPU [%.*s%*s] %3d%% %.1f GB", bars, "####################",
                 20 - bars, "", pct, done / 1e9);
    std::fflush(stderr);
  };
  copy_host_to_device(copies, uo);
  if (progress) std::fprintf(stderr, "\n");
  cudaStream_t stream;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  pack_experts_in_place(&dw, stream);
  cudaStreamDestroy(stream);
  finish_tables(&dw);
  dw.upload_seconds = sw.seconds();
  MXS_LOG_INFO("weights on the GPU: %.2f GB in %.2f s (%.1f GB/s; %d upload threads)", copied / 1e9,
               dw.upload_seconds, copied / 1e9 / std::max(dw.upload_seconds, 1e-9), host_upload_threads(uo));
  return dw;
}

DeviceWeights random_weights(const ModelConfig& config, uint64_t seed) {
  Stopwatch sw;
  DeviceWeights dw;
  dw.config = config;
  dw.arena = DeviceArena("weights", device_weights_bytes(config));
  uint64_t counter = seed * 1000003ull;
  auto place = [&](void* dst, const char* what_c, size_t, size_t bytes, int) {
    const std::string what = what_c;
    Fill kind = Fill::kBf16Uniform;
    float a = 0.03f;
    if (what == "input_norm" || what == "post_norm" || what == "final_norm") kind = Fill::kBf16Const, a = 1.0f;
    else if (what == "sinks") a = 1.0f;
    else if (what == "gate_up_blocks" || what == "down_blocks") kind = Fill::kBytes;
    else if (what == "gate_up_scales" || what == "down_scales") kind = Fill::kScales, a = 120.0f;  // 2^-7..2^-5
    else if (what == "embed") a = 1.0f;
    const size_t n = kind == Fill::kBytes || kind == Fill::kScales ? bytes : bytes / 2;
    fill_kernel<<<1024, 256>>>(dst, n, kind, a, ++counter);
    CUDA_CHECK_LAUNCH();
  };
  Carver{&dw}.run(place);
  CUDA_CHECK(cudaDeviceSynchronize());
  pack_experts_in_place(&dw, nullptr);  // (random bytes either way; packed so that the layout is the real one)
  finish_tables(&dw);
  dw.upload_seconds = sw.seconds();
  return dw;
}

}  // namespace mxs::cuda
