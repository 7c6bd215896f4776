// moe_combine_rows (see moe_combine_rows.h).
#include "cuda/kernels/moe_combine_rows.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {
namespace {

// Grid (n_tokens), kNormThreads threads; thread i owns column groups g = i + j * kNormThreads (j < PER) of 4
// bf16 columns [4 g, 4 g + 4) (one uint2: .x = columns 4g, 4g+1 in its low / high half, .y = 4g+2, 4g+3).
template <int PER>
__global__ void __launch_bounds__(kNormThreads) moe_combine_rows_kernel(MoeGemvParams p) {
  const int t = blockIdx.x, H = p.hidden, n_groups = H / 4;
  const bf16_t* norm_w = static_cast<const bf16_t*>(p.next_norm);
  uint2 wn[PER];  // constant data: the norm weights load before the wait
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int g = threadIdx.x + j * kNormThreads;
    wn[j] = norm_w && g < n_groups ? reinterpret_cast<const uint2*>(norm_w)[g] : make_uint2(0u, 0u);
  }
  griddep_wait();
  griddep_launch_dependents();
  int order[kCombineMaxTopK];  // slots in ascending expert id
  combine_slot_order(p.topk_idx + t * p.top_k, p.top_k, order);
  uint2* x = reinterpret_cast<uint2*>(static_cast<bf16_t*>(p.x) + size_t(t) * H);
  const uint2* yw = reinterpret_cast<const uint2*>(p.yw);
  float xv[PER][4];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < PER; ++j) {
    const int g = threadIdx.x + j * kNormThreads;
#pragma unroll
    for (int c = 0; c < 4; ++c) xv[j][c] = 0.f;
    if (g >= n_groups) continue;
    uint2 y[kCombineMaxTopK];
#pragma unroll
    for (int s = 0; s < kCombineMaxTopK; ++s)  // all loads first, then the ordered chains
      y[s] = s < p.top_k ? yw[(size_t(t) * p.top_k + order[s]) * n_groups + g] : make_uint2(0u, 0u);
    const uint2 xr = x[g];
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int s = 0; s < kCombineMaxTopK; ++s)
      if (s < p.top_k) {
        acc[0] = bf(acc[0] + lo_f32(y[s].x)), acc[1] = bf(acc[1] + hi_f32(y[s].x));
        acc[2] = bf(acc[2] + lo_f32(y[s].y)), acc[3] = bf(acc[3] + hi_f32(y[s].y));
      }
    xv[j][0] = bf(lo_f32(xr.x) + acc[0]), xv[j][1] = bf(hi_f32(xr.x) + acc[1]);
    xv[j][2] = bf(lo_f32(xr.y) + acc[2]), xv[j][3] = bf(hi_f32(xr.y) + acc[3]);
    store_group4_sumsq(x, g, xv[j], ss);
  }
  if (!norm_w) return;
  rmsnorm_groups4_write<PER>(xv, wn, ss, H, p.eps, n_groups,
                             reinterpret_cast<uint2*>(static_cast<bf16_t*>(p.xn_out) + size_t(t) * H));
}

template <int PER>
void launch(const MoeGemvParams& p, cudaStream_t stream) {
  launch_pdl(moe_combine_rows_kernel<PER>, dim3(p.n_tokens), dim3(kNormThreads), 0, stream, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void moe_combine_rows(const MoeGemvParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1 && p.top_k >= 1 && p.top_k <= kCombineMaxTopK,
            "moe_combine_rows: n_tokens >= 1 and 1 <= top_k <= 8 are required");
  MXS_CHECK(p.hidden >= 4 && p.hidden % 4 == 0 && p.hidden <= 4 * 4 * kNormThreads,
            strfmt("moe_combine_rows: hidden = %d is not supported (a multiple of 4, <= %d)", p.hidden, 16 * kNormThreads));
  const int per = (p.hidden / 4 + kNormThreads - 1) / kNormThreads;
  switch (per) {
    case 1: return launch<1>(p, stream);
    case 2: return launch<2>(p, stream);
    case 3: return launch<3>(p, stream);
    default: return launch<4>(p, stream);
  }
}

}  // namespace mxs::cuda
