// bf12 on the device: the load-time packer against the reference packer (common/bf12.h), plane for plane, and the
// bf12 LM head against the CPU reference and the bf16 kernel. The LM head matrix has rows whose exceptions decide
// the result (a huge value in column 0, whose activation is 0, pushes the row's window up so that every ordinary
// value becomes an exception: without the exact correction those rows would be far off).
#include <cmath>
#include <vector>

#include "common/bf12.h"
#include "cpu/cpu_ops.h"
#include "cuda/device_arena.h"
#include "cuda/kernels/bf12_pack.h"
#include "cuda/kernels/gemv_bf12.h"
#include "cuda/kernels/gemv_bf16.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {
namespace {

constexpr double kTol = 4e-3;  // relative L2 for bf16 outputs (as cuda_kernels_test)

// Random rows ~U(-s, s) with zeros, subnormals and far-below-the-row values sprinkled in, and rows (every 7th)
// whose column 0 holds a huge value.
std::vector<bf16> packable_matrix(int n, int k, Rng& rng, float s) {
  auto w = random_bf16(size_t(n) * k, rng, -s, s);
  for (int i = 0; i < n * k / 97; ++i) w[size_t(rng.below(n * k))] = bf16{0};
  for (int i = 0; i < n * k / 211; ++i) w[size_t(rng.below(n * k))] = f32_to_bf16(s * 1e-7f);
  for (int i = 0; i < n * k / 401; ++i) w[size_t(rng.below(n * k))] = bf16{0x8003};
  for (int r = 0; r < n; r += 7) w[size_t(r) * k] = f32_to_bf16(1e4f);
  return w;
}

struct DevicePacked {
  DeviceArena arena;
  Bf12Weights w;
  uint64_t n_exc = 0;
};

DevicePacked pack_on_device(const DevBuf<bf16>& dw, int n, int k) {
  DevBuf<uint32_t> scratch{size_t(n)};
  Bf12Packer packer;
  packer.plan(dw.p, n, k, "m", scratch.p, nullptr);
  DevicePacked d;
  d.arena = DeviceArena("bf12_test", packer.bytes() + 4096);
  d.w = packer.pack(d.arena, scratch.p, nullptr)[0];
  d.n_exc = packer.exceptions();
  return d;
}

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
    std::vector<uint16_t> bits(w.size());
    for (size_t i = 0; i < w.size(); ++i) bits[i] = w[i].bits;
    const Bf12Matrix ref = bf12_pack(bits.data(), n, k);
    uint64_t n_exc = 0;
    for (int r = 0; r < n; ++r) n_exc += bf12_row_exceptions(ref, r).size();
    ASSERT_GT(n_exc, uint64_t(n / 7) * uint64_t(k / 2)) << "the huge-value rows make exceptions";
    DevBuf<bf16> dw(w);
    const DevicePacked d = pack_on_device(dw, n, k);
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
      const DevicePacked packed = pack_on_device(dwl, V, H);
      GemvBf12Params p;
      p.a = dh.p, p.src_rows = drows.p, p.w = packed.w, p.y = d12.p, p.row_argmax = amax12.p;
      p.n_rows = n, p.k = H, p.n_out = V;
      gemv_bf12_lm_head(p, nullptr);
      GemvBf16Params q;
      q.a = dh.p, q.src_rows = drows.p, q.w = dwl.p, q.y = d16.p, q.row_argmax = amax16.p;
      q.n_rows = n, q.k = H, q.n_out = V;
      gemv_bf16_lm_head(q, nullptr);
      const auto y12 = d12.download(), y16 = d16.download();
      expect_close(to_f32(y12), to_f32(logits), kTol, "bf12 lm_head vs CPU");
      // The rows whose window holds every value: bit for bit the bf16 kernel.
      std::vector<uint16_t> bits(wlm.size());
      for (size_t i = 0; i < wlm.size(); ++i) bits[i] = wlm[i].bits;
      const Bf12Matrix ref = bf12_pack(bits.data(), V, H);
      int exact_rows = 0;
      for (int r = 0; r < V; ++r) {
        if (ref.rows[size_t(r)].exc0 != kBf12None) continue;
        ++exact_rows;
        for (int m = 0; m < n; ++m)
          ASSERT_EQ(y12[size_t(m) * V + r].bits, y16[size_t(m) * V + r].bits) << "row " << r << " token " << m;
      }
      EXPECT_GT(exact_rows, 0);
      // The huge-value rows: every ordinary value is an exception; each output against the CPU within 2 bf16 ulps.
      for (int r = 0; r < V; r += 7)
        for (int m = 0; m < n; ++m) {
          const float a = bf16_to_f32(y12[size_t(m) * V + r]), b = bf16_to_f32(logits[size_t(m) * V + r]);
          ASSERT_LE(std::fabs(a - b), 2.0f * std::ldexp(1.0f, std::ilogb(std::fabs(b)) - 7) + 1e-6f)
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

TEST(GemvBf12, UnsupportedShapesFailLoudly) {
  GemvBf12Params p;
  p.n_rows = 1, p.n_out = 10, p.k = 100;
  EXPECT_THROW(gemv_bf12_lm_head(p, nullptr), Error);
  DevBuf<uint32_t> scratch(4);
  EXPECT_THROW(bf12_count_exceptions(scratch.p, 2, 12, scratch.p, nullptr), Error);
}

}  // namespace
}  // namespace mxs::cuda::test
