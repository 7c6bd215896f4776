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
class Bf12Packer {
 public:
  struct Matrix {
    const void* w;  // [n, k] bf16 on the device
    int n, k;
    std::string name;
    std::vector<uint32_t> exc_start;  // per row: its overflow list's first word
    uint32_t n_words = 0;             // words of overflow lists
    uint64_t n_exc = 0;               // exceptions
  };
  void plan(const void* w, int n, int k, const std::string& name, uint32_t* scratch, cudaStream_t stream);
  size_t bytes() const;
  size_t exceptions() const;
  size_t weights() const;
  // Packed matrices in plan order.
  std::vector<Bf12Weights> pack(DeviceArena& arena, uint32_t* scratch, cudaStream_t stream);

 private:
  std::vector<Matrix> mats_;
};

}  // namespace mxs::cuda
