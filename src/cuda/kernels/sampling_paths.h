// The two ways sample_tokens (sampling.cu) runs a step, each in its own file; see sampling.h.
#pragma once
#include <cuda_runtime.h>

#include "cuda/kernels/sampling.h"

namespace mxs::cuda::sampling_detail {

// sampling_prepare for every row: one CTA per row (sampling_prepare.cu). Any step.
void launch_sampling_prepare(const SamplingParamsDev& p, cudaStream_t stream);

// Whether the spread path can run the step: its workspace carved (SamplingParamsDev::spread) and vocab <=
// kSpreadMaxVocab (sampling_spread.cu).
bool spread_path_usable(const SamplingParamsDev& p);

// The spread path's kernels for every row (sampling_spread.cu).
void launch_sampling_spread(const SamplingParamsDev& p, cudaStream_t stream);

}  // namespace mxs::cuda::sampling_detail
