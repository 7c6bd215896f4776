// bf12 packing kernels (bf12_pack.h). A warp per row; lane l handles vectors l, l + 32, ... of the row, so the
// exceptions come out by increasing column when each iteration's counts are scanned across the warp.
#include "cuda/kernels/bf12_pack.h"

#include <algorithm>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/bf12.cuh"

namespace mxs::cuda {
namespace {

constexpr int kWarps = 8;

__device__ __forceinline__ uint32_t exponent(uint32_t bits) { return (bits >> 7) & 0xFFu; }

// The row's exponent base (every lane).
__device__ uint32_t row_base(const uint4* row, int nv) {
  uint32_t m = 0;
  for (int v = threadIdx.x & 31; v < nv; v += 32) {
    const uint4 u = row[v];
    const uint32_t x[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) m = max(m, max(exponent(x[i]), exponent(x[i] >> 16)));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = max(m, __shfl_xor_sync(0xffffffffu, m, o));
  return bf12_base(m);
}

__global__ void __launch_bounds__(kWarps * 32) count_kernel(const uint16_t* w, int n, int k, uint32_t* counts) {
  const int r = blockIdx.x * kWarps + (threadIdx.x >> 5);
  if (r >= n) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + size_t(r) * k);
  const int nv = k / 8;
  const uint32_t base = row_base(row, nv);
  uint32_t c = 0;
  for (int v = threadIdx.x & 31; v < nv; v += 32) {
    const uint4 u = row[v];
    const uint32_t x[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) c += (exponent(x[i]) < base) + (exponent(x[i] >> 16) < base);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  if ((threadIdx.x & 31) == 0) counts[r] = c;
}

// exc_start[r]: the row's overflow list (only read when it has more than two exceptions).
__global__ void __launch_bounds__(kWarps * 32) pack_kernel(const uint16_t* w, int n, int k, const uint32_t* exc_start,
                                                           Bf12Weights out) {
  const int r = blockIdx.x * kWarps + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= n) return;
  const uint4* row = reinterpret_cast<const uint4*>(w + size_t(r) * k);
  const int nv = k / 8;
  const uint32_t base = row_base(row, nv);
  uint8_t* bytes = const_cast<uint8_t*>(out.bytes) + size_t(r) * k;
  uint32_t* nibs = const_cast<uint32_t*>(out.nibs) + size_t(r) * nv;
  uint32_t* hdr = reinterpret_cast<uint32_t*>(const_cast<Bf12Row*>(out.rows) + r);  // cword, exc0, exc1, exc_rest
  uint32_t* rest = const_cast<uint32_t*>(out.exc) + exc_start[r];
  if (lane == 0) hdr[0] = base << 7 | base << 23, hdr[1] = hdr[2] = hdr[3] = kBf12None;
  __syncwarp();
  uint32_t seen = 0;  // exceptions in earlier iterations
  for (int v0 = 0; v0 < nv; v0 += 32) {
    const int v = v0 + lane;
    uint16_t e[8] = {};
    if (v < nv) {
      const uint4 u = row[v];
      const uint32_t words[4] = {u.x, u.y, u.z, u.w};
      for (int i = 0; i < 8; ++i) e[i] = uint16_t(words[i / 2] >> (16 * (i % 2)));
    }
    uint32_t lo = 0, hi = 0, code = 0, n_exc = 0;
    for (int i = 0; i < 8; ++i) {
      const uint32_t b = e[i], x = exponent(b);
      const uint32_t byte = ((b >> 8) & 0x80u) | (b & 0x7Fu);
      if (i < 4) lo |= byte << (8 * i); else hi |= byte << (8 * (i - 4));
      code |= (x >= base ? x - base : 0u) << bf12_code_shift(i);
      n_exc += v < nv && x < base;
    }
    // Exclusive scan of the lanes' exception counts: entries by increasing column.
    uint32_t before = n_exc;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const uint32_t t = __shfl_up_sync(0xffffffffu, before, o);
      if (lane >= o) before += t;
    }
    const uint32_t total = __shfl_sync(0xffffffffu, before, 31);
    before -= n_exc;
    if (v < nv) {
      *reinterpret_cast<uint2*>(bytes + size_t(v) * 8) = make_uint2(lo, hi);
      nibs[v] = code;
      uint32_t at = seen + before;  // index of the entry within the row
      for (int i = 0; i < 8; ++i)
        if (exponent(e[i]) < base) {
          const uint32_t entry = uint32_t(8 * v + i) << 16 | e[i];
          if (at < 2) hdr[1 + at] = entry; else rest[at - 1] = entry;
          ++at;
        }
    }
    seen += total;
  }
  if (lane == 0 && seen > 2) rest[0] = seen - 2, hdr[3] = exc_start[r];
}

void check_shape(int n, int k) {
  MXS_CHECK(n >= 1 && k > 0 && k % 8 == 0 && k < 65536,
            strfmt("bf12 packing: [%d, %d] needs n >= 1 and k a multiple of 8, below 65536", n, k));
}

}  // namespace

void bf12_count_exceptions(const void* w, int n, int k, uint32_t* counts, cudaStream_t stream) {
  check_shape(n, k);
  count_kernel<<<(n + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(static_cast<const uint16_t*>(w), n, k, counts);
  CUDA_CHECK_LAUNCH();
}

void bf12_pack_rows(const void* w, int n, int k, const uint32_t* exc_start, const Bf12Weights& out,
                    cudaStream_t stream) {
  check_shape(n, k);
  pack_kernel<<<(n + kWarps - 1) / kWarps, kWarps * 32, 0, stream>>>(static_cast<const uint16_t*>(w), n, k,
                                                                      exc_start, out);
  CUDA_CHECK_LAUNCH();
}

void Bf12Packer::plan(const void* w, int n, int k, const std::string& name, uint32_t* scratch, cudaStream_t stream) {
  Matrix m{w, n, k, name, std::vector<uint32_t>(size_t(n)), 0, 0, 0, true};
  bf12_count_exceptions(w, n, k, scratch, stream);
  CUDA_CHECK(cudaMemcpyAsync(m.exc_start.data(), scratch, size_t(n) * 4, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  uint64_t words = 0, n_exc = 0;
  for (uint32_t& c : m.exc_start) {
    const uint32_t count = c;
    c = uint32_t(words);
    words += bf12_overflow_words(count);
    n_exc += count;
    m.max_row_exc = std::max(m.max_row_exc, count);
  }
  m.packed = m.max_row_exc <= max_row_exc_;
  MXS_CHECK(words < kBf12None, strfmt("bf12 packing: %s has %llu exceptions", name.c_str(), (unsigned long long)n_exc));
  m.n_words = uint32_t(words);
  m.n_exc = n_exc;
  mats_.push_back(std::move(m));
}

size_t Bf12Packer::bytes() const {
  size_t b = 0;
  for (const Matrix& m : mats_)
    if (m.packed)
      b += DeviceArena::aligned(size_t(m.n) * m.k) + DeviceArena::aligned(size_t(m.n) * m.k / 2) +
         DeviceArena::aligned(size_t(m.n) * sizeof(Bf12Row)) + DeviceArena::aligned(size_t(m.n_words) * 4 + 4);
  return b;
}

size_t Bf12Packer::exceptions() const {
  size_t e = 0;
  for (const Matrix& m : mats_) e += m.packed ? m.n_exc : 0;
  return e;
}

size_t Bf12Packer::weights() const {
  size_t e = 0;
  for (const Matrix& m : mats_) e += m.packed ? size_t(m.n) * m.k : 0;
  return e;
}

std::vector<std::string> Bf12Packer::unpacked() const {
  std::vector<std::string> u;
  for (const Matrix& m : mats_)
    if (!m.packed) u.push_back(strfmt("%s (a row with %u exceptions)", m.name.c_str(), m.max_row_exc));
  return u;
}

std::vector<Bf12Weights> Bf12Packer::pack(DeviceArena& arena, uint32_t* scratch, cudaStream_t stream) {
  std::vector<Bf12Weights> out;
  for (const Matrix& m : mats_) {
    Bf12Weights p;
    if (!m.packed) {
      out.push_back(p);
      continue;
    }
    p.bytes = static_cast<const uint8_t*>(arena.alloc(m.name + ".bf12_bytes", size_t(m.n) * m.k));
    p.nibs = static_cast<const uint32_t*>(arena.alloc(m.name + ".bf12_codes", size_t(m.n) * m.k / 2));
    p.rows = static_cast<const Bf12Row*>(arena.alloc(m.name + ".bf12_rows", size_t(m.n) * sizeof(Bf12Row)));
    p.exc = static_cast<const uint32_t*>(arena.alloc(m.name + ".bf12_exceptions", size_t(m.n_words) * 4 + 4));
    CUDA_CHECK(cudaMemcpyAsync(scratch, m.exc_start.data(), size_t(m.n) * 4, cudaMemcpyHostToDevice, stream));
    bf12_pack_rows(m.w, m.n, m.k, scratch, p, stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));  // (scratch is reused by the next matrix)
    out.push_back(p);
  }
  return out;
}

}  // namespace mxs::cuda
