// bf16 GEMV kernels (see gemv_bf16.h). A warp owns 1-2 consecutive output rows, 8 warps per CTA; its weight
// loads are issued first, then the activation tile (<= 4 rows) is staged in shared memory as fp32. The weights may
// be the bf12 copy (common/bf12.h) where the caller passes one (w_bf12).
// The LM head can also fold a per-row argmax (value, lowest id) into its epilogue for greedy sampling.
#include "cuda/kernels/gemv_bf16.h"

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/last_cta.cuh"
#include "cuda/kernels/gemv_stream.cuh"
#include "cuda/kernels/rmsnorm_row.cuh"

namespace mxs::cuda {

MXS_CTA_TRACE_BINDER(gemv_bf16)
namespace {

constexpr int kWarps = 8;

enum class Epilogue { kBiasResidual, kStore };

// Rows per warp: 2 for K <= 2880; 1 for K = 4096 (two rows of 4096 would take 128 registers of weights and
// leave one CTA per SM).
template <int K>
constexpr int rows_per_warp() {
  return K > 2880 ? 1 : 2;
}

// The fused post-attention norm of the residual form (norm_weight set): every CTA of the grid calls it after
// its last store; the last one to arrive (done_counter) normalizes the p.n_rows updated rows, read through L2
// since other CTAs wrote them, and resets the counter.
__device__ __forceinline__ void post_norm_in_last_cta(const GemvBf16Params& p) {
  if (p.norm_weight == nullptr) return;
  if (!last_cta_arrive(p.done_counter, gridDim.x)) return;
  constexpr int PER_THREAD = (3072 + kNormThreads - 1) / kNormThreads;  // n_out <= 3072
  const bf16_t* y = static_cast<const bf16_t*>(p.y);
  for (int m = 0; m < p.n_rows; ++m) {
    float xv[PER_THREAD];
#pragma unroll
    for (int i = 0; i < PER_THREAD; ++i) {
      const int c = threadIdx.x + i * kNormThreads;
      xv[i] = c < p.n_out ? to_f32(__ldcg(y + size_t(m) * p.n_out + c)) : 0.f;
    }
    rmsnorm_row_write<PER_THREAD>(xv, static_cast<const bf16_t*>(p.norm_weight), p.n_out, p.eps,
                                  static_cast<bf16_t*>(p.norm_out) + size_t(m) * p.n_out);
  }
  if (threadIdx.x == 0) *p.done_counter = 0u;
}

// W: the weights' format (gemv_stream.cuh): Bf16Format, or Bf12Format for the packed LM head, whose vectors are
// decoded in registers and dotted in the same order (rows without exceptions give the bf16 kernel's bits); a row's
// exceptions are added by the lane that finishes it, from the staged activations, before the rounding.
template <int K, int MT, Epilogue EPI, typename W>
__global__ void __launch_bounds__(kWarps * 32) gemv_bf16_kernel(GemvBf16Params p, W wf) {
  CtaTrace trace;
  constexpr int NR = rows_per_warp<K>(), NV = K / 8, PER_LANE = (NV + 31) / 32;
  extern __shared__ float4 s_x[];
  __shared__ unsigned long long s_best[MT];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int r0 = (blockIdx.x * kWarps + warp) * NR;
  bf16_t* y = static_cast<bf16_t*>(p.y);
  // Rows past the end read the last row again (in bounds) and are not stored.
  size_t rows[NR];
#pragma unroll
  for (int j = 0; j < NR; ++j) rows[j] = size_t(min(r0 + j, p.n_out - 1));
  const bool active = r0 < p.n_out;
  // bf16: gemv_core.cuh's row registers and dot (its code, its registers); bf12: the format's vectors and decode.
  const bf16_t* wrows[NR];
  RowRegs<K, NR> wr;
  typename W::Vec wv[W::kCorrections ? NR : 1][PER_LANE];
  typename W::Hdr hdr[NR];
  if constexpr (!W::kCorrections)  // (from p.w, the same pointer: through wf.w ptxas took 174 registers instead of 120)
#pragma unroll
    for (int j = 0; j < NR; ++j) wrows[j] = static_cast<const bf16_t*>(p.w) + rows[j] * K;
  auto load = [&] {
    if constexpr (W::kCorrections) {
#pragma unroll
      for (int j = 0; j < NR; ++j) {
        hdr[j] = wf.header(rows[j]);
        wf.template load<PER_LANE, NV>(rows[j], 0, lane, wv[j]);
      }
    } else {
      load_rows<K, NR>(wrows, wr);
    }
  };
  if (active) load();  // in flight while the previous kernel drains and the activations are staged
  griddep_wait();
  trace.waited();
  griddep_launch_dependents();
  for (int m0 = 0; m0 < p.n_rows; m0 += MT) {
    if (m0 > 0 && active) load();
    __syncthreads();
    stage_rows_f32<K, MT>(s_x, static_cast<const bf16_t*>(p.a), p.n_rows - m0,
                          [&](int m) { return p.src_rows ? p.src_rows[m0 + m] : m0 + m; });
    if (EPI == Epilogue::kStore && threadIdx.x < MT) s_best[threadIdx.x] = 0ull;
    __syncthreads();
    if (active) {
      float acc[NR][MT];
      if constexpr (W::kCorrections) {  // dot_rows' order, each vector decoded as it is used
        dot_vecs<K, MT, NR>(
            [&](int j, int i) {
              const bool in = NV % 32 == 0 || lane + 32 * i < NV;  // lanes past the end dot zero weights
              return in ? wf.decode(wv[j][i], hdr[j]) : make_uint4(0, 0, 0, 0);
            },
            s_x, acc);
      } else {
        dot_rows<K, MT, NR>(wr, s_x, acc);
      }
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int r = 0; r < NR; ++r) {
          const int row = r0 + r;
          if (lane != m * NR + r || m0 + m >= p.n_rows || row >= p.n_out) continue;
          const float dot =
              wf.correct(hdr[r], acc[r][m], [&](uint32_t col) { return staged_element<K>(s_x, m, col); });
          bf16_t* dst = y + size_t(m0 + m) * p.n_out + row;
          if constexpr (EPI == Epilogue::kBiasResidual) {
            const float proj = bf(dot + to_f32(static_cast<const bf16_t*>(p.bias)[row]));
            *dst = to_bf16(to_f32(*dst) + proj);
          } else {
            const bf16_t v = to_bf16(dot);
            *dst = v;
            if (p.row_argmax) atomicMax(&s_best[m], argmax_key(to_f32(v), row));
          }
        }
    }
    if (EPI == Epilogue::kStore && p.row_argmax) {
      __syncthreads();
      if (threadIdx.x < MT && m0 + int(threadIdx.x) < p.n_rows && s_best[threadIdx.x] != 0ull)
        atomicMax(&p.row_argmax[m0 + threadIdx.x], s_best[threadIdx.x]);
    }
  }
  if constexpr (EPI == Epilogue::kBiasResidual) post_norm_in_last_cta(p);
  trace.end(kTraceLmHead);
}

// o_proj for 1-4 rows on the streaming GEMV: groups of R output rows; the optional post-attention norm runs in
// the last CTA to finish (as in gemv_bf16_kernel).
// MIN_CTAS: gemv_stream.cuh's EpiMinCtas (3 for the one-row bf12 launch: its 80 registers are what ptxas picks
// anyway; the bound keeps CTA-trace builds, whose hooks add registers, at the same 3 CTAs per SM).
template <int K, int R = 2, int MIN_CTAS = 0>
struct ResidualEpi {
  static constexpr int kMinCtasPerSm = MIN_CTAS;
  GemvBf16Params p;
  __device__ size_t row_index(int g, int r) const { return size_t(min(R * g + r, p.n_out - 1)); }
  struct Pre {
    float bias[R], x[R];
  };
  __device__ Pre prefetch(int g, int m) const {
    Pre r;
    const bf16_t* y = static_cast<const bf16_t*>(p.y) + size_t(m) * p.n_out;
#pragma unroll
    for (int k = 0; k < R; ++k) {
      const int row = min(R * g + k, p.n_out - 1);
      r.bias[k] = to_f32(static_cast<const bf16_t*>(p.bias)[row]);
      r.x[k] = to_f32(y[row]);
    }
    return r;
  }
  __device__ void finish(int g, int m, const float (&v)[R], const Pre& pre) const {
    bf16_t* y = static_cast<bf16_t*>(p.y) + size_t(m) * p.n_out;
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int row = R * g + r;
      if (row >= p.n_out) continue;
      y[row] = to_bf16(pre.x[r] + bf(v[r] + pre.bias[r]));
    }
  }
  __device__ void after(int) const { post_norm_in_last_cta(p); }
};

template <int K, typename W>
void launch_stream_residual_w(const GemvBf16Params& p, const W& wf, cudaStream_t stream) {
  const int groups = (p.n_out + 1) / 2;
  const bf16_t* a = static_cast<const bf16_t*>(p.a);
  switch (p.n_rows) {
    case 1: return launch_gemv_stream<K, 1, 2>(StreamRows<K, 1>{a}, 1, groups, ResidualEpi<K>{p}, wf, stream);
    case 2: return launch_gemv_stream<K, 2, 2>(StreamRows<K, 2>{a}, 2, groups, ResidualEpi<K>{p}, wf, stream);
    default: return launch_gemv_stream<K, 4, 2>(StreamRows<K, 4>{a}, p.n_rows, groups, ResidualEpi<K>{p}, wf, stream);
  }
}

// The packed weights at 1-2 rows (the activations staged for the exceptions take K * 4 bytes of shared memory per
// row, 32 KB at 2). Groups of 4 rows instead of 2 (128 registers, half the CTAs per SM) were slower: H100, 20b
// batch 1, 1.727-1.749 vs 1.700-1.721 ms per step (session 18).
template <int K>
void launch_stream_residual(const GemvBf16Params& p, cudaStream_t stream) {
  const StreamRows<K, 1> a1{static_cast<const bf16_t*>(p.a)};
  if (p.w_bf12.bytes != nullptr && p.n_rows == 1)
    return launch_gemv_stream<K, 1, 2>(a1, 1, (p.n_out + 1) / 2, ResidualEpi<K, 2, 3>{p}, Bf12Format<K>{p.w_bf12},
                                       stream);
  if (p.w_bf12.bytes != nullptr && p.n_rows == 2)
    return launch_gemv_stream<K, 2, 2>(StreamRows<K, 2>{static_cast<const bf16_t*>(p.a)}, 2, (p.n_out + 1) / 2,
                                       ResidualEpi<K>{p}, Bf12Format<K>{p.w_bf12}, stream);
  launch_stream_residual_w<K>(p, Bf16Format<K>{static_cast<const bf16_t*>(p.w)}, stream);
}

template <int K, int MT, Epilogue EPI, typename W>
void launch(const GemvBf16Params& p, const W& wf, cudaStream_t stream) {
  constexpr int smem = staged_bytes<K, MT>();
  static const bool smem_ok = (allow_smem(gemv_bf16_kernel<K, MT, EPI, W>, smem), true);
  (void)smem_ok;
  constexpr int rows_per_cta = kWarps * rows_per_warp<K>();
  const int grid = (p.n_out + rows_per_cta - 1) / rows_per_cta;
  launch_pdl(gemv_bf16_kernel<K, MT, EPI, W>, dim3(grid), dim3(kWarps * 32), smem, stream, p, wf);
  CUDA_CHECK_LAUNCH();
}

template <int K, Epilogue EPI, typename W>
void dispatch_mt(const GemvBf16Params& p, const W& wf, cudaStream_t stream) {
  if (p.n_rows == 1) return launch<K, 1, EPI>(p, wf, stream);
  if (p.n_rows == 2) return launch<K, 2, EPI>(p, wf, stream);
  return launch<K, 4, EPI>(p, wf, stream);
}

// The weights as given: the bf12 copy when there is one (the LM head), else the bf16 matrix.
template <int K, Epilogue EPI>
void dispatch_format(const GemvBf16Params& p, cudaStream_t stream) {
  if (p.w_bf12.bytes != nullptr) return dispatch_mt<K, EPI>(p, Bf12Format<K>{p.w_bf12}, stream);
  dispatch_mt<K, EPI>(p, Bf16Format<K>{static_cast<const bf16_t*>(p.w)}, stream);
}

void check(const GemvBf16Params& p, const char* name) {
  MXS_CHECK(p.n_rows >= 1 && p.n_out >= 1, strfmt("%s: n_rows = %d, n_out = %d must be >= 1", name, p.n_rows, p.n_out));
}

}  // namespace

// o_proj: k = n_heads * 64 (4096 for 20b, 1024 for tiny).
void gemv_bf16_residual(const GemvBf16Params& p, cudaStream_t stream) {
  check(p, "gemv_bf16_residual");
  MXS_CHECK(p.norm_weight == nullptr || (p.n_rows <= 4 && p.n_out <= 3072 && p.norm_out && p.done_counter),
            "gemv_bf16_residual: the fused norm needs n_rows <= 4, n_out <= 3072, norm_out and done_counter");
  MXS_CHECK(p.src_rows == nullptr, "gemv_bf16_residual: src_rows is not supported");
  if (p.n_rows <= 4 && p.k == 4096) return launch_stream_residual<4096>(p, stream);
  switch (p.k) {
    case 4096: return dispatch_mt<4096, Epilogue::kBiasResidual>(p, Bf16Format<4096>{static_cast<const bf16_t*>(p.w)}, stream);
    case 1024: return dispatch_mt<1024, Epilogue::kBiasResidual>(p, Bf16Format<1024>{static_cast<const bf16_t*>(p.w)}, stream);
    default: throw Error(strfmt("gemv_bf16_residual: k = %d is not supported (supported: 4096, 1024)", p.k));
  }
}

// LM head: k = hidden (2880 for 20b, 64 for tiny).
void gemv_bf16_lm_head(const GemvBf16Params& p, cudaStream_t stream) {
  check(p, "gemv_bf16_lm_head");
  switch (p.k) {
    case 2880: return dispatch_format<2880, Epilogue::kStore>(p, stream);
    case 64: return dispatch_format<64, Epilogue::kStore>(p, stream);
    default: throw Error(strfmt("gemv_bf16_lm_head: k = %d is not supported (supported: 2880, 64)", p.k));
  }
}

}  // namespace mxs::cuda
