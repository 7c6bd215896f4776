#include "cuda/tensor_map.h"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include "common/error.h"
#include "cuda/cuda_check.h"

namespace mxs::cuda {
namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    MXS_CHECK(q == cudaDriverEntryPointSuccess && f != nullptr,
              "cuTensorMapEncodeTiled is not available from the CUDA driver (TMA needs driver >= 12.0)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// One cuTensorMapEncodeTiled call (no interleave, L2 promotion 256 B, zeros outside the tensor).
CUresult encode(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, const void* base, const cuuint64_t* dims,
                const cuuint64_t* strides, const cuuint32_t* box, CUtensorMapSwizzle swizzle) {
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  return encode_fn()(map, type, rank, const_cast<void*>(base), dims, strides, box, elem_strides,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

}  // namespace

CUtensorMap make_tensor_map_bf16_2d(const void* base, uint64_t rows, uint64_t cols, uint32_t box_rows,
                                    uint32_t box_cols, const char* what) {
  const cuuint64_t dims[2] = {cols, rows};
  const cuuint64_t strides[1] = {cols * 2};  // bytes between rows
  const cuuint32_t box[2] = {box_cols, box_rows};
  CUtensorMap map;
  const CUresult r =
      encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_128B);
  MXS_CHECK(r == CUDA_SUCCESS, strfmt("%s: cuTensorMapEncodeTiled failed (error %d) for a [%llu][%llu] bf16 matrix at "
                                      "%p, box %u x %u",
                                      what, int(r), (unsigned long long)rows, (unsigned long long)cols, base,
                                      box_rows, box_cols));
  return map;
}

CUtensorMap make_tensor_map_bytes_3d(const void* base, uint64_t mats, uint64_t rows, uint32_t row_bytes,
                                     uint32_t box_mats, const char* what) {
  MXS_CHECK(row_bytes % 16 == 0 && row_bytes >= 16 && row_bytes <= 2048 && box_mats >= 1 && box_mats <= 256,
            strfmt("%s: rows of %u bytes, boxes of %u (need 16..2048 bytes, a multiple of 16; 1..256)", what,
                   row_bytes, box_mats));
  // 8-byte elements: a 2048-byte row is 256 of them, the most one box dimension holds.
  const cuuint64_t dims[3] = {row_bytes / 8u, rows, mats};
  const cuuint64_t strides[2] = {row_bytes, uint64_t(row_bytes) * rows};  // bytes between rows, between mats
  const cuuint32_t box[3] = {row_bytes / 8u, 1, box_mats};
  CUtensorMap map;
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT64, 3, base, dims, strides, box, CU_TENSOR_MAP_SWIZZLE_NONE);
  MXS_CHECK(r == CUDA_SUCCESS, strfmt("%s: cuTensorMapEncodeTiled failed (error %d) for [%llu][%llu][%u bytes] at %p, "
                                      "box of %u",
                                      what, int(r), (unsigned long long)mats, (unsigned long long)rows, row_bytes,
                                      base, box_mats));
  return map;
}

}  // namespace mxs::cuda
