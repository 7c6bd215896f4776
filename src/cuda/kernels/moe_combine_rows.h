// moe_combine for many tokens (prefill chunks): the same arithmetic as moe_combine (moe_gemv_mxfp4.h, spec
// §3.6): x = bf(x + sum_e yw) with a bf16 rounding after each add in ascending expert id, then, if
// p.next_norm is set, xn_out = rmsnorm(x) with the next layer's (or the final) norm weight.
// moe_combine spreads each token over 12 CTAs with a thread per column (2-byte loads) and a last-CTA norm:
// right when a step has a few tokens (latency), but at 2,048 tokens it moved only ~700 GB/s (ncu, H200:
// 104 us per layer). Here one CTA per token, each thread 4 adjacent columns per 8-byte load (3 groups per
// thread at hidden 2880), the row held in registers for the norm: no partials, no counters, no re-read of x.
// The norm's fp32 sum of squares is added in another order than moe_combine's (bf16 xn may differ by one
// ulp); x is bit-identical.
#pragma once
#include <cuda_runtime.h>

#include "cuda/kernels/moe_gemv_mxfp4.h"

namespace mxs::cuda {

// Uses p.x, p.yw, p.topk_idx, p.next_norm (optional), p.xn_out, p.n_tokens, p.hidden (% 4 == 0, <= 4096),
// p.top_k (<= 8), p.eps.
void moe_combine_rows(const MoeGemvParams& p, cudaStream_t stream);

}  // namespace mxs::cuda
