// Prefill attention on wgmma (sm_90a): attention_prefill's contract (attention_prefill.h) for query tiles of 16
// or 32 tokens; attention_prefill() dispatches here (AttentionPrefillParams::impl). Design in attention_prefill_wgmma.cu
// and docs/KERNELS-attention-prefill.md.
#pragma once
#include <cuda_runtime.h>

#include "cuda/kernels/attention_prefill.h"

namespace mxs::cuda {

// Grid (n_kv_heads, n_tiles), PDL launch. Requires tile_q 16 or 32 (checked) and the requirements of
// attention_prefill (checked there).
void attention_prefill_wgmma(const AttentionPrefillParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
