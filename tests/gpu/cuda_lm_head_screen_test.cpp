// The greedy LM-head screen (kernels/lm_head_screen.h) against the full LM head (gemv_bf16_lm_head with its folded
// argmax, on the bf12 copy and on the bf16 matrix): the same argmax key bit for bit (value and lowest id) on fresh
// random inputs, odd vocabulary sizes, 1-8 rows, matrices with bf12 exceptions and huge-value rows, exact ties, an
// all-zero activation (every row a candidate, several list rounds per CTA), non-finite weights; the packer's bounds
// against a CPU recomputation; and that the screen leaves few candidates on ordinary rows.
#include <algorithm>
#include <cmath>
#include <vector>

#include "bf12_test_util.h"
#include "cuda/kernels/gemv_bf16.h"
#include "cuda/kernels/lm_head_screen.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

struct ScreenCopy {
  DevBuf<int8_t> q;
  DevBuf<float4> rows;
  ScreenCopy(const bf16* w, int n, int k) : q(lm_screen_rows(n) * k), rows(lm_screen_rows(n)) {
    pack_lm_screen(w, n, k, q.p, rows.p, nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  LmScreenWeights weights() const { return LmScreenWeights{q.p, rows.p}; }
};

// Workspaces shared by every launch of a test (the kernel clears its T keys and counter for the next one).
struct Workspace {
  DevBuf<float> upper;
  DevBuf<unsigned> lower{size_t(kLmScreenMaxRows)}, counter{1}, n_cand{size_t(kLmScreenMaxRows)};
  explicit Workspace(size_t n_out) : upper(size_t(kLmScreenMaxRows) * n_out) {
    CUDA_CHECK(cudaMemset(lower.p, 0, kLmScreenMaxRows * sizeof(unsigned)));
    CUDA_CHECK(cudaMemset(counter.p, 0, 4));
  }
};

struct Result {
  std::vector<unsigned long long> keys;
  std::vector<bf16> y;
  std::vector<unsigned> candidates;
};

// The screen over `n` rows of `a` (rows src_rows), exact pass on the bf12 copy when `packed`, else on w.
Result run_screen(const ScreenCopy& sc, const bf16* w, const Bf12Weights* packed, const DevBuf<bf16>& a,
                  const DevBuf<int32_t>& src_rows, int n, int k, int V, Workspace& ws) {
  DevBuf<bf16> y{size_t(n) * V};
  DevBuf<unsigned long long> keys{size_t(n)};
  y.poison();
  CUDA_CHECK(cudaMemset(keys.p, 0, size_t(n) * 8));
  CUDA_CHECK(cudaMemset(ws.n_cand.p, 0, kLmScreenMaxRows * sizeof(unsigned)));
  LmScreenParams p;
  p.a = a.p, p.src_rows = src_rows.p, p.screen = sc.weights(), p.w = w;
  if (packed) p.w_bf12 = *packed;
  p.y = y.p, p.row_argmax = keys.p, p.upper = ws.upper.p, p.lower_max = ws.lower.p, p.done_counter = ws.counter.p;
  p.n_candidates = ws.n_cand.p;
  p.n_rows = n, p.k = k, p.n_out = V;
  lm_head_screen(p, nullptr);
  Result r{keys.download(), y.download(), ws.n_cand.download()};
  r.candidates.resize(size_t(n));
  return r;
}

Result run_full(const bf16* w, const Bf12Weights* packed, const DevBuf<bf16>& a, const DevBuf<int32_t>& src_rows,
                int n, int k, int V) {
  DevBuf<bf16> y{size_t(n) * V};
  DevBuf<unsigned long long> keys{size_t(n)};
  CUDA_CHECK(cudaMemset(keys.p, 0, size_t(n) * 8));
  GemvBf16Params p;
  p.a = a.p, p.src_rows = src_rows.p, p.w = w, p.y = y.p, p.row_argmax = keys.p;
  if (packed) p.w_bf12 = *packed;
  p.n_rows = n, p.k = k, p.n_out = V;
  gemv_bf16_lm_head(p, nullptr);
  return Result{keys.download(), y.download(), {}};
}

int key_id(unsigned long long key) { return 0x7fffffff - int(key & 0xffffffffu); }

// Screen vs full on both weight formats; returns the screen's candidate counts (bf12 run).
std::vector<unsigned> expect_same_argmax(const std::vector<bf16>& wl, const std::vector<bf16>& acts,
                                         const std::vector<int32_t>& rows, int k, int V, Workspace& ws,
                                         const char* what) {
  const int n = int(rows.size());
  DevBuf<bf16> dw(wl), da(acts);
  DevBuf<int32_t> dr(rows);
  const DevicePacked packed = pack_on_device(dw.p, V, k);
  const ScreenCopy sc(dw.p, V, k);
  std::vector<unsigned> cand;
  for (bool bf12 : {true, false}) {
    const Bf12Weights* pw = bf12 ? &packed.w : nullptr;
    const Result full = run_full(dw.p, pw, da, dr, n, k, V);
    const Result scr = run_screen(sc, dw.p, pw, da, dr, n, k, V, ws);
    for (int m = 0; m < n; ++m) {
      EXPECT_EQ(scr.keys[size_t(m)], full.keys[size_t(m)])
          << what << ": row " << m << " k " << k << " V " << V << (bf12 ? " bf12" : " bf16") << ": screen id "
          << key_id(scr.keys[size_t(m)]) << ", full id " << key_id(full.keys[size_t(m)]);
      const int id = key_id(full.keys[size_t(m)]);
      if (id >= 0 && id < V) {  // the winner's logit is written (sampling reads it for its NaN check)
        EXPECT_EQ(scr.y[size_t(m) * V + id].bits, full.y[size_t(m) * V + id].bits) << what << ": row " << m;
      }
      EXPECT_GE(scr.candidates[size_t(m)], 1u) << what;
    }
    if (bf12) cand = scr.candidates;
  }
  return cand;
}

TEST(LmHeadScreen, PackerBoundsHold) {
  for (int k : {64, 2880}) {
    Rng rng(900 + k);
    const int V = 333;
    auto w = packable_matrix(V, k, rng, 0.05f);
    w[size_t(5) * k + 3] = bf16{0x7fc0};  // NaN: that row is never screened out
    DevBuf<bf16> dw(w);
    const ScreenCopy sc(dw.p, V, k);
    const auto q = sc.q.download();
    const auto meta = sc.rows.download();
    for (int r = 0; r < V; ++r) {
      const float4 m = meta[size_t(r)];
      if (r == 5) {
        EXPECT_TRUE(std::isinf(m.y) && std::isinf(m.z)) << "non-finite row";
        continue;
      }
      double amax = 0, err = 0, l1 = 0;
      for (int i = 0; i < k; ++i) amax = std::max(amax, std::fabs(double(bf16_to_f32(w[size_t(r) * k + i]))));
      ASSERT_NEAR(m.x, amax / 127.0, amax * 1e-6) << "row " << r;
      for (int i = 0; i < k; ++i) {
        const double v = bf16_to_f32(w[size_t(r) * k + i]);
        const int qi = q[lm_screen_offset(r, i, k)];
        ASSERT_LE(std::abs(qi), 127);
        if (m.x > 0) {
          ASSERT_LE(std::fabs(qi - v / double(m.x)), 0.5 + 1e-4) << "row " << r << " col " << i;
        }
        err = std::max(err, std::fabs(v - qi * double(m.x)));
        l1 += std::abs(qi) * double(m.x);
      }
      EXPECT_GE(double(m.y), err) << "row " << r;
      EXPECT_LE(double(m.y), err * 1.01 + amax * 1e-5) << "row " << r << ": a loose bound screens nothing";
      EXPECT_GE(double(m.z), l1) << "row " << r;
    }
    for (size_t r = size_t(V); r < lm_screen_rows(V); ++r) {  // the last block's padding rows: zero, bound 0
      EXPECT_EQ(meta[r].x + meta[r].y + meta[r].z, 0.f) << "padding row " << r;
      for (int i = 0; i < k; ++i) ASSERT_EQ(q[lm_screen_offset(int(r), i, k)], 0) << "padding row " << r;
    }
  }
}

TEST(LmHeadScreen, SameArgmaxAsFullLmHead) {
  Workspace ws(20011);
  for (int k : {64, 2880}) {
    for (int n : {1, 2, 3, 5, 8}) {
      Rng rng(1000 + 10 * k + n);
      const int V = k == 64 ? 1001 : 20011, n_src = n + 2;
      auto acts = random_bf16(size_t(n_src) * k, rng, -2.f, 2.f);
      for (int r = 0; r < n_src; ++r) acts[size_t(r) * k] = bf16{0};  // (the huge-value rows' column)
      std::vector<int32_t> rows(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) rows[size_t(i)] = n_src - 1 - i;
      const auto wl = packable_matrix(V, k, rng, 1.0f / std::sqrt(float(k)));
      expect_same_argmax(wl, acts, rows, k, V, ws, "packable matrix");
    }
  }
}

// Ordinary random rows: the bound leaves a small fraction of the rows to the exact pass.
TEST(LmHeadScreen, FewCandidatesOnOrdinaryRows) {
  Workspace ws(50021);
  const int k = 2880, V = 50021;
  Rng rng(77);
  const auto wl = random_bf16(size_t(V) * k, rng, -0.03f, 0.03f);
  const auto acts = random_bf16(size_t(2) * k, rng, -3.f, 3.f);
  const auto cand = expect_same_argmax(wl, acts, {1, 0}, k, V, ws, "ordinary rows");
  for (unsigned c : cand) {
    EXPECT_LT(c, unsigned(V / 100)) << "candidates of " << V << " rows";
    std::printf("candidates: %u of %d rows\n", c, V);
  }
}

// Exact ties at the top: the lowest id among the tied rows wins, as in the full LM head.
TEST(LmHeadScreen, TiesGoToTheLowestId) {
  Workspace ws(4099);
  for (int k : {64, 2880}) {
    const int V = 4099;
    Rng rng(300 + k);
    auto wl = random_bf16(size_t(V) * k, rng, -0.02f, 0.02f);
    const auto acts = random_bf16(size_t(k), rng, -1.f, 1.f);
    for (int r : {3001, 17, 2048})  // the same row, larger than any other: ids 17, 2048, 3001 tie
      for (int i = 0; i < k; ++i)
        wl[size_t(r) * k + i] = f32_to_bf16(bf16_to_f32(acts[size_t(i)]) >= 0 ? 0.05f : -0.05f);
    expect_same_argmax(wl, acts, {0}, k, V, ws, "ties");
    DevBuf<bf16> dw(wl), da(acts);
    DevBuf<int32_t> dr(std::vector<int32_t>{0});
    const ScreenCopy sc(dw.p, V, k);
    EXPECT_EQ(key_id(run_screen(sc, dw.p, nullptr, da, dr, 1, k, V, ws).keys[0]), 17);
  }
}

// A zero activation row: every logit is 0, every row a candidate (more than one list round per CTA), id 0 wins.
TEST(LmHeadScreen, ZeroActivationsMakeEveryRowACandidate) {
  const int k = 64, V = 100003;
  Workspace ws(V);
  Rng rng(5);
  const auto wl = random_bf16(size_t(V) * k, rng, -0.1f, 0.1f);
  const std::vector<bf16> acts(size_t(k), bf16{0});
  const auto cand = expect_same_argmax(wl, acts, {0}, k, V, ws, "zero activations");
  EXPECT_EQ(cand[0], unsigned(V));
}

TEST(LmHeadScreen, RejectsBadShapes) {
  LmScreenParams p;
  p.n_rows = kLmScreenMaxRows + 1, p.k = 2880, p.n_out = 10;
  EXPECT_THROW(lm_head_screen(p, nullptr), Error);
  EXPECT_THROW(pack_lm_screen(nullptr, 10, 100, nullptr, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace mxs::cuda::test
