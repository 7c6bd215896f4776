// Byte-level BPE model over raw bytes: vocab (token bytes <-> id) and merges ((left id, right id) -> rank,
// merged id), with HF tokenizers' BPE semantics (ignore_merges: a piece that is itself a token wins;
// otherwise merge the adjacent pair of lowest merge rank, leftmost first, until none applies).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mxs::text {

class BpeModel {
 public:
  // vocab[id] = raw bytes of token id (ids dense from 0). Every single byte must be a token.
  // Throws mxs::Error naming `source` on duplicates or a missing byte token.
  BpeModel(std::vector<std::string> vocab, std::string_view source);

  // merges[rank] = (left id, right id); left+right bytes must be a token. Throws mxs::Error otherwise.
  void set_merges(const std::vector<std::pair<int32_t, int32_t>>& merges, std::string_view source);

  int32_t find(std::string_view bytes) const;  // id of the token with exactly these bytes, or -1
  int32_t size() const { return static_cast<int32_t>(offsets_.size()) - 1; }
  size_t n_merges() const { return n_merges_; }
  std::string_view token_bytes(int32_t id) const {
    return {arena_.data() + offsets_[id], size_t(offsets_[id + 1] - offsets_[id])};
  }

  // Appends the ids of one pre-tokenized piece to `out`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;

  // The merge loop alone (no whole-piece lookup), exposed so tests can compare its two implementations.
  void merge_short(std::string_view piece, std::vector<int32_t>& out) const;  // O(n^2), n <= kShortPiece
  void merge_long(std::string_view piece, std::vector<int32_t>& out) const;   // O(n log n), any n
  static constexpr size_t kShortPiece = 64;

 private:
  struct MergeSlot {
    uint64_t key;    // (left << 32) | right; kEmptyKey when unused
    int32_t rank;    // index in the merges list: lower merges first
    int32_t merged;  // id of left+right
  };
  static constexpr uint64_t kEmptyKey = ~uint64_t{0};
  struct Merge {
    int32_t rank = -1;  // -1: no merge for this pair
    int32_t merged = -1;
  };
  Merge find_merge(int32_t left, int32_t right) const;

  std::string arena_;             // all token bytes, concatenated in id order
  std::vector<uint32_t> offsets_;  // [n_tokens + 1]: token id's bytes are arena_[offsets_[id], offsets_[id+1])
  // Open-addressing table bytes -> id: slot = (hash >> 32) << 32 | (id + 1); 0 = empty.
  std::vector<uint64_t> vocab_slots_;
  uint64_t vocab_mask_ = 0;
  std::vector<MergeSlot> merge_slots_;  // open addressing, power-of-two size
  uint64_t merge_mask_ = 0;
  size_t n_merges_ = 0;
  int32_t byte_ids_[256];  // id of each single-byte token
};

}  // namespace mxs::text
