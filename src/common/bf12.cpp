// The reference bf12 packer and unpacker (layout: bf12.h).
#include "common/bf12.h"

#include <algorithm>

#include "common/error.h"

namespace mxs {

Bf12Matrix bf12_pack(const uint16_t* w, int n, int k) {
  MXS_CHECK(n >= 0 && k > 0 && k % 8 == 0 && k < 65536,
            strfmt("bf12_pack: k = %d must be a positive multiple of 8, below 65536", k));
  Bf12Matrix m;
  m.n = n, m.k = k;
  m.bytes.resize(size_t(n) * k);
  m.nibs.assign(size_t(n) * k / 8, 0u);
  m.rows.resize(size_t(n));
  for (int r = 0; r < n; ++r) {
    const uint16_t* row = w + size_t(r) * k;
    uint32_t max_e = 0;
    for (int c = 0; c < k; ++c) max_e = std::max(max_e, uint32_t(row[c] >> 7) & 0xFFu);
    const uint32_t base = bf12_base(max_e);
    Bf12Row& h = m.rows[size_t(r)];
    h.cword = base << 7 | base << 23;
    std::vector<uint32_t> entries;
    for (int c = 0; c < k; ++c) {
      const uint32_t b = row[c], e = (b >> 7) & 0xFFu;
      m.bytes[size_t(r) * k + c] = uint8_t(((b >> 8) & 0x80u) | (b & 0x7Fu));
      const uint32_t code = e >= base ? e - base : 0u;
      m.nibs[(size_t(r) * k + c) / 8] |= code << bf12_code_shift(c % 8);
      if (e < base) entries.push_back(uint32_t(c) << 16 | b);
    }
    h.exc0 = entries.size() > 0 ? entries[0] : kBf12None;
    h.exc1 = entries.size() > 1 ? entries[1] : kBf12None;
    h.exc_rest = kBf12None;
    if (entries.size() > 2) {
      h.exc_rest = uint32_t(m.exc.size());
      m.exc.push_back(uint32_t(entries.size() - 2));
      m.exc.insert(m.exc.end(), entries.begin() + 2, entries.end());
    }
  }
  return m;
}

std::vector<uint16_t> bf12_unpack(const Bf12Matrix& m) {
  std::vector<uint16_t> out(size_t(m.n) * m.k);
  for (int r = 0; r < m.n; ++r) {
    const Bf12Row& h = m.rows[size_t(r)];
    const uint32_t base = (h.cword >> 7) & 0xFFu;
    for (int c = 0; c < m.k; ++c) {
      const size_t i = size_t(r) * m.k + c;
      const uint32_t byte = m.bytes[i], code = (m.nibs[i / 8] >> bf12_code_shift(c % 8)) & 0xFu;
      out[i] = uint16_t((byte & 0x80u) << 8 | (base + code) << 7 | (byte & 0x7Fu));
    }
    for (uint32_t e : bf12_row_exceptions(m, r)) out[size_t(r) * m.k + (e >> 16)] = uint16_t(e & 0xFFFFu);
  }
  return out;
}

std::vector<uint32_t> bf12_row_exceptions(const Bf12Matrix& m, int r) {
  const Bf12Row& h = m.rows[size_t(r)];
  std::vector<uint32_t> e;
  if (h.exc0 != kBf12None) e.push_back(h.exc0);
  if (h.exc1 != kBf12None) e.push_back(h.exc1);
  if (h.exc_rest != kBf12None) e.insert(e.end(), m.exc.begin() + h.exc_rest + 1, m.exc.begin() + h.exc_rest + 1 + m.exc[h.exc_rest]);
  return e;
}

}  // namespace mxs
