// Host side of the TMA loads (kernels/tma.cuh): tensor maps for 2-D row-major bf16 matrices, encoded through the
// driver entry point that the runtime hands out (no link against libcuda).
#pragma once
#include <cstdint>

#include <cuda.h>

namespace mxs::cuda {

// Map of a [rows][cols] bf16 matrix (row stride cols elements, 16-byte aligned base and stride) in boxes of
// box_rows x box_cols (box_cols * 2 <= 128 bytes for the 128-byte swizzle), 128-byte swizzled in shared memory;
// reads outside the matrix return zeros. Throws mxs::Error naming `what` when the driver rejects it.
CUtensorMap make_tensor_map_bf16_2d(const void* base, uint64_t rows, uint64_t cols, uint32_t box_rows,
                                    uint32_t box_cols, const char* what);

}  // namespace mxs::cuda
