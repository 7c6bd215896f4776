// Decode attention kernel benchmark (see bench_attention_decode.h).
#include "cuda/bench_attention_decode.h"

#include "cuda/bench_runner.h"
#include "cuda/event_timing.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "common/bf16.h"
#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/attention_decode.h"

namespace mxs::cuda {
namespace {

constexpr int kHeadDim = 64;

int next_pow2(int v) {
  int p = 1;
  while (p < v) p <<= 1;
  return p;
}
// CudaRunner's keys per split of the existing kernel (cuda_runner.cu split_keys).
int old_split_keys(int n_rows) { return n_rows <= 2 ? 64 : n_rows <= 8 ? 128 : 256; }

// Uniform bf16 in [lo, hi) from a counter hash (splitmix64), so multi-GB pools fill on the device.
__global__ void fill_random_bf16(uint16_t* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint64_t x = (i + seed * 0x9E3779B97F4A7C15ull) + 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    const float u = float(x >> 40) * (1.0f / 16777216.0f);
    p[i] = uint16_t(__float_as_uint(lo + (hi - lo) * u) >> 16);
  }
}
void fill(void* p, size_t n, uint64_t seed, float lo, float hi) {
  fill_random_bf16<<<1024, 256>>>(static_cast<uint16_t*>(p), n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}


struct DevMem {
  void* p = nullptr;
  explicit DevMem(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DevMem() { cudaFree(p); }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
};

double rel_l2(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = bf16_to_f32(bf16{a[i]}), y = bf16_to_f32(bf16{b[i]});
    num += (x - y) * (x - y), den += y * y;
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

}  // namespace

BenchAttentionDecodeResult run_bench_attention_decode(const BenchAttentionDecodeOptions& o) {
  MXS_CHECK(!o.batches.empty() && !o.contexts.empty() && o.iters >= 1 && o.warmup >= 0,
            "bench kernel attention-decode: --batch, --context and --iters must be given");
  MXS_CHECK(o.n_heads == 8 * o.n_kv_heads, "bench kernel attention-decode: GQA group 8 only");
  BenchAttentionDecodeResult r;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  r.device = prop.name;
  r.num_sms = prop.multiProcessorCount;
  r.copy_gb_s = measure_copy_gb_s();
  const int bs = o.block_size, n_kv = o.n_kv_heads, H = o.n_heads;
  const size_t block_bytes = size_t(2) * n_kv * bs * kHeadDim * 2;

  for (const int B : o.batches)
    for (const int C : o.contexts) {
      // Pool: B sequences of ceil(C / bs) blocks, shuffled; `copies` pools rotated so each launch misses L2.
      const int nb = (C + bs - 1) / bs;
      const size_t pool_blocks = size_t(B) * nb, pool_bytes = pool_blocks * block_bytes;
      const int copies = int(std::clamp<size_t>((size_t(256) << 20) / pool_bytes + 1, 1, 64));
      DevMem kv(pool_bytes * copies);
      fill(kv.p, pool_bytes * copies / 2, 1000 + uint64_t(B) * 131 + uint64_t(C), -2.f, 2.f);
      std::vector<int32_t> perm(pool_blocks), positions(size_t(B), C - 1), token_seq(static_cast<size_t>(B), 0);
      std::iota(perm.begin(), perm.end(), 0);
      std::mt19937 rng(uint32_t(B * 7 + C));
      std::shuffle(perm.begin(), perm.end(), rng);
      std::iota(token_seq.begin(), token_seq.end(), 0);
      DevMem d_tab(perm.size() * 4), d_pos(size_t(B) * 4), d_seq(size_t(B) * 4);
      CUDA_CHECK(cudaMemcpy(d_tab.p, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(d_pos.p, positions.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(d_seq.p, token_seq.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
      DevMem d_q(size_t(B) * H * kHeadDim * 2), d_sinks(size_t(H) * 2), d_out(size_t(B) * H * kHeadDim * 2);
      fill(d_q.p, size_t(B) * H * kHeadDim, 7, -2.f, 2.f);
      fill(d_sinks.p, size_t(H), 8, -1.f, 4.f);
      const int max_splits = std::max(next_pow2((C + 63) / 64), 1);
      DevMem d_po(attention_partial_floats(B, H, max_splits) * 4), d_pml(size_t(B) * H * max_splits * 2 * 4);
      DevMem d_cnt(size_t(B) * n_kv * 4);
      CUDA_CHECK(cudaMemset(d_cnt.p, 0, size_t(B) * n_kv * 4));

      for (const bool sliding : {false, true}) {
        BenchAttentionDecodeRow row;
        row.batch = B, row.context = C, row.sliding = sliding;
        row.keys = sliding ? std::min(C, o.window) : C;
        row.kv_bytes = double(B) * row.keys * n_kv * kHeadDim * 2.0 * 2.0;
        AttentionDecodeParams p;
        p.q = d_q.p, p.kv = {kv.p, bs, n_kv}, p.meta = {d_pos.as<int32_t>(), d_seq.as<int32_t>(), d_tab.as<int32_t>(), nb};
        p.sinks = d_sinks.p, p.part_o = d_po.as<float>(), p.part_ml = d_pml.as<float>(), p.out = d_out.p;
        p.counters = d_cnt.as<unsigned>();
        p.n_tokens = B, p.n_heads = H, p.n_kv_heads = n_kv, p.window = sliding ? o.window : 0;
        // Mean us per launch over `iters` launches, rotating the pool copy.
        auto time_us = [&](AttentionDecodeParams q, auto&& fn) {
          return 1e3 * mean_ms_per_call(o.warmup, o.iters, [&](int i) {
            q.kv.base = kv.as<char>() + size_t(i % copies) * pool_bytes;
            fn(q, nullptr);
          });
        };
        auto output = [&](AttentionDecodeParams q, auto&& fn) {
          CUDA_CHECK(cudaMemset(d_out.p, 0xFF, size_t(B) * H * kHeadDim * 2));
          fn(q, nullptr);
          std::vector<uint16_t> h(size_t(B) * H * kHeadDim);
          CUDA_CHECK(cudaMemcpy(h.data(), d_out.p, h.size() * 2, cudaMemcpyDeviceToHost));
          return h;
        };

        // Old: as CudaRunner launches it (graph buckets: power-of-two split counts; exact path <= 256 keys).
        AttentionDecodeParams po = p;
        if (C <= kExactAttentionMaxKeys) {
          po.exact = true, po.n_splits = 1, po.keys_per_split = kExactAttentionMaxKeys;
        } else if (sliding) {
          po.keys_per_split = std::min(old_split_keys(B), 128);
          po.n_splits = (o.window + po.keys_per_split - 1) / po.keys_per_split;
        } else {
          po.keys_per_split = old_split_keys(B);
          po.n_splits = next_pow2((C + po.keys_per_split - 1) / po.keys_per_split);
        }
        row.old_kps = po.keys_per_split, row.old_splits = po.n_splits;
        row.us_old = time_us(po, attention_decode);
        const auto out_old = output(po, attention_decode);

        auto mma_params = [&](int kps) {
          AttentionDecodeParams pn = p;
          pn.keys_per_split = kps;
          pn.n_splits = next_pow2((row.keys + kps - 1) / kps);
          return pn;
        };
        row.new_kps = attention_decode_mma_keys_per_split(B, n_kv, row.keys, r.num_sms);
        const AttentionDecodeParams pn = mma_params(row.new_kps);
        row.new_splits = pn.n_splits;
        row.us_new = time_us(pn, attention_decode_mma);
        row.rel_l2 = rel_l2(output(pn, attention_decode_mma), out_old);
        for (int st = 2; st <= 4; ++st)
          row.us_stages[st - 2] = time_us(pn, [st](const AttentionDecodeParams& q, cudaStream_t s) {
            attention_decode_mma_stages(q, st, s);
          });
        row.best_kps = row.new_kps, row.us_best = row.us_new;
        for (int kps = 64; kps <= 4096; kps *= 2) {
          if (kps == row.new_kps || (kps > 64 && kps / 2 >= row.keys)) continue;
          const double us = time_us(mma_params(kps), attention_decode_mma);
          if (us < row.us_best) row.us_best = us, row.best_kps = kps;
        }
        row.gb_s_old = row.kv_bytes / (row.us_old * 1e-6) / 1e9;
        row.gb_s_new = row.kv_bytes / (row.us_new * 1e-6) / 1e9;
        r.rows.push_back(row);
      }
    }
  return r;
}

}  // namespace mxs::cuda
