// MXFP4 grouped GEMM vs cuBLAS bf16 benchmark (see bench_moe_gemm.h). CUDA events around `iters` launches
// after `warmup`; every weight set is larger than L2, so no flush is needed between iterations.
#include "cuda/bench_moe_gemm.h"

#include "cuda/event_timing.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <cublas_v2.h>
#include <cuda_bf16.h>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/moe_gemm_mxfp4.h"
#include "cuda/kernels/moe_gemm_pack.h"

namespace mxs::cuda {
namespace {

#define CUBLAS_CHECK(call)                                                                             \
  do {                                                                                                 \
    const cublasStatus_t st_ = (call);                                                                 \
    if (st_ != CUBLAS_STATUS_SUCCESS) throw Error(strfmt("cuBLAS error %d in %s", int(st_), #call));   \
  } while (0)

__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31, x *= 0xBF58476D1CE4E5B9ull, x ^= x >> 29;
  return uint32_t(x >> 16);
}
// Bytes in [lo, hi].
__global__ void fill_bytes_kernel(uint8_t* p, size_t n, uint32_t seed, int lo, int hi) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = uint8_t(lo + int(hash32(i, seed) % uint32_t(hi - lo + 1)));
}
// bf16 uniform in [-a, a].
__global__ void fill_bf16_kernel(__nv_bfloat16* p, size_t n, uint32_t seed, float a) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = __float2bfloat16_rn(a * (float(hash32(i, seed) & 0xffffff) / 8388608.0f - 1.0f));
}

struct Dev {
  void* p = nullptr;
  explicit Dev(size_t bytes) { CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
};

void fill_bytes(const Dev& d, size_t n, uint32_t seed, int lo, int hi) {
  fill_bytes_kernel<<<1024, 256>>>(d.as<uint8_t>(), n, seed, lo, hi);
  CUDA_CHECK_LAUNCH();
}
void fill_bf16(const Dev& d, size_t n, uint32_t seed, float a) {
  fill_bf16_kernel<<<1024, 256>>>(d.as<__nv_bfloat16>(), n, seed, a);
  CUDA_CHECK_LAUNCH();
}

// Mean ms of `iters` runs of fn after `warmup` runs.
template <typename Fn>
double time_ms(int warmup, int iters, Fn fn) {
  return mean_ms_per_call(warmup, iters, [&](int) { fn(); });
}

// Uniform routing: each token takes top_k distinct experts (balanced: pair p -> expert p mod E, distinct for
// top_k <= E); pairs grouped by expert (ascending pair id).
void uniform_routing(int n_pairs, int E, int top_k, uint64_t seed, bool balanced, std::vector<int32_t>& offsets,
                     std::vector<int32_t>& pair_list) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&] {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  };
  std::vector<int> expert(n_pairs);
  for (int pr = 0; balanced && pr < n_pairs; ++pr) expert[pr] = pr % E;
  for (int t = 0; !balanced && t * top_k < n_pairs; ++t) {
    for (int k = 0; k < top_k && t * top_k + k < n_pairs; ++k) {
      int e;
      bool dup;
      do {
        e = int(next() % uint64_t(E));
        dup = false;
        for (int j = 0; j < k; ++j) dup |= expert[t * top_k + j] == e;
      } while (dup);
      expert[t * top_k + k] = e;
    }
  }
  offsets.assign(E + 1, 0);
  for (int e : expert) ++offsets[e + 1];
  for (int e = 0; e < E; ++e) offsets[e + 1] += offsets[e];
  std::vector<int32_t> fill(offsets.begin(), offsets.end() - 1);
  pair_list.assign(n_pairs, 0);
  for (int pr = 0; pr < n_pairs; ++pr) pair_list[fill[expert[pr]]++] = pr;
}

}  // namespace

BenchMoeGemmResult run_bench_moe_gemm(const BenchMoeGemmOptions& o) {
  MXS_CHECK(o.which == "gate_up" || o.which == "down", "bench kernel moe-gemm: --which must be gate_up or down");
  MXS_CHECK(!o.pairs.empty() && o.warmup >= 0 && o.iters >= 1 && o.top_k >= 1 && o.top_k <= o.n_experts,
            "bench kernel moe-gemm: bad --P / --warmup / --iters / top_k");
  const bool gu = o.which == "gate_up";
  const int H = o.hidden, I = o.intermediate, E = o.n_experts;
  const int M = gu ? 2 * I : H, K = gu ? H : I;
  BenchMoeGemmResult res;
  res.which = o.which, res.M = M, res.K = K;
  cudaDeviceProp prop{};
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  res.device = prop.name;

  // MXFP4 experts (checkpoint layout, packed in place on the GPU) and bf16 experts [E, M, K] for cuBLAS.
  const size_t n_w = size_t(E) * M * K;
  Dev q(n_w / 2), sc(n_w / 32), bias(size_t(E) * M * 2), wbf(n_w * 2);
  fill_bytes(q, n_w / 2, 1, 0, 255);
  fill_bytes(sc, n_w / 32, 2, 117, 123);
  fill_bf16(bias, size_t(E) * M, 3, 0.5f);
  fill_bf16(wbf, n_w, 4, 0.05f);
  moe_gemm_pack_experts(q.as<uint8_t>(), sc.as<uint8_t>(), q.as<uint8_t>(), sc.as<uint8_t>(), E, M, K, nullptr);
  Dev max_scale(4);  // as at load: scales <= 128 take the kernels' dequantization without the second factor
  CUDA_CHECK(cudaMemset(max_scale.p, 0, 4));
  moe_scales_max_async(sc.as<uint8_t>(), n_w / 32, max_scale.as<unsigned>(), nullptr);
  unsigned max_scale_host = 0;
  CUDA_CHECK(cudaMemcpy(&max_scale_host, max_scale.p, 4, cudaMemcpyDeviceToHost));

  const int max_p = *std::max_element(o.pairs.begin(), o.pairs.end());
  const int max_tokens = (max_p + o.top_k - 1) / o.top_k;
  Dev xn(size_t(max_tokens) * H * 2), act(size_t(max_p) * I * 2), yw(size_t(max_p) * H * 2), topk_w(size_t(max_p) * 4);
  Dev x_grouped(size_t(max_p) * K * 2), y_bf16(size_t(max_p) * M * 2);
  Dev d_off(size_t(E + 1) * 4), d_pairs(size_t(max_p) * 4), sched(2 * 4);
  CUDA_CHECK(cudaMemset(sched.p, 0, 2 * 4));  // the dynamic tile scheduler (MXS_MOE_GEMM_STATIC=1: static)
  fill_bf16(xn, size_t(max_tokens) * H, 5, 1.0f);
  fill_bf16(act, size_t(max_p) * I, 6, 1.0f);
  fill_bf16(x_grouped, size_t(max_p) * K, 7, 1.0f);
  std::vector<float> w_host(max_p, 0.25f);
  CUDA_CHECK(cudaMemcpy(topk_w.p, w_host.data(), w_host.size() * 4, cudaMemcpyHostToDevice));

  cublasHandle_t handle;
  CUBLAS_CHECK(cublasCreate(&handle));
  Dev ptrs(size_t(3) * E * sizeof(void*));

  for (int P : o.pairs) {
    std::vector<int32_t> off, pairs;
    uniform_routing(P, E, o.top_k, 1000 + P, o.balanced, off, pairs);
    CUDA_CHECK(cudaMemcpy(d_off.p, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(d_pairs.p, pairs.data(), pairs.size() * 4, cudaMemcpyHostToDevice));
    BenchMoeGemmRow row;
    row.pairs = P;
    row.n_tile = moe_gemm_pick_n_tile(P, E);
    for (int e = 0; e < E; ++e) row.active_experts += off[e + 1] > off[e];

    MoeGemmParams p;
    p.w = {q.as<uint8_t>(), sc.as<uint8_t>(), bias.p, q.as<uint8_t>(), sc.as<uint8_t>(), bias.p};
    p.w.big_scales = max_scale_host > 128;
    p.index.expert_offsets = d_off.as<int32_t>();
    p.index.pair_list = d_pairs.as<int32_t>();
    p.topk_w = topk_w.as<float>();
    p.xn = xn.p, p.act = act.p, p.yw = yw.p;
    p.n_pairs = P, p.hidden = H, p.intermediate = I, p.n_experts = E, p.top_k = o.top_k;
    p.sched = sched.as<unsigned>();
    auto run_mx = [&] {
      if (gu) moe_gemm_mxfp4_gate_up(p, nullptr);
      else moe_gemm_mxfp4_down(p, nullptr);
    };

    // cuBLAS bf16, column-major view: Y_e^T [M, cnt] = W_e^T... i.e. op(A) = W_e (row-major [M, K] read as
    // K x M column-major, transposed), B = X_e ([cnt, K] row-major = K x cnt column-major).
    const float one = 1.f, zero = 0.f;
    CUBLAS_CHECK(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH));
    auto w_of = [&](int e) { return wbf.as<__nv_bfloat16>() + size_t(e) * M * K; };
    auto bf16_loop = [&] {
      for (int e = 0; e < E; ++e) {
        const int cnt = off[e + 1] - off[e];
        if (cnt == 0) continue;
        CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, M, cnt, K, &one, w_of(e), CUDA_R_16BF, K,
                                  x_grouped.as<__nv_bfloat16>() + size_t(off[e]) * K, CUDA_R_16BF, K, &zero,
                                  y_bf16.as<__nv_bfloat16>() + size_t(off[e]) * M, CUDA_R_16BF, M,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      }
    };
    // Grouped: one group per active expert.
    std::vector<cublasOperation_t> ta, tb;
    std::vector<int> ms, ns, ks, lda, ldb, ldc, gsz;
    std::vector<float> alphas, betas;
    std::vector<const void*> pa, pb;
    std::vector<void*> pc;
    for (int e = 0; e < E; ++e) {
      const int cnt = off[e + 1] - off[e];
      if (cnt == 0) continue;
      ta.push_back(CUBLAS_OP_T), tb.push_back(CUBLAS_OP_N);
      ms.push_back(M), ns.push_back(cnt), ks.push_back(K), lda.push_back(K), ldb.push_back(K), ldc.push_back(M);
      gsz.push_back(1), alphas.push_back(1.f), betas.push_back(0.f);
      pa.push_back(w_of(e));
      pb.push_back(x_grouped.as<__nv_bfloat16>() + size_t(off[e]) * K);
      pc.push_back(y_bf16.as<__nv_bfloat16>() + size_t(off[e]) * M);
    }
    const int G = int(ms.size());
    void** dptr = ptrs.as<void*>();
    CUDA_CHECK(cudaMemcpy(dptr, pa.data(), G * sizeof(void*), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dptr + E, pb.data(), G * sizeof(void*), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dptr + 2 * E, pc.data(), G * sizeof(void*), cudaMemcpyHostToDevice));
    auto grouped = [&] {
      return cublasGemmGroupedBatchedEx(handle, ta.data(), tb.data(), ms.data(), ns.data(), ks.data(), alphas.data(),
                                        reinterpret_cast<const void* const*>(dptr), CUDA_R_16BF, lda.data(),
                                        reinterpret_cast<const void* const*>(dptr + E), CUDA_R_16BF, ldb.data(),
                                        betas.data(), dptr + 2 * E, CUDA_R_16BF, ldc.data(), G, gsz.data(),
                                        CUBLAS_COMPUTE_32F);
    };
    const bool has_grouped = grouped() == CUBLAS_STATUS_SUCCESS && cudaDeviceSynchronize() == cudaSuccess;
    (void)cudaGetLastError();

    // Seven configurations (the five forced token tiles, the two cuBLAS forms), timed in `rounds` rounds in
    // rotated order; each reports the median of its rounds. A single pass in a fixed order was biased: the
    // first configuration after the previous P's cuBLAS runs came out up to ~15% slower (H100, session 10:
    // the automatic tile, timed first, read 1.14 ms where the same kernel forced later read 1.01).
    constexpr int kTiles = 5;
    const int tiles[kTiles] = {32, 48, 64, 128, 192};
    auto run_config = [&](int c) {
      if (c < kTiles) {
        p.n_tile = tiles[c];
        return time_ms(o.warmup, o.iters, run_mx);
      }
      if (c == kTiles) return time_ms(o.warmup, o.iters, bf16_loop);
      return time_ms(o.warmup, o.iters, [&] { (void)grouped(); });
    };
    const int n_cfg = kTiles + (has_grouped ? 2 : 1), rounds = std::max(1, o.rounds);
    std::vector<std::vector<double>> samples(n_cfg);
    for (int r = 0; r < rounds; ++r)
      for (int j = 0; j < n_cfg; ++j) {
        const int c = (j + r) % n_cfg;
        samples[c].push_back(run_config(c));
      }
    p.n_tile = 0;
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
    };
    row.best_n_tile = 0, row.ms_mxfp4_best_tile = 1e30;
    for (int i = 0; i < kTiles; ++i) {
      row.ms_by_tile[i] = median(samples[i]);
      if (tiles[i] == row.n_tile) row.ms_mxfp4 = row.ms_by_tile[i];
      if (row.ms_by_tile[i] < row.ms_mxfp4_best_tile)
        row.best_n_tile = tiles[i], row.ms_mxfp4_best_tile = row.ms_by_tile[i];
    }
    row.ms_bf16_loop = median(samples[kTiles]);
    row.ms_bf16_grouped = has_grouped ? median(samples[kTiles + 1]) : -1;
    row.ms_bf16 = row.ms_bf16_grouped > 0 ? std::min(row.ms_bf16_loop, row.ms_bf16_grouped) : row.ms_bf16_loop;

    const double flop = 2.0 * P * double(M) * K;
    const double w_mx = double(row.active_experts) * M * K * (0.5 + 1.0 / 32.0), w_bf = double(row.active_experts) * M * K * 2.0;
    row.tflops_mxfp4 = flop / (row.ms_mxfp4 * 1e-3) / 1e12;
    row.tflops_bf16 = flop / (row.ms_bf16 * 1e-3) / 1e12;
    row.gb_s_mxfp4 = w_mx / (row.ms_mxfp4 * 1e-3) / 1e9;
    row.gb_s_bf16 = w_bf / (row.ms_bf16 * 1e-3) / 1e9;
    res.rows.push_back(row);
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  cublasDestroy(handle);
  return res;
}

}  // namespace mxs::cuda
