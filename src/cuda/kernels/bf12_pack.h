// Load-time bf12 packing on the device (layout: common/bf12.h), bit for bit the reference packer's output.
// Two passes over a bf16 matrix [n, k] already on the device: count each row's exceptions, then (with the rows'
// overflow lists placed by an exclusive scan on the host) write the four planes. A warp per row.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/device_arena.h"
#include "cuda/kernels/bf12_weights.h"

namespace mxs::cuda {

// counts[r] = exceptions of row r of w [n, k] bf16.
void bf12_count_exceptions(const void* w, int n, int k, uint32_t* counts, cudaStream_t stream);

// Writes out's planes for w [n, k]; exc_start[r] = first word of row r's overflow list (device, [n]).
void bf12_pack_rows(const void* w, int n, int k, const uint32_t* exc_start, const Bf12Weights& out,
                    cudaStream_t stream);

// Host side of the two passes for a list of matrices, so that the arena can be sized exactly: plan() counts
// (one synchronous copy per matrix), bytes() sums the planes, pack() carves each matrix out of `arena` and packs
// it. `scratch` needs max n u32 on the device.
// A matrix with a row of more than max_row_exceptions exceptions is not packed (its Bf12Weights stay empty, so the
// kernels read the bf16 weights): one lane corrects a row's exceptions one by one, so a row with hundreds of them (a
// huge outlier lifting the window of a row of small values) would stall its warp. Trained or random rows have a few
// at most (random 20b weights: 0.0016-0.0037% of the values).
class Bf12Packer {
 public:
  static constexpr uint32_t kDefaultMaxRowExceptions = 16;
  explicit Bf12Packer(uint32_t max_row_exceptions = kDefaultMaxRowExceptions) : max_row_exc_(max_row_exceptions) {}
  struct Matrix {
    const void* w;  // [n, k] bf16 on the device
    int n, k;
    std::string name;
    std::vector<uint32_t> exc_start;  // per row: its overflow list's first word
    uint32_t n_words = 0;             // words of overflow lists
    uint64_t n_exc = 0;               // exceptions
    uint32_t max_row_exc = 0;         // the most exceptions of one row
    bool packed = true;               // max_row_exc <= the packer's limit
  };
  void plan(const void* w, int n, int k, const std::string& name, uint32_t* scratch, cudaStream_t stream);
  size_t bytes() const;
  size_t exceptions() const;  // (of the packed matrices)
  size_t weights() const;     // (of the packed matrices)
  // The names of the matrices left unpacked, with their worst row's exception count.
  std::vector<std::string> unpacked() const;
  // Packed matrices in plan order (empty Bf12Weights for the ones left unpacked).
  std::vector<Bf12Weights> pack(DeviceArena& arena, uint32_t* scratch, cudaStream_t stream);

 private:
  uint32_t max_row_exc_;
  std::vector<Matrix> mats_;
};

}  // namespace mxs::cuda
