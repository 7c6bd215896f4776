// RMSNorm kernels (see rmsnorm.h): one CTA of 256 threads per row.
#include "cuda/kernels/rmsnorm.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {
namespace {

template <int PER_THREAD, bool GATHER>
__global__ void __launch_bounds__(kNormThreads) rmsnorm_kernel(RmsNormParams p) {
  griddep_wait();
  griddep_launch_dependents();
  const int row = blockIdx.x;
  const bf16_t* src = GATHER ? static_cast<const bf16_t*>(p.embed) + size_t(p.tokens[row]) * p.dim
                             : static_cast<const bf16_t*>(p.x) + size_t(row) * p.dim;
  float xv[PER_THREAD];
#pragma unroll
  for (int i = 0; i < PER_THREAD; ++i) {
    const int c = threadIdx.x + i * kNormThreads;
    xv[i] = c < p.dim ? to_f32(src[c]) : 0.f;
    if (GATHER && c < p.dim) static_cast<bf16_t*>(p.x_out)[size_t(row) * p.dim + c] = src[c];
  }
  rmsnorm_row_write<PER_THREAD>(xv, static_cast<const bf16_t*>(p.weight), p.dim, p.eps,
                                static_cast<bf16_t*>(p.out) + size_t(row) * p.dim);
}

template <bool GATHER>
void dispatch(const RmsNormParams& p, cudaStream_t stream, const char* name) {
  MXS_CHECK(p.n_rows >= 1, strfmt("%s: n_rows must be >= 1", name));
  switch (p.dim) {
    case 2880: launch_pdl(rmsnorm_kernel<(2880 + kNormThreads - 1) / kNormThreads, GATHER>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    case 64: launch_pdl(rmsnorm_kernel<1, GATHER>, dim3(p.n_rows), dim3(kNormThreads), 0, stream, p); break;
    default: throw Error(strfmt("%s: dim = %d is not supported (supported: 2880, 64)", name, p.dim));
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void rmsnorm(const RmsNormParams& p, cudaStream_t stream) { dispatch<false>(p, stream, "rmsnorm"); }
void embed_rmsnorm(const RmsNormParams& p, cudaStream_t stream) { dispatch<true>(p, stream, "embed_rmsnorm"); }

}  // namespace mxs::cuda
