// The many-token MoE routing and combine (moe_router_rows.h, moe_combine_rows.h) against the CPU reference on
// fresh random inputs: 32 and 128 experts, top-k 4 and 8, token counts from 1 to past a CTA's share (odd ones
// too), hidden 2880 and small odd multiples of 4; outputs poisoned before each run; repeated launches (the
// kernels must leave their workspaces zeroed).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "common/error.h"
#include "cpu/cpu_ops.h"
#include "cuda/kernels/moe_combine_rows.h"
#include "cuda/kernels/moe_router_rows.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

struct RouteCase {
  int E, K;
};

TEST(MoeRouterFromLogits, MatchesReferenceTopkSoftmaxAndGroups) {
  for (const RouteCase rc : {RouteCase{32, 4}, RouteCase{128, 4}, RouteCase{32, 8}, RouteCase{5, 3}}) {
    const int E = rc.E, K = rc.K;
    for (int n : {1, 7, 31, 33, 64, 257, 2049}) {
      Rng rng(1000 + 7 * n + E + K);
      // Logits on a coarse grid so that ties at bf16 (which the selection breaks by the lower id) occur.
      std::vector<float> acc(size_t(n) * E);
      for (auto& v : acc) v = float(rng.below(64) - 32) * 0.125f + (rng.below(4) == 0 ? rng.uniform(-0.01f, 0.01f) : 0.f);
      const auto bias = random_bf16(size_t(E), rng, -0.5f, 0.5f);
      DevBuf<float> dacc(acc), dwt(size_t(n) * K);
      DevBuf<bf16> db(bias);
      DevBuf<int32_t> didx(size_t(n) * K), doff(size_t(E) + 1), dlist(size_t(n) * K), dact{size_t(E)}, dnum(1);
      DevBuf<int32_t> dwork(moe_router_rows_work_ints(E));
      CUDA_CHECK(cudaMemset(dwork.p, 0, dwork.n * sizeof(int32_t)));
      MoeRouterParams rp;
      rp.b = db.p, rp.topk_idx = didx.p, rp.topk_w = dwt.p, rp.n_tokens = n, rp.n_experts = E, rp.top_k = K;
      const MoeRouteIndex ix{doff.p, dlist.p, dact.p, dnum.p};
      for (int rep = 0; rep < 2; ++rep) {  // the second run must see zeroed counts and cursors
        didx.poison(), dwt.poison(), dlist.poison(), doff.poison();
        CUDA_CHECK(cudaMemset(dact.p, 0x11, size_t(E) * sizeof(int32_t)));  // not -1: a stale tail must show
        moe_router_from_logits(rp, dacc.p, ix, dwork.p, nullptr);
        const auto idx = didx.download();
        const auto wts = dwt.download();
        for (int t = 0; t < n; ++t) {
          std::vector<bf16> logits(static_cast<size_t>(E));
          for (int e = 0; e < E; ++e) logits[size_t(e)] = f32_to_bf16(acc[size_t(t) * E + e] + bf16_to_f32(bias[size_t(e)]));
          std::vector<int32_t> ri(static_cast<size_t>(K));
          std::vector<float> rw(static_cast<size_t>(K));
          cpu::router_topk_softmax(logits.data(), E, K, ri.data(), rw.data());
          for (int k = 0; k < K; ++k) {
            ASSERT_EQ(idx[size_t(t) * K + k], ri[size_t(k)]) << "E " << E << " n " << n << " token " << t << " slot " << k;
            // bf16 weights: expf vs std::exp may flip the last bit
            EXPECT_NEAR(wts[size_t(t) * K + k], rw[size_t(k)], rw[size_t(k)] * 0x1p-8f + 1e-6f) << "routing weight";
          }
        }
        const auto off = doff.download(), list = dlist.download(), act = dact.download();
        const int n_active = dnum.download()[0];
        ASSERT_NO_FATAL_FAILURE(expect_route_index(idx, off, list, act, n_active, n, K, E));
        EXPECT_EQ(dwork.download(), std::vector<int32_t>(dwork.n, 0)) << "workspace left zeroed";
      }
    }
  }
}

TEST(MoeCombineRows, MatchesReferenceSumAndNorm) {
  for (int H : {2880, 64, 20, 1028}) {
    for (int K : {4, 8, 1}) {
      for (int n : {1, 3, 70, 513}) {
        const int E = 32;
        Rng rng(2000 + H + 13 * K + n);
        std::vector<int32_t> idx(size_t(n) * K);
        for (int t = 0; t < n; ++t) {  // K distinct experts per token, in random order
          std::vector<int32_t> e(static_cast<size_t>(E));
          std::iota(e.begin(), e.end(), 0);
          for (int k = 0; k < K; ++k) std::swap(e[size_t(k)], e[size_t(k + rng.below(E - k))]), idx[size_t(t) * K + k] = e[size_t(k)];
        }
        const auto yw = random_bf16(size_t(n) * K * H, rng, -1.f, 1.f);
        const auto x = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
        const auto norm_w = random_bf16(size_t(H), rng, 0.5f, 1.5f);
        for (bool with_norm : {true, false}) {
          DevBuf<int32_t> didx(idx);
          DevBuf<bf16> dyw(yw), dx(x), dnorm(norm_w), dxo(size_t(n) * H);
          dxo.poison();
          MoeGemvParams mp;
          mp.topk_idx = didx.p, mp.yw = dyw.p, mp.x = dx.p, mp.next_norm = with_norm ? dnorm.p : nullptr, mp.xn_out = dxo.p;
          mp.n_tokens = n, mp.hidden = H, mp.top_k = K, mp.eps = 1e-5f;
          moe_combine_rows(mp, nullptr);
          const std::vector<bf16> x_ref = combine_reference(x, yw, idx, n, K, H);
          std::vector<bf16> xn_ref(x.size());
          EXPECT_EQ(to_f32(dx.download()), to_f32(x_ref)) << "residual + sequential bf16 expert sum, H " << H << " K " << K << " n " << n;
          if (with_norm) {
            cpu::rmsnorm(x_ref.data(), norm_w.data(), n, H, 1e-5f, xn_ref.data());
            expect_close(to_f32(dxo.download()), to_f32(xn_ref), 4e-3, "next rmsnorm");
          } else {
            const auto xo = dxo.download();
            EXPECT_TRUE(std::all_of(xo.begin(), xo.end(), [](bf16 v) { return std::isnan(bf16_to_f32(v)); }))
                << "xn_out written without a norm";
          }
        }
      }
    }
  }
}

TEST(MoeRowsKernels, UnsupportedShapesFailLoudly) {
  MoeGemvParams mp;
  mp.n_tokens = 1, mp.hidden = 30, mp.top_k = 4;  // hidden % 4 != 0
  EXPECT_THROW(moe_combine_rows(mp, nullptr), Error);
  MoeRouterParams rp;
  rp.n_tokens = 1, rp.n_experts = 129, rp.top_k = 4;
  DevBuf<float> acc(129);
  DevBuf<int32_t> work(moe_router_rows_work_ints(129));
  EXPECT_THROW(moe_router_from_logits(rp, acc.p, MoeRouteIndex{}, work.p, nullptr), Error);
}

}  // namespace
}  // namespace mxs::cuda::test
