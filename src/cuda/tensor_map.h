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

// Map of opaque bytes laid out [mats][rows][row_bytes] (row_bytes a multiple of 16, at most 2048; rows contiguous,
// mats contiguous), in boxes of one row x box_mats mats: a box lands in shared memory as box_mats rows of row_bytes
// back to back (no swizzle). Reads past `mats` return zeros. Used for the MXFP4 grouped GEMM's packed weights,
// where one k-tile of consecutive 64-row groups is one box. Throws mxs::Error naming `what`.
CUtensorMap make_tensor_map_bytes_3d(const void* base, uint64_t mats, uint64_t rows, uint32_t row_bytes,
                                     uint32_t box_mats, const char* what);

}  // namespace mxs::cuda
