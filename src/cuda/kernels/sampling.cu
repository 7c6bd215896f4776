// sample_tokens (sampling.h): the spread path (sampling_spread.cu) for any step with a row that is not plain greedy,
// else (and as the fallback) sampling_prepare (sampling_prepare.cu); the RNG's device copy for its test.
#include "cuda/kernels/sampling.h"

#include <cstdlib>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/sampling_device.cuh"
#include "cuda/kernels/sampling_paths.h"
#include "engine/sampling_params.h"

namespace mxs::cuda {
namespace {

__global__ void sample_uniform_kernel(const uint64_t* seeds, const uint64_t* steps, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = sampling_detail::sample_uniform_dev(seeds[i], steps[i]);
}

}  // namespace

void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream) {
  MXS_CHECK(p.n_seqs >= 1 && p.vocab >= 1, "sample_tokens: n_seqs and vocab must be >= 1");
  MXS_CHECK(p.vocab <= kTopPMaxVocab || !(p.spread_selects & 2),
            "sample_tokens: top-p's units need a vocabulary of at most 2^20 ids");
  static const bool no_spread = std::getenv("MXS_NO_SPREAD_SAMPLING") != nullptr;  // A/B
  if (p.spread_wanted && !no_spread && sampling_detail::spread_path_usable(p))
    sampling_detail::launch_sampling_spread(p, stream);
  else
    sampling_detail::launch_sampling_prepare(p, stream);
}

void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream) {
  sample_uniform_kernel<<<(n + 255) / 256, 256, 0, stream>>>(seeds, steps, out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
