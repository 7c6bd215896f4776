// bf12: a lossless 12-bit packing of a bf16 matrix [N, K] for bandwidth-bound GEMVs (batch-1 decode reads every
// dense weight once per token; at 12 instead of 16 bits per weight it reads 25% fewer bytes).
//
// Why it is lossless: a bf16 value is sign (1) | exponent E (8) | mantissa (7). The weights of one row span few
// binades, so E is stored as a 4-bit code relative to a per-row base: base = max(max E of the row - 15, 0),
// code = E - base. A value whose E falls below the window (E < base: zeros of a row whose base is > 0, values
// 2^15 and more below the row's largest) cannot be coded; it is an "exception": code 0 is stored (so the
// main loop decodes it with E = base) and the row's exception list holds its column and its true bf16 bits.
// A consumer adds (true - decoded) * x[col] to the row's dot product. Unpacking reproduces every bf16 bit.
// Exceptions are rare for trained or random weights (a normal row of 2,880 values has ~0.2 of them); their
// count is reported at load time.
//
// Layout of one matrix (all planes row-major; vector v of a row = its elements 8v .. 8v + 7; K % 8 == 0):
//   bytes [N][K]     u8   sign << 7 | mantissa of each element
//   nibs  [N][K / 8] u32  the 8 codes of vector v: element 8v + i's code in bits 4 (i / 2) + 16 (i % 2) .. +3,
//                         so pair (2j, 2j + 1) sits at bits 4j and 16 + 4j (the decoder's shifts: bf12.cuh)
//   rows  [N]        Bf12Row: the base word and the row's first two exceptions inline (one 16-byte load, issued
//                    with the weights: no dependent load for a row with at most two exceptions)
//   exc   [n_exc]    u32  the rest: for a row with c > 2 exceptions, at rows[r].exc_rest: c - 2, then its entries
//                         3..c
// An exception entry is col << 16 | true bf16 bits; a row's entries go by increasing column. K < 65536 (a column
// fits 16 bits and 0xFFFFFFFF never is an entry).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mxs {

constexpr uint32_t kBf12None = 0xFFFFFFFFu;  // no entry / no overflow list

struct Bf12Row {
  uint32_t cword;     // base << 7 | base << 23: the exponent base in both bf16 halves of a decoded pair
  uint32_t exc0;      // first exception entry (kBf12None: none)
  uint32_t exc1;      // second
  uint32_t exc_rest;  // index into exc of the overflow list (count, entries), kBf12None: none
};
static_assert(sizeof(Bf12Row) == 16, "Bf12Row is one 16-byte load");

// Host copy of a packed matrix (the reference packer; the runner packs on the device, bit for bit the same).
struct Bf12Matrix {
  int n = 0, k = 0;
  std::vector<uint8_t> bytes;   // [n * k]
  std::vector<uint32_t> nibs;   // [n * k / 8]
  std::vector<Bf12Row> rows;    // [n]
  std::vector<uint32_t> exc;    // overflow lists
};

// Bit position of element i (0..7) of a vector in its code word.
constexpr int bf12_code_shift(int i) { return 4 * (i / 2) + 16 * (i % 2); }

// Exponent base of a row from its largest exponent field.
constexpr uint32_t bf12_base(uint32_t max_exponent) { return max_exponent > 15 ? max_exponent - 15 : 0; }

// The bf16 bits the main loop decodes for `bits` in a row with exponent base `base` (its own bits unless it is
// an exception).
inline uint16_t bf12_decoded_bits(uint16_t bits, uint32_t base) {
  const uint32_t e = (bits >> 7) & 0xFFu;
  return e >= base ? bits : uint16_t((bits & 0x807Fu) | (base << 7));
}

// Words of a row's overflow list for c exceptions.
constexpr uint32_t bf12_overflow_words(uint32_t c) { return c > 2 ? c - 1 : 0; }

// Packs w [n, k] (bf16 bits, row-major). Throws mxs::Error when k % 8 != 0 or k >= 65536.
Bf12Matrix bf12_pack(const uint16_t* w, int n, int k);

// The bf16 bits of the packed matrix (exceptions applied): exactly the packed input.
std::vector<uint16_t> bf12_unpack(const Bf12Matrix& m);

// Packed bytes of an [n, k] matrix with n_words words of overflow lists (all four planes).
inline size_t bf12_bytes(size_t n, size_t k, size_t n_words) {
  return n * k + n * k / 2 + n * sizeof(Bf12Row) + n_words * 4;
}

// The exception entries of packed row r, by increasing column.
std::vector<uint32_t> bf12_row_exceptions(const Bf12Matrix& m, int r);

}  // namespace mxs
