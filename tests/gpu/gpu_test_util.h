// Helpers for the GPU tests: device buffers, random bf16/bytes, poisoned outputs, and the error metrics
// (relative L2 error, max abs error, NaN/unwritten check) the kernel tests compare with.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "common/bf16.h"
#include "cuda/cuda_check.h"

namespace mxs::cuda::test {

// A device buffer of T (no copy; freed on scope exit).
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  explicit DevBuf(size_t count) : n(count) { CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), std::max<size_t>(n, 1) * sizeof(T))); }
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size()) { upload(host); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  void upload(const std::vector<T>& host) {
    CUDA_CHECK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<T> h(n);
    CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Fills with 0xFF bytes: bf16 NaN, fp32 NaN, int -1; an element the kernel forgets stays NaN / -1.
  void poison() { CUDA_CHECK(cudaMemset(p, 0xFF, n * sizeof(T))); }
};

// Deterministic generator (xorshift64*), fresh seeds per test.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12, s ^= s << 25, s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 40) * (1.0f / 16777216.0f); }
  int below(int n) { return int(next() % uint64_t(n)); }
};

inline std::vector<bf16> random_bf16(size_t n, Rng& rng, float lo, float hi) {
  std::vector<bf16> v(n);
  for (auto& x : v) x = f32_to_bf16(rng.uniform(lo, hi));
  return v;
}
inline std::vector<uint8_t> random_bytes(size_t n, Rng& rng, int lo = 0, int hi = 255) {
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(lo + int(rng.next() % uint64_t(hi - lo + 1)));
  return v;
}
// A route index (moe_router.h MoeRouteIndex, downloaded) against the top-k ids idx [n * K] it groups: offsets
// span all n * K pairs with each expert's group as long as its pair count, active experts ascending with -1 past
// n_active, and every pair exactly once, under its own expert.
inline void expect_route_index(const std::vector<int32_t>& idx, const std::vector<int32_t>& off,
                               const std::vector<int32_t>& list, const std::vector<int32_t>& act, int n_active,
                               int n, int K, int E) {
  ASSERT_EQ(off[0], 0);
  ASSERT_EQ(off[size_t(E)], n * K);
  std::vector<int> seen(size_t(n) * K, 0);
  int active = 0;
  for (int e = 0; e < E; ++e) {
    int cnt = 0;
    for (int i = 0; i < n * K; ++i) cnt += idx[size_t(i)] == e;
    ASSERT_EQ(off[size_t(e) + 1] - off[size_t(e)], cnt) << "expert " << e;
    if (cnt > 0) {
      ASSERT_LT(active, n_active);
      EXPECT_EQ(act[size_t(active++)], e);
    }
    for (int i = off[size_t(e)]; i < off[size_t(e) + 1]; ++i) {
      const int pid = list[size_t(i)];
      ASSERT_TRUE(pid >= 0 && pid < n * K);
      EXPECT_EQ(idx[size_t(pid)], e);
      ++seen[size_t(pid)];
    }
  }
  EXPECT_EQ(active, n_active);
  for (int e = n_active; e < E; ++e) EXPECT_EQ(act[size_t(e)], -1) << "active_experts tail past num_active";
  for (int s : seen) ASSERT_EQ(s, 1) << "every pair exactly once";
}

// The MoE combine's reference (CpuRunner's default expert sum, gpt-oss-spec.md §3.6): x + the token's routed
// expert outputs added in ascending expert id with a bf16 rounding after each add. x [n, H]; yw [n * K, H] by
// pair id (token * K + slot); idx [n, K] expert ids.
inline std::vector<bf16> combine_reference(const std::vector<bf16>& x, const std::vector<bf16>& yw,
                                           const std::vector<int32_t>& idx, int n, int K, int H) {
  std::vector<bf16> out(x.size());
  for (int t = 0; t < n; ++t) {
    std::vector<int> order(static_cast<size_t>(K));
    for (int s = 0; s < K; ++s) order[size_t(s)] = s;
    std::sort(order.begin(), order.end(), [&](int a, int b) { return idx[size_t(t * K + a)] < idx[size_t(t * K + b)]; });
    for (int j = 0; j < H; ++j) {
      float acc = 0.f;
      for (int s : order) acc = bf(acc + bf16_to_f32(yw[(size_t(t) * K + s) * H + j]));
      out[size_t(t) * H + j] = f32_to_bf16(bf16_to_f32(x[size_t(t) * H + j]) + acc);
    }
  }
  return out;
}
inline std::vector<float> to_f32(const std::vector<bf16>& v) {
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = bf16_to_f32(v[i]);
  return f;
}

struct ErrorStats {
  double rel_l2 = 0, max_abs = 0;
  size_t n_nan = 0, n_diff = 0, n = 0;
};
inline ErrorStats compare(const std::vector<float>& out, const std::vector<float>& ref) {
  ErrorStats e;
  e.n = ref.size();
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::isnan(out[i])) {
      ++e.n_nan;
      continue;
    }
    const double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * ref[i];
    e.max_abs = std::max(e.max_abs, std::fabs(d));
    e.n_diff += out[i] != ref[i];
  }
  e.rel_l2 = std::sqrt(num / std::max(den, 1e-30));
  return e;
}
// bf16 outputs that follow the reference's rounding points: rare 1-ulp flips from a different fp32 summation
// order, so the relative L2 error stays far below one bf16 ulp (2^-8).
inline void expect_close(const std::vector<float>& out, const std::vector<float>& ref, double rel_tol, const char* what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  const ErrorStats e = compare(out, ref);
  EXPECT_EQ(e.n_nan, 0u) << what << ": NaN or unwritten outputs";
  EXPECT_LE(e.rel_l2, rel_tol) << what << ": rel L2 " << e.rel_l2 << ", max abs " << e.max_abs << ", " << e.n_diff
                               << " of " << e.n << " differ";
}

}  // namespace mxs::cuda::test
