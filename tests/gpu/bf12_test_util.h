// bf12 helpers for the GPU tests: matrices with exceptions of every kind, and a packed device copy.
#pragma once
#include <cstdint>
#include <vector>

#include "common/bf12.h"
#include "cuda/device_arena.h"
#include "cuda/kernels/bf12_pack.h"
#include "gpu_test_util.h"

namespace mxs::cuda::test {

// Random rows ~U(-s, s) with zeros, subnormals and far-below-the-row values sprinkled over a third of the rows
// (one to eight per row: inline and overflow exceptions); with huge_rows, rows 0, 7, 14, ... hold a huge value in
// column 0, which lifts the row's window so that every ordinary value becomes an exception.
inline std::vector<bf16> packable_matrix(int n, int k, Rng& rng, float s, bool huge_rows = true) {
  auto w = random_bf16(size_t(n) * k, rng, -s, s);
  const bf16 specials[3] = {bf16{0}, f32_to_bf16(s * 1e-7f), bf16{0x8003}};
  for (int r = 1; r < n; r += 3)
    for (int i = 0, m = 1 + rng.below(8); i < m; ++i) w[size_t(r) * k + rng.below(k)] = specials[rng.below(3)];
  if (huge_rows)
    for (int r = 0; r < n; r += 7) w[size_t(r) * k] = f32_to_bf16(1e4f);
  return w;
}

inline Bf12Matrix pack_reference(const std::vector<bf16>& w, int n, int k) {
  std::vector<uint16_t> bits(w.size());
  for (size_t i = 0; i < w.size(); ++i) bits[i] = w[i].bits;
  return bf12_pack(bits.data(), n, k);
}

struct DevicePacked {
  DeviceArena arena;
  Bf12Weights w;
  uint64_t n_exc = 0;
};

// The device packer's copy of w [n, k] (bf16 on the device), with no limit on a row's exceptions (the tests' rows
// of all-exceptions exercise the overflow lists; the runner's packer leaves such a matrix in bf16).
inline DevicePacked pack_on_device(const void* w, int n, int k) {
  DevBuf<uint32_t> scratch{size_t(n)};
  Bf12Packer packer(~0u);
  packer.plan(w, n, k, "m", scratch.p, nullptr);
  DevicePacked d;
  d.arena = DeviceArena("bf12_test", packer.bytes() + 4096);
  d.w = packer.pack(d.arena, scratch.p, nullptr)[0];
  d.n_exc = packer.exceptions();
  return d;
}

}  // namespace mxs::cuda::test
