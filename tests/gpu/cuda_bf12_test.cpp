// bf12 on the device: the load-time packer against the reference packer (common/bf12.h), plane for plane, and the
// LM head on the bf12 copy (gemv_bf16_lm_head with w_bf12) against the CPU reference and the bf16 kernel. The LM head
// matrix has rows whose exceptions decide the result (a huge value in column 0, whose activation is 0, pushes the
// row's window up so that every ordinary value becomes an exception: without the exact correction those rows would be
// far off).
#include <cmath>
#include <vector>

#include "common/bf12.h"
#include "cpu/cpu_ops.h"
#include "cuda/device_arena.h"
#include "cuda/kernels/bf12_pack.h"
#include "cuda/kernels/gemv_bf16.h"
#include "bf12_test_util.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

constexpr double kTol = 4e-3;  // relative L2 for bf16 outputs (as cuda_kernels_test)

template <typename T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> h(n);
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

TEST(Bf12Pack, DevicePackerMatchesTheReference) {
  for (int k : {64, 2880, 4096}) {
    const int n = 301;
    Rng rng(31 + k);
    const auto w = packable_matrix(n, k, rng, 0.03f);
    const Bf12Matrix ref = pack_reference(w, n, k);
    uint64_t n_exc = 0;
    for (int r = 0; r < n; ++r) n_exc += bf12_row_exceptions(ref, r).size();
    ASSERT_GT(n_exc, uint64_t(n / 7) * uint64_t(k / 2)) << "the huge-value rows make exceptions";
    DevBuf<bf16> dw(w);
    const DevicePacked d = pack_on_device(dw.p, n, k);
    ASSERT_EQ(d.n_exc, n_exc);
    EXPECT_EQ(download(d.w.bytes, ref.bytes.size()), ref.bytes) << "k = " << k;
    EXPECT_EQ(download(d.w.nibs, ref.nibs.size()), ref.nibs) << "k = " << k;
    EXPECT_EQ(download(d.w.exc, ref.exc.size()), ref.exc) << "k = " << k;
    const auto rows = download(d.w.rows, ref.rows.size());
    for (int r = 0; r < n; ++r) {
      const Bf12Row &a = rows[size_t(r)], &b = ref.rows[size_t(r)];
      ASSERT_TRUE(a.cword == b.cword && a.exc0 == b.exc0 && a.exc1 == b.exc1 && a.exc_rest == b.exc_rest)
          << "row " << r << " k = " << k;
    }
  }
}

TEST(GemvBf12, LmHeadMatchesReferenceAndBf16Kernel) {
  for (int H : {64, 2880}) {
    for (int n : {1, 2, 3, 5}) {
      Rng rng(500 + 10 * H + n);
      const int V = 1001, n_src = n + 2;
      auto hs = random_bf16(size_t(n_src) * H, rng, -2.f, 2.f);
      for (int r = 0; r < n_src; ++r) hs[size_t(r) * H] = bf16{0};  // column 0's activation: 0
      const float wl = 1.0f / std::sqrt(float(H));
      const auto wlm = packable_matrix(V, H, rng, wl);
      std::vector<int32_t> rows(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) rows[size_t(i)] = n_src - 1 - i;
      std::vector<bf16> sel(size_t(n) * H), logits(size_t(n) * V);
      for (int i = 0; i < n; ++i) std::copy_n(&hs[size_t(rows[size_t(i)]) * H], H, &sel[size_t(i) * H]);
      cpu::linear_bf16(sel.data(), n, H, wlm.data(), nullptr, V, logits.data());
      DevBuf<bf16> dh(hs), dwl(wlm), d12(logits.size()), d16(logits.size());
      DevBuf<int32_t> drows(rows);
      DevBuf<unsigned long long> amax12{size_t(n)}, amax16{size_t(n)};
      CUDA_CHECK(cudaMemset(amax12.p, 0, size_t(n) * 8));
      CUDA_CHECK(cudaMemset(amax16.p, 0, size_t(n) * 8));
      d12.poison();
      d16.poison();
      const DevicePacked packed = pack_on_device(dwl.p, V, H);
      GemvBf16Params p;  // (w unset: only the packed copy is read)
      p.a = dh.p, p.src_rows = drows.p, p.w_bf12 = packed.w, p.y = d12.p, p.row_argmax = amax12.p;
      p.n_rows = n, p.k = H, p.n_out = V;
      gemv_bf16_lm_head(p, nullptr);
      GemvBf16Params q;
      q.a = dh.p, q.src_rows = drows.p, q.w = dwl.p, q.y = d16.p, q.row_argmax = amax16.p;
      q.n_rows = n, q.k = H, q.n_out = V;
      gemv_bf16_lm_head(q, nullptr);
      const auto y12 = d12.download(), y16 = d16.download();
      expect_close(to_f32(y12), to_f32(logits), kTol, "bf12 lm_head vs CPU");
      // The rows whose window holds every value: bit for bit the bf16 kernel.
      const Bf12Matrix ref = pack_reference(wlm, V, H);
      int exact_rows = 0;
      for (int r = 0; r < V; ++r) {
        if (ref.rows[size_t(r)].exc0 != kBf12None) continue;
        ++exact_rows;
        for (int m = 0; m < n; ++m)
          ASSERT_EQ(y12[size_t(m) * V + r].bits, y16[size_t(m) * V + r].bits) << "row " << r << " token " << m;
      }
      EXPECT_GT(exact_rows, 0);
      // The huge-value rows: every ordinary value is an exception, decoded ~2^-2 off (the window's floor); each
      // output against the CPU within 2 bf16 ulps plus 2^-16 of the sum of |w x| (fp32 summation order).
      for (int r = 0; r < V; r += 7)
        for (int m = 0; m < n; ++m) {
          double mag = 0;
          for (int k = 0; k < H; ++k)
            mag += std::fabs(double(bf16_to_f32(wlm[size_t(r) * H + k])) * bf16_to_f32(sel[size_t(m) * H + k]));
          const float a = bf16_to_f32(y12[size_t(m) * V + r]), b = bf16_to_f32(logits[size_t(m) * V + r]);
          ASSERT_LE(std::fabs(a - b), 2.0f * std::ldexp(1.0f, std::ilogb(std::fabs(b)) - 7) + mag * 0x1p-16)
              << "row " << r << " token " << m << " H = " << H;
        }
      // The argmax keys follow the outputs: equal to the bf16 kernel's wherever the outputs are.
      bool same = true;
      for (size_t i = 0; i < y12.size(); ++i) same = same && y12[i].bits == y16[i].bits;
      if (same) {
        EXPECT_EQ(amax12.download(), amax16.download());
      }
      EXPECT_NE(amax12.download()[0], 0ull);
    }
  }
}

// o_proj at one and two rows on the packed weights (gemv_bf16_residual with w_bf12): x = bf(x + bf(a . W[r] + b[r]))
// and the fused post-attention norm, against the CPU reference and, on rows without exceptions, the bf16 path's
// bits.
TEST(GemvBf12, OprojResidualMatchesReferenceAndBf16Path) {
  const int Q = 4096, H = 2880;
  for (int n : {1, 2}) {
    SCOPED_TRACE(n);
    Rng rng(77 + n);
    auto a = random_bf16(size_t(n) * Q, rng, -1.f, 1.f);
    for (int m = 0; m < n; ++m) a[size_t(m) * Q] = bf16{0};  // the huge-value rows' column
    const auto w = packable_matrix(H, Q, rng, 1.0f / std::sqrt(float(Q)));
    const auto b = random_bf16(size_t(H), rng, -0.2f, 0.2f);
    const auto x = random_bf16(size_t(n) * H, rng, -2.f, 2.f);
    const auto nw = random_bf16(size_t(H), rng, 0.5f, 1.5f);
    std::vector<bf16> proj(size_t(n) * H);
    cpu::linear_bf16(a.data(), n, Q, w.data(), b.data(), H, proj.data());
    std::vector<float> ref(size_t(n) * H);
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = bf(bf16_to_f32(x[i]) + bf16_to_f32(proj[i]));
    DevBuf<bf16> da(a), dw(w), db(b), dnw(nw), dx12(x), dx16(x), dxn12{size_t(n) * H}, dxn16{size_t(n) * H};
    DevBuf<unsigned> counter{1};
    CUDA_CHECK(cudaMemset(counter.p, 0, sizeof(unsigned)));
    const DevicePacked packed = pack_on_device(dw.p, H, Q);
    ASSERT_GT(packed.n_exc, 0u);
    GemvBf16Params p;
    p.a = da.p, p.w = dw.p, p.bias = db.p, p.n_rows = n, p.k = Q, p.n_out = H;
    p.norm_weight = dnw.p, p.done_counter = counter.p, p.eps = 1e-5f;
    GemvBf16Params p16 = p, p12 = p;
    p16.y = dx16.p, p16.norm_out = dxn16.p;
    p12.y = dx12.p, p12.norm_out = dxn12.p, p12.w_bf12 = packed.w;
    gemv_bf16_residual(p16, nullptr);
    gemv_bf16_residual(p12, nullptr);
    const auto y12 = dx12.download(), y16 = dx16.download();
    expect_close(to_f32(y12), ref, kTol, "bf12 o_proj + residual vs CPU");
    const Bf12Matrix m = pack_reference(w, H, Q);
    for (int t = 0; t < n; ++t)
      for (int r = 0; r < H; ++r) {
        const size_t i = size_t(t) * H + r;
        if (m.rows[size_t(r)].exc0 == kBf12None) {
          ASSERT_EQ(y12[i].bits, y16[i].bits) << "row " << r << " token " << t;
        } else if (r % 7 == 0) {  // every ordinary value an exception: within 2 ulps of the reference
          const float got = bf16_to_f32(y12[i]), want = ref[i];
          ASSERT_LE(std::fabs(got - want), 2.0f * std::ldexp(1.0f, std::ilogb(std::fabs(want)) - 7) + 1e-3f)
              << "row " << r << " token " << t;
        }
      }
    std::vector<bf16> xn_ref(size_t(n) * H);
    cpu::rmsnorm(y12.data(), nw.data(), n, H, 1e-5f, xn_ref.data());
    expect_close(to_f32(dxn12.download()), to_f32(xn_ref), kTol, "fused norm after the bf12 o_proj");
  }
}

// The default packer (the runner's) leaves a matrix with a row of more than kDefaultMaxRowExceptions exceptions
// unpacked, names it, and packs the others of the same plan.
TEST(Bf12Pack, RowsWithManyExceptionsLeaveTheMatrixUnpacked) {
  const int n = 64, k = 2880;
  Rng rng(5);
  const auto ok = packable_matrix(n, k, rng, 0.03f, /*huge_rows=*/false);  // <= 8 sprinkled exceptions per row
  const auto bad = packable_matrix(n, k, rng, 0.03f, /*huge_rows=*/true);  // rows of ~k exceptions
  DevBuf<bf16> dok(ok), dbad(bad);
  DevBuf<uint32_t> scratch{size_t(n)};
  Bf12Packer packer;
  packer.plan(dok.p, n, k, "ok", scratch.p, nullptr);
  packer.plan(dbad.p, n, k, "bad", scratch.p, nullptr);
  ASSERT_EQ(packer.unpacked().size(), 1u);
  EXPECT_NE(packer.unpacked()[0].find("bad"), std::string::npos) << packer.unpacked()[0];
  DeviceArena arena("bf12_test", packer.bytes() + 4096);
  const std::vector<Bf12Weights> w = packer.pack(arena, scratch.p, nullptr);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].bytes, nullptr);
  EXPECT_EQ(w[1].bytes, nullptr);
  EXPECT_EQ(packer.weights(), size_t(n) * k);
  const Bf12Matrix ref = pack_reference(ok, n, k);
  EXPECT_EQ(download(w[0].bytes, ref.bytes.size()), ref.bytes);
}

TEST(GemvBf12, UnsupportedShapesFailLoudly) {
  DevBuf<uint8_t> bytes{16};
  GemvBf16Params p;
  p.n_rows = 1, p.n_out = 10, p.k = 100, p.w_bf12.bytes = bytes.p;
  EXPECT_THROW(gemv_bf16_lm_head(p, nullptr), Error);
  DevBuf<uint32_t> scratch(4);
  EXPECT_THROW(bf12_count_exceptions(scratch.p, 2, 12, scratch.p, nullptr), Error);
}

}  // namespace
}  // namespace mxs::cuda::test
