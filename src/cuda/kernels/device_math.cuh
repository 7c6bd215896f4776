// Device helpers shared by the kernel families: bf16 <-> fp32 with the spec's rounding points (bf() =
// round to nearest even), warp reductions, 16-byte vector loads, and the e2m1 byte -> bf16x2 table.
#pragma once
#include <cstdint>
#include <utility>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

namespace mxs::cuda {

using bf16_t = __nv_bfloat16;

__device__ __forceinline__ float bf16_bits_to_f32(uint16_t b) { return __uint_as_float(uint32_t(b) << 16); }
__device__ __forceinline__ float to_f32(bf16_t v) { return __bfloat162float(v); }
__device__ __forceinline__ bf16_t to_bf16(float v) { return __float2bfloat16_rn(v); }
// bf(x): x rounded once to bf16, back in fp32 (gpt-oss-spec.md §3 notation).
__device__ __forceinline__ float bf(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// The two bf16 halves of a 32-bit word as fp32: low half = element 2i, high half = element 2i+1.
__device__ __forceinline__ float lo_f32(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float hi_f32(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
// Two floats rounded to bf16 (nearest even) in one 32-bit word; the low half holds `lo`.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

constexpr float kLog2e = 1.4426950408889634f;  // log2(e): e^x = 2^(x log2 e)

// 2^x (ex2.approx, flush-to-zero; 2^0 is exactly 1, 2^-inf is 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// 1 / x (rcp.approx: one MUFU op, within 1 ulp; 1 / inf = 0), where __frcp_rn is an iterated sequence.
__device__ __forceinline__ float fast_rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// fp32 bits reordered so that unsigned comparison follows float order (NaN with the sign bit clear sorts
// above +inf).
__device__ __forceinline__ uint32_t orderable_bits(float v) {
  const uint32_t u = __float_as_uint(v);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
// Its inverse.
__device__ __forceinline__ float from_orderable_bits(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Key of (value, id) for a max-reduction (atomicMax, shuffles): larger value first, then lower id. 0 never
// results, so 0 can stand for "none".
__device__ __forceinline__ unsigned long long argmax_key(float v, int id) {
  return (static_cast<unsigned long long>(orderable_bits(v)) << 32) | uint32_t(0x7fffffff - id);
}

// The L2 policy of streamed weights: evict_first. A decode step reads every weight once (3.1 GB for 20b, 60 times
// the L2), so a weight line is never hit again, while what every layer reuses (the KV cache, activations,
// norms, biases, the kernels' own code) would be evicted by the streams at normal priority.
__device__ __forceinline__ uint64_t l2_policy_weights() {
  uint64_t p;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

// 16-byte global load that bypasses L1 allocation and is first to leave L2: weights are streamed once per step.
__device__ __forceinline__ uint4 ldg_stream(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p), "l"(l2_policy_weights()));
  return r;
}

// 4-byte weight load (scale words) with the same policy.
__device__ __forceinline__ uint32_t ldg_stream_u32(const void* p) {
  uint32_t r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.u32 %0, [%1], %2;"
               : "=r"(r)
               : "l"(p), "l"(l2_policy_weights()));
  return r;
}

// Dot of 8 bf16 weights (one uint4) with 8 fp32 activations.
__device__ __forceinline__ float dot8(uint4 w, const float4& a, const float4& b, float acc) {
  acc = fmaf(lo_f32(w.x), a.x, acc);
  acc = fmaf(hi_f32(w.x), a.y, acc);
  acc = fmaf(lo_f32(w.y), a.z, acc);
  acc = fmaf(hi_f32(w.y), a.w, acc);
  acc = fmaf(lo_f32(w.z), b.x, acc);
  acc = fmaf(hi_f32(w.z), b.y, acc);
  acc = fmaf(lo_f32(w.w), b.z, acc);
  acc = fmaf(hi_f32(w.w), b.w, acc);
  return acc;
}

// f(std::integral_constant<int, i>) for i = 0 .. N - 1: compile-time indices, e.g. for immediate load offsets.
template <int N, typename F, int... I>
__device__ __forceinline__ void unroll_for_impl(F&& f, std::integer_sequence<int, I...>) {
  (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F>
__device__ __forceinline__ void unroll_for(F&& f) {
  unroll_for_impl<N>(f, std::make_integer_sequence<int, N>{});
}

// e8m0 scale byte -> 2^(s-127) as fp32 (s = 0 gives 0 instead of 2^-127: below any bf16 product we keep).
__device__ __forceinline__ float e8m0_to_f32(uint8_t s) { return __uint_as_float(uint32_t(s) << 23); }

// e2m1 pair table: byte (low nibble = even element, high nibble = odd element) -> the two values as a
// bf16x2 word (low half = even element). Values are exact in bf16; the block scale is applied after the dot.
__host__ __device__ constexpr uint16_t e2m1_bf16_bits(int nibble) {
  // +-{0, 0.5, 1, 1.5, 2, 3, 4, 6}
  constexpr uint16_t mag[8] = {0x0000, 0x3f00, 0x3f80, 0x3fc0, 0x4000, 0x4040, 0x4080, 0x40c0};
  return uint16_t(mag[nibble & 7] | ((nibble & 8) ? 0x8000 : 0));
}

}  // namespace mxs::cuda
