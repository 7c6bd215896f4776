// BpeModel: hash tables built once at load; encode_piece allocates nothing for pieces up to kShortPiece
// bytes (the merge loop works in stack arrays), which covers all but pathological pieces.
#include "text/bpe_model.h"

#include <climits>
#include <cstring>
#include <queue>

#include "common/error.h"

namespace mxs::text {

namespace {

// 64-bit hash of a short byte string, 8 bytes per multiply (token bytes are 1..~128 bytes long).
uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xFF51AFD7ED558CCDull);
  const char* p = s.data();
  size_t n = s.size();
  auto mix = [&h](uint64_t v) {
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  };
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    mix(v);
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    mix(v);
  }
  h ^= h >> 29;
  h *= 0x94D049BB133111EBull;
  return h ^ (h >> 32);
}

uint64_t hash_pair(uint64_t key) {
  key *= 0x9E3779B97F4A7C15ull;
  return key ^ (key >> 29);
}

size_t table_size_for(size_t n) {  // power of two, load factor <= 1/2
  size_t size = 16;
  while (size < 2 * n) size *= 2;
  return size;
}

}  // namespace

BpeModel::BpeModel(std::vector<std::string> vocab, std::string_view source) {
  MXS_CHECK(!vocab.empty(), std::string(source) + ": empty vocab");
  offsets_.reserve(vocab.size() + 1);
  size_t total = 0;
  for (const auto& t : vocab) total += t.size();
  MXS_CHECK(total < UINT32_MAX, std::string(source) + ": vocab too large");
  arena_.reserve(total);
  offsets_.push_back(0);
  for (const auto& t : vocab) {
    arena_ += t;
    offsets_.push_back(static_cast<uint32_t>(arena_.size()));
  }

  vocab_slots_.assign(table_size_for(vocab.size()), 0);
  vocab_mask_ = vocab_slots_.size() - 1;
  for (int32_t id = 0; id < size(); ++id) {
    const std::string_view bytes = token_bytes(id);
    MXS_CHECK(!bytes.empty(), strfmt("%.*s: token %d is empty", int(source.size()), source.data(), id));
    MXS_CHECK(find(bytes) < 0, strfmt("%.*s: token %d duplicates token %d", int(source.size()), source.data(), id,
                                      find(bytes)));
    const uint64_t h = hash_bytes(bytes);
    uint64_t i = h & vocab_mask_;
    while (vocab_slots_[i] != 0) i = (i + 1) & vocab_mask_;
    vocab_slots_[i] = (h & 0xFFFFFFFF00000000ull) | uint64_t(uint32_t(id) + 1);
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    byte_ids_[b] = find(std::string_view(&c, 1));
    MXS_CHECK(byte_ids_[b] >= 0,
              strfmt("%.*s: byte 0x%02X has no token; not a byte-level BPE vocab", int(source.size()), source.data(), b));
  }
}

int32_t BpeModel::find(std::string_view bytes) const {
  const uint64_t h = hash_bytes(bytes);
  const uint64_t tag = h & 0xFFFFFFFF00000000ull;
  for (uint64_t i = h & vocab_mask_;; i = (i + 1) & vocab_mask_) {
    const uint64_t slot = vocab_slots_[i];
    if (slot == 0) return -1;
    if ((slot & 0xFFFFFFFF00000000ull) == tag) {
      const int32_t id = static_cast<int32_t>(uint32_t(slot) - 1);
      if (token_bytes(id) == bytes) return id;
    }
  }
}

void BpeModel::set_merges(const std::vector<std::pair<int32_t, int32_t>>& merges, std::string_view source) {
  merge_slots_.assign(table_size_for(merges.size()), MergeSlot{kEmptyKey, -1, -1});
  merge_mask_ = merge_slots_.size() - 1;
  n_merges_ = 0;
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto [left, right] = merges[rank];
    MXS_CHECK(left >= 0 && left < size() && right >= 0 && right < size(),
              strfmt("%.*s: merge %zu refers to an unknown token", int(source.size()), source.data(), rank));
    joined.assign(token_bytes(left)).append(token_bytes(right));
    const int32_t merged = find(joined);
    MXS_CHECK(merged >= 0, strfmt("%.*s: merge %zu (%d + %d) does not produce a vocab token", int(source.size()),
                                  source.data(), rank, left, right));
    const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    uint64_t i = hash_pair(key) & merge_mask_;
    while (merge_slots_[i].key != kEmptyKey && merge_slots_[i].key != key) i = (i + 1) & merge_mask_;
    if (merge_slots_[i].key == key) continue;  // a repeated merge keeps its first (lowest) rank, as in HF
    merge_slots_[i] = MergeSlot{key, static_cast<int32_t>(rank), merged};
    ++n_merges_;
  }
}

BpeModel::Merge BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
  for (uint64_t i = hash_pair(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& s = merge_slots_[i];
    if (s.key == key) return {s.rank, s.merged};
    if (s.key == kEmptyKey) return {};
  }
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.size() == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  if (const int32_t id = find(piece); id >= 0) {  // ignore_merges: a piece that is a token stays whole
    out.push_back(id);
    return;
  }
  if (piece.size() <= kShortPiece) {
    merge_short(piece, out);
  } else {
    merge_long(piece, out);
  }
}

void BpeModel::merge_short(std::string_view piece, std::vector<int32_t>& out) const {
  // Symbols as parallel arrays; rank[i]/merged[i] describe the pair (sym[i], sym[i+1]). Each merge removes
  // one entry with memmove: O(n^2) moves of <= 64 ints, cheaper than a heap for such sizes.
  constexpr int32_t kNone = INT32_MAX;
  const size_t n0 = piece.size();
  if (n0 > kShortPiece) return merge_long(piece, out);
  int32_t sym[kShortPiece], rank[kShortPiece], merged[kShortPiece];
  size_t n = n0;
  for (size_t i = 0; i < n; ++i) sym[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
  auto update_pair = [&](size_t i) {
    const Merge m = find_merge(sym[i], sym[i + 1]);
    rank[i] = m.rank < 0 ? kNone : m.rank;
    merged[i] = m.merged;
  };
  for (size_t i = 0; i + 1 < n; ++i) update_pair(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: leftmost wins ties
    }
    if (rank[best] == kNone) break;
    sym[best] = merged[best];
    const size_t tail = n - best - 2;  // entries after the removed one
    std::memmove(sym + best + 1, sym + best + 2, tail * sizeof(int32_t));
    std::memmove(rank + best + 1, rank + best + 2, tail * sizeof(int32_t));
    std::memmove(merged + best + 1, merged + best + 2, tail * sizeof(int32_t));
    --n;
    if (best + 1 < n) update_pair(best);
    if (best > 0) update_pair(best - 1);
  }
  out.insert(out.end(), sym, sym + n);
}

void BpeModel::merge_long(std::string_view piece, std::vector<int32_t>& out) const {
  // HF tokenizers' Word::merge_all: a min-heap of candidate merges ordered by (rank, position), symbols in
  // a doubly linked list over the byte positions. A candidate is stale when either side has changed since
  // it was queued (any change alters the pair's bytes, so comparing ids is exact).
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1 at the ends
  };
  struct Candidate {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const int32_t n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> syms(n);
  for (int32_t i = 0; i < n; ++i) syms[i] = {byte_ids_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  std::vector<Candidate> storage;
  storage.reserve(n);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap(std::greater<>{}, std::move(storage));
  auto push_pair = [&](int32_t pos) {
    const int32_t next = syms[pos].next;
    if (next < 0) return;
    const Merge m = find_merge(syms[pos].id, syms[next].id);
    if (m.rank >= 0) heap.push({m.rank, pos, syms[pos].id, syms[next].id, m.merged});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = syms[c.pos];
    if (left.id != c.left || left.next < 0 || syms[left.next].id != c.right) continue;  // stale
    const int32_t right = left.next;
    left.id = c.merged;
    left.next = syms[right].next;
    syms[right].id = -1;  // dead: no candidate names id -1
    if (left.next >= 0) syms[left.next].prev = c.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

}  // namespace mxs::text
