// Async scheduling's device-side token handoff (docs/ARCHITECTURE.md "Async scheduling"): the input token of a
// decode row whose token is "the sample of the previous step" (SequenceStep::input_from_last_sample) is copied
// from that step's sampling results, still on the device, into the step's input-token buffer, before the
// forward pass (or its CUDA graph) reads it. Stream-ordered: the previous step's sampling has written the
// results, and this step's sampling overwrites them only after this copy.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

#include "cuda/kernels/sampling.h"

namespace mxs::cuda {

// pairs: [n][2] int32 (dst, src): tokens[dst] = results[src].token, or 0 when that token is outside
// [0, vocab) (a row whose sampling failed; the engine discards what follows from it).
void copy_sampled_tokens(int32_t* tokens, const SampleResultDev* results, const int32_t* pairs, int n, int vocab,
                         cudaStream_t stream);

}  // namespace mxs::cuda
