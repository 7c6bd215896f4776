// copy_sampled_tokens: one thread per handed-off row (token_handoff.h).
#include "cuda/token_handoff.h"

#include "cuda/cuda_check.h"

namespace mxs::cuda {

namespace {
__global__ void copy_sampled_tokens_kernel(int32_t* tokens, const SampleResultDev* results, const int32_t* pairs,
                                           int n, int vocab) {
  const int i = int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x);
  if (i >= n) return;
  const int32_t t = results[pairs[2 * i + 1]].token;
  tokens[pairs[2 * i]] = t >= 0 && t < vocab ? t : 0;
}
}  // namespace

void copy_sampled_tokens(int32_t* tokens, const SampleResultDev* results, const int32_t* pairs, int n, int vocab,
                         cudaStream_t stream) {
  if (n <= 0) return;
  copy_sampled_tokens_kernel<<<(n + 127) / 128, 128, 0, stream>>>(tokens, results, pairs, n, vocab);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
