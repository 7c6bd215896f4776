// Device side of the bf12 packing (layout and why: common/bf12.h): one vector of 8 weights is 8 bytes (sign |
// mantissa) + one 32-bit word of exponent codes, decoded in registers to the 8 bf16 values (uint4, as the bf16
// GEMVs load them) in ~4.5 integer instructions per pair:
//   t    = prmt(bytes, sign-replicating selector)  [ssssssss s mmmmmmm] per half: byte in 0-7, its sign in 8-15
//   pair = (codes & mask) * 2^k + ((t & 0x807F807F) | cword)
// The masked codes land on exponent bits 7-10 / 23-26 and add to the base (cword); base + code <= 255, so no
// carry reaches the sign bit. Exceptions (code 0, true value in the row's header or list) are corrected by the
// caller: bf12_row_corrections.
#pragma once
#include <cstdint>

#include "common/bf12.h"
#include "cuda/kernels/bf12_weights.h"
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {

// One vector as loaded: 8 sign|mantissa bytes and the code word.
struct Bf12Vec {
  uint2 b;
  uint32_t c;
};

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, 0, %2;" : "=r"(r) : "r"(a), "r"(sel));
  return r;
}

// Streaming loads of one vector of a packed row: bytes at pb + OFF_B, codes at pc + OFF_C (byte offsets as
// immediates, so that one address register pair per row serves all of a lane's loads; both bypass L1 and leave
// L2 first, as ldg_stream).
template <int OFF_B, int OFF_C>
__device__ __forceinline__ Bf12Vec bf12_load(const uint8_t* pb, const uint32_t* pc) {
  Bf12Vec r;
  const uint64_t pol = l2_policy_weights();
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v2.u32 {%0,%1}, [%2+%3], %4;"
               : "=r"(r.b.x), "=r"(r.b.y)
               : "l"(pb), "n"(OFF_B), "l"(pol));
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.u32 %0, [%1+%2], %3;"
               : "=r"(r.c)
               : "l"(pc), "n"(OFF_C), "l"(pol));
  return r;
}

// The row header (one 16-byte load; every lane of a warp reads the same one).
__device__ __forceinline__ Bf12Row bf12_row(const Bf12Weights& w, size_t row) {
  const uint4 u = __ldg(reinterpret_cast<const uint4*>(w.rows) + row);
  return Bf12Row{u.x, u.y, u.z, u.w};
}

// The 8 bf16 weights of a vector (exceptions decode with exponent = base).
__device__ __forceinline__ uint4 bf12_decode(const Bf12Vec& x, uint32_t cword) {
  const uint32_t c_hi = x.c >> 8;
  uint4 o;
  o.x = (x.c & 0x000F000Fu) * 128u + ((prmt(x.b.x, 0x9180u) & 0x807F807Fu) | cword);
  o.y = (x.c & 0x00F000F0u) * 8u + ((prmt(x.b.x, 0xB3A2u) & 0x807F807Fu) | cword);
  o.z = (c_hi & 0x000F000Fu) * 128u + ((prmt(x.b.y, 0x9180u) & 0x807F807Fu) | cword);
  o.w = (c_hi & 0x00F000F0u) * 8u + ((prmt(x.b.y, 0xB3A2u) & 0x807F807Fu) | cword);
  return o;
}

// (true - decoded) of an exception entry in a row with exponent base word `cword`, fp32 (exact unless the true
// value lies more than 16 binades below the window).
__device__ __forceinline__ float bf12_exception_delta(uint32_t entry, uint32_t cword) {
  const uint32_t bits = entry & 0xFFFFu;
  const uint32_t dec = (bits & 0x807Fu) | (cword & 0x7F80u);
  return bf16_bits_to_f32(uint16_t(bits)) - bf16_bits_to_f32(uint16_t(dec));
}

// v += sum over row h's exceptions of (true - decoded) * x(col), by increasing column. The first two come with
// the header; a row with more reads its overflow list (a dependent load, rare: P(>2) ~1% of rows of 2,880 normal
// values).
template <typename XAt>
__device__ __forceinline__ float bf12_row_corrections(const Bf12Row& h, const uint32_t* exc, float v, XAt x_at) {
  if (h.exc0 == kBf12None) return v;
  v = fmaf(bf12_exception_delta(h.exc0, h.cword), x_at(h.exc0 >> 16), v);
  if (h.exc1 == kBf12None) return v;
  v = fmaf(bf12_exception_delta(h.exc1, h.cword), x_at(h.exc1 >> 16), v);
  if (h.exc_rest == kBf12None) return v;
  const uint32_t n = __ldg(exc + h.exc_rest);
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t e = __ldg(exc + h.exc_rest + 1 + i);
    v = fmaf(bf12_exception_delta(e, h.cword), x_at(e >> 16), v);
  }
  return v;
}

}  // namespace mxs::cuda
