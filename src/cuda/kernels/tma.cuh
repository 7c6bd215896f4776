// Tensor-memory-accelerator (TMA) loads on sm_90: 2-D tiles of a row-major matrix described by a CUtensorMap
// (built on the host: tensor_map.h), copied global -> shared by the copy engine and completed on an mbarrier
// (bulk_copy.cuh). One instruction moves a whole box; the swizzle named in the map is applied to the shared
// addresses, so a box written at a 1024-byte aligned address lands in the layout b_desc() (wgmma.cuh) reads.
#pragma once
#include <cstdint>

#include <cuda.h>  // CUtensorMap

#include "cuda/kernels/bulk_copy.cuh"

namespace mxs::cuda {

// Box of the map at element coordinates (x = inner / column, y = row) -> shared dst; completes its bytes on bar
// (elements outside the matrix arrive as zeros and still count).
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int x, int y, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::
          "r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(smem_u32(bar))
      : "memory");
}

// Box at (x, y, z) of a 3-D map (make_tensor_map_bytes_3d) into dst, completing on bar.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int x, int y, int z, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], "
      "[%5];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(smem_u32(bar))
      : "memory");
}

}  // namespace mxs::cuda
