// Fused q/k/v GEMV + bias + YaRN RoPE + KV write. A warp owns the RoPE pair of rows (d, d + 32) of one head,
// so the rotation happens in registers right after the dot products; 8 warps = 8 consecutive pairs.
#include "cuda/kernels/qkv_rope.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/pdl.cuh"
#include "cuda/kernels/gemv_core.cuh"
#include "cuda/kernels/gemv_stream.cuh"
#include "cuda/kernels/moe_combine.cuh"
#include "cuda/kernels/qkv_rope_epilogue.cuh"

namespace mxs::cuda {

MXS_CTA_TRACE_BINDER(qkv_rope)
namespace {

constexpr int kHeadDim = 64;
constexpr int kWarps = 8;

template <int K, int MT>
__global__ void __launch_bounds__(kWarps * 32) qkv_rope_kernel(QkvRopeParams p) {
  extern __shared__ float4 s_x[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int pair = blockIdx.x * kWarps + warp;  // global pair index over (n_heads + 2 n_kv) * 32
  const int n_pairs = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  const int head = pair / (kHeadDim / 2), d = pair % (kHeadDim / 2);
  const bf16_t* w = static_cast<const bf16_t*>(p.w_qkv);
  const int row0 = head * kHeadDim + d, row1 = row0 + kHeadDim / 2;
  const bf16_t* rows[2] = {w + size_t(min(row0, n_pairs * 2 - 1)) * K, w + size_t(min(row1, n_pairs * 2 - 1)) * K};
  const bool active = pair < n_pairs;

  RowRegs<K, 2> wr;
  if (active) load_rows<K, 2>(rows, wr);  // in flight while the previous kernel drains and xn is staged
  griddep_wait();
  griddep_launch_dependents();
  for (int m0 = 0; m0 < p.n_tokens; m0 += MT) {
    if (m0 > 0 && active) load_rows<K, 2>(rows, wr);
    __syncthreads();
    stage_rows_f32<K, MT>(s_x, static_cast<const bf16_t*>(p.xn), p.n_tokens - m0, [&](int m) { return m0 + m; });
    __syncthreads();
    if (!active) continue;
    float acc[2][MT];
    dot_rows<K, MT, 2>(wr, s_x, acc);
    // Lane m finishes token m0 + m (MT <= 32).
#pragma unroll
    for (int m = 0; m < MT; ++m)
      if (lane == m && m0 + m < p.n_tokens) qkv_rope_store_pair(p, m0 + m, head, d, acc[0][m], acc[1][m]);
  }
}

// The groups of both GEMV kernels: group g = RoPE pair (head, d), rows head * 64 + d and + 32.
struct QkvEpiBase {
  QkvRopeParams p;
  int k;
  __device__ size_t row_index(int g, int r) const {
    const int head = g / (kHeadDim / 2), d = g % (kHeadDim / 2);
    return size_t(head * kHeadDim + d + r * (kHeadDim / 2));
  }
  __device__ void after(int) const {}
};

// Two tokens on gemv_stream_kernel, whose thread m (in warp 0) finishes token m of every group. The token's
// position and KV-cache block are loaded once, before the wait (Tok: step inputs), and a group's biases and inverse
// frequency one group ahead (Pre: constants), so a finish is arithmetic and two stores. Before (session 26), every
// finish loaded the position and then the block table: a chain of L2 round trips in warp 0 per group that held the
// CTA at the next group's barrier (H200, 20b batch 2: 2.114 -> 2.057 graph ms per step, docs/PERF.md session 26).
// (Earlier tries moved the same chain to the top of the group, sessions 13 and 22: slower; it still stalled warp 0.)
// Two tokens only: at 4 the token state took the StreamRows instantiation from 128 to 145-147 registers, one CTA per
// SM where 128 give two (135 registers ran a 20b step in 3.83 ms vs 3.52: session 23, H100), and under a bound of
// two CTAs it ran slower (session 26), so 3-4 tokens keep QkvLoadEpi below.
struct QkvStreamEpi : QkvEpiBase {
  struct Tok {
    int pos, block;  // block: the KV-cache block of pos (used by k / v groups)
  };
  __device__ Tok token(int m) const {
    Tok t;
    t.pos = p.meta.positions[m];
    t.block = qkv_rope_kv_block(p, m, t.pos);
    return t;
  }
  struct Pre {
    uint32_t bias;   // the two rows' biases, bf16x2 (row d low)
    float inv_freq;  // p.inv_freq[d]
  };
  __device__ Pre prefetch(int g, int, const Tok&) const {
    const int head = g / (kHeadDim / 2), d = g % (kHeadDim / 2), row0 = head * kHeadDim + d;
    const uint16_t* bias = static_cast<const uint16_t*>(p.b_qkv);
    return Pre{uint32_t(bias[row0]) | uint32_t(bias[row0 + kHeadDim / 2]) << 16, p.inv_freq[d]};
  }
  __device__ void finish(int g, int m, const float (&v)[2], const Pre& pre, const Tok& tok) const {
    const int head = g / (kHeadDim / 2), d = g % (kHeadDim / 2);
    const bool rotate = qkv_rope_rotates(p, head);
    QkvPairPrep r;
    r.bias = pre.bias;
    r.c = r.s = 0.f;
    if (rotate) qkv_rope_factors_of(p, tok.pos, pre.inv_freq, r.c, r.s);
    r.dst = qkv_rope_pair_dst_at(p, m, tok.pos, tok.block, head, d);
    qkv_rope_pair_store(r, rotate, v[0], v[1]);
  }
};

// 3-4 tokens on gemv_stream_kernel: every finish loads its inputs (qkv_rope_store_pair). (A kMinCtasPerSm of 2
// is not the same as ptxas's 128 registers: the CombineNormRows instantiation spills under it.)
struct QkvLoadEpi : QkvEpiBase {
  struct Pre {};
  __device__ Pre prefetch(int, int) const { return {}; }
  __device__ void finish(int g, int m, const float (&v)[2], const Pre&) const {
    qkv_rope_store_pair(p, m, g / (kHeadDim / 2), g % (kHeadDim / 2), v[0], v[1]);
  }
};

// One token on gemv_warp_kernel: the same groups, but every load of the epilogue (position, biases, RoPE factors,
// the KV block) is done by prefetch, at the top of the group and for a warp's first group before
// griddepcontrol.wait (step inputs and constants only), so the finish after the dot is arithmetic and two stores:
// the last group's finish is the kernel's tail.
struct QkvWarpEpi : QkvEpiBase {
  using Pre = QkvPairPrep;
  __device__ Pre prefetch(int g, int m) const {
    return qkv_rope_pair_prep(p, m, g / (kHeadDim / 2), g % (kHeadDim / 2));
  }
  __device__ void finish(int g, int, const float (&v)[2], const Pre& pre) const {
    qkv_rope_pair_store(pre, qkv_rope_rotates(p, g / (kHeadDim / 2)), v[0], v[1]);
  }
};

// The fused prologue (QkvRopeParams::moe_yw): each lane combines its slice of every token's row in registers
// (x_mid + the routed experts' outputs, moe_combine's chain), the 8 warps' sums of squares meet in shared
// memory in warp order (every CTA adds them in the same order, so all CTAs normalize identically), and the
// normed row replaces the loaded xn.
// Only yw is the predecessor's (moe_gemv down) output: the token's expert ids (the router's, three launches
// back), x_mid (o_proj's, four back) and the norm weight are loaded before griddep_wait (pdl.cuh's invariant),
// so the wait is followed by one round trip of loads (the top_k yw rows at addresses already known) instead of
// three dependent ones (ids -> yw -> norm weight). H100, 3 interleaved runs of `bench decode --batch 1`: 20b
// 1.926-1.930 vs 1.949-1.958 ms per step, 120b 2.688-2.703 vs 2.723-2.733 (session 13).
// With `tokens` set (the first layer, QkvRopeParams::embed) x_mid is the embedding table: token m's row is
// x_mid + tokens[m] * K, and top_k is 0 (the row passes through bf(x + 0) unchanged).
template <int K, int MT>
struct CombineNormRows {
  using S = StreamShape<K>;
  const bf16_t* x_mid;
  const bf16_t* yw;
  const int32_t* topk_idx;
  int top_k;
  const bf16_t* norm_w;
  bf16_t* x_out;
  float eps;
  const int32_t* tokens = nullptr;
  // x_mid ahead too at 1-2 tokens, where the runner fuses the combine. At 3-4 tokens it loads after the wait: that
  // variant has 150 registers (164 with x_mid ahead), one CTA per SM where it had two at 128; the runner does not
  // launch it (it fuses at <= 2 tokens), only the kernel test does.
  static constexpr bool kEarlyX = MT <= 2;
  __device__ const bf16_t* mid_row(int m) const {  // token m's row of x_mid (tokens: a step input, pre-wait)
    return tokens ? x_mid + size_t(__ldg(tokens + m)) * K : x_mid + size_t(m) * K;
  }
  struct Pre {
    uint4 xm[kEarlyX ? MT : 1][S::PER_LANE];  // this lane's vectors of x_mid (token m)
    uint4 nw[S::PER_LANE];      // and of the norm weight
    uint32_t order[MT];         // slot of token m's s-th smallest expert id in bits 3 s .. 3 s + 2
  };
  __device__ Pre before_wait(int n_x) const {
    Pre pre;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      int ids[kCombineMaxTopK], order[kCombineMaxTopK];
#pragma unroll
      for (int s = 0; s < kCombineMaxTopK; ++s) ids[s] = m < n_x && s < top_k ? __ldcg(topk_idx + m * top_k + s) : 0;
      combine_slot_order_ids(ids, top_k, order);
      pre.order[m] = 0;
#pragma unroll
      for (int s = 0; s < kCombineMaxTopK; ++s) pre.order[m] |= uint32_t(order[s]) << (3 * s);
    }
    const bf16_t* rows[kEarlyX ? MT : 1];
    if constexpr (kEarlyX)
#pragma unroll
      for (int m = 0; m < MT; ++m) rows[m] = m < n_x ? mid_row(m) : x_mid;
#pragma unroll
    for (int i = 0; i < S::PER_LANE; ++i) {
      const int v = lane + 32 * i;
      const bool in = S::NV % 32 == 0 || v < S::NV;
      const size_t col = size_t(warp) * S::KS + size_t(v) * 8;
      pre.nw[i] = in ? *reinterpret_cast<const uint4*>(norm_w + col) : make_uint4(0, 0, 0, 0);
      if constexpr (kEarlyX)
#pragma unroll
        for (int m = 0; m < MT; ++m)
          pre.xm[m][i] = in && m < n_x ? __ldcg(reinterpret_cast<const uint4*>(rows[m] + col))
                                       : make_uint4(0, 0, 0, 0);
    }
    return pre;
  }
  __device__ void load(int n_x, const Pre& pre, float4 (&xa)[MT][S::PER_LANE],
                       float4 (&xb)[MT][S::PER_LANE]) const {
    __shared__ float s_ss[kStreamWarps][MT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float ss = 0.f;
#pragma unroll
      for (int i = 0; i < S::PER_LANE; ++i) {
        const int v = lane + 32 * i;
        float e[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (m < n_x && (S::NV % 32 == 0 || v < S::NV)) {
          const size_t col = size_t(warp) * S::KS + size_t(v) * 8;
          uint4 y[kCombineMaxTopK];
#pragma unroll
          for (int s = 0; s < kCombineMaxTopK; ++s)  // in sorted order: the address takes the slot
            y[s] = s < top_k ? *reinterpret_cast<const uint4*>(
                                   yw + (size_t(m) * top_k + ((pre.order[m] >> (3 * s)) & 7)) * K + col)
                             : make_uint4(0, 0, 0, 0);
          uint4 xm;
          if constexpr (kEarlyX)
            xm = pre.xm[m][i];
          else
            xm = __ldcg(reinterpret_cast<const uint4*>(x_mid + size_t(m) * K + col));
          const uint32_t xw[4] = {xm.x, xm.y, xm.z, xm.w};
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            float acc = 0.f;
#pragma unroll
            for (int s = 0; s < kCombineMaxTopK; ++s) {
              if (s >= top_k) break;
              const uint32_t yv[4] = {y[s].x, y[s].y, y[s].z, y[s].w};
              acc = bf(acc + ((j & 1) ? hi_f32(yv[j >> 1]) : lo_f32(yv[j >> 1])));
            }
            e[j] = bf(((j & 1) ? hi_f32(xw[j >> 1]) : lo_f32(xw[j >> 1])) + acc);
            ss = fmaf(e[j], e[j], ss);
          }
          if (blockIdx.x == 0) {
            uint4 o;
            o.x = pack_bf16x2(e[0], e[1]), o.y = pack_bf16x2(e[2], e[3]), o.z = pack_bf16x2(e[4], e[5]);
            o.w = pack_bf16x2(e[6], e[7]);
            *reinterpret_cast<uint4*>(x_out + size_t(m) * K + col) = o;
          }
        }
        xa[m][i] = make_float4(e[0], e[1], e[2], e[3]);
        xb[m][i] = make_float4(e[4], e[5], e[6], e[7]);
      }
      ss = warp_sum(ss);
      if (lane == 0) s_ss[warp][m] = ss;
    }
    slice_warps_sync();  // (warps 0-7: gemv_warp_kernel may run more)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float total = 0.f;
#pragma unroll
      for (int w = 0; w < kStreamWarps; ++w) total += s_ss[w][m];
      const float r = 1.0f / sqrtf(total / float(K) + eps);
#pragma unroll
      for (int i = 0; i < S::PER_LANE; ++i) {
        const int v = lane + 32 * i;
        if (!(m < n_x && (S::NV % 32 == 0 || v < S::NV))) continue;
        const uint4 wv = pre.nw[i];
        float4& a = xa[m][i];
        float4& b = xb[m][i];
        a = make_float4(bf(lo_f32(wv.x) * (a.x * r)), bf(hi_f32(wv.x) * (a.y * r)), bf(lo_f32(wv.y) * (a.z * r)),
                        bf(hi_f32(wv.y) * (a.w * r)));
        b = make_float4(bf(lo_f32(wv.z) * (b.x * r)), bf(hi_f32(wv.z) * (b.y * r)), bf(lo_f32(wv.w) * (b.z * r)),
                        bf(hi_f32(wv.w) * (b.w * r)));
      }
    }
  }
};

// One token: a warp per RoPE pair, no CTA barrier per group (gemv_warp_kernel). H100, 20b, five interleaved
// runs: batch-1 step 1.986 -> 1.957 ms; q/k/v's marginal cost 17.3 -> 14.2 us per layer. (o_proj on the same
// kernel was slower than on gemv_stream_kernel: 1.975 ms with both.) 2-4 tokens: gemv_stream_kernel.
template <int K, int MT, typename Rows>
void launch_rows(const Rows& rows, const QkvRopeParams& p, int groups, cudaStream_t stream) {
  const QkvWarpEpi warp_epi{{p, K}};
  // With the fused combine, the rows of each warp's first group requested before the wait (the rest after the
  // prologue's loads). From bf12 (12 warps) one of the two: fewer weight bytes in flight ahead of the yw loads
  // that every dot waits for (H100, session 13, rows before the wait 2 / 1 / 0: 20b 1.925-1.948 / 1.911-1.937 /
  // 1.931-1.953 ms; H200, session 25: 1.329-1.332 with 2 vs 1.321-1.326 graph ms). From bf16 (8 warps: the H200's
  // default, runner_factory.h resolve_bf12_dense) both: 20b graph 1.299-1.302 ms with 2, 1.311-1.316 with 1,
  // 1.318-1.321 with 0 (H200, session 25). MXS_QKV_PRE_ROWS=0..2: A/B.
  static const int pre_rows_env = [] {
    const char* v = std::getenv("MXS_QKV_PRE_ROWS");
    return v ? std::max(0, std::min(2, std::atoi(v))) : -1;
  }();
  auto pre_rows = [&](int dflt) { return p.moe_yw == nullptr ? 2 : pre_rows_env >= 0 ? pre_rows_env : dflt; };
  const Bf16Format<K> bf16{static_cast<const bf16_t*>(p.w_qkv)};
  if constexpr (MT == 1) {
    // bf12's 166 registers leave room for 12 warps per CTA (bf16's 176 do not): more weight bytes in flight per SM.
    // H100, 20b batch 1 (session 18): 1.674-1.692 ms per step with 12, 1.709-1.747 with 8 (docs/PERF.md).
    if (p.w_qkv_bf12.bytes != nullptr)
      return launch_gemv_warp<K, 2, 12>(rows, groups, warp_epi, Bf12Format<K>{p.w_qkv_bf12}, stream, pre_rows(1));
    launch_gemv_warp<K, 2>(rows, groups, warp_epi, bf16, stream, pre_rows(2));
  } else {
    using Epi = std::conditional_t<MT <= 2, QkvStreamEpi, QkvLoadEpi>;
    launch_gemv_stream<K, MT, 2>(rows, p.n_tokens, groups, Epi{{p, K}}, bf16, stream);
  }
}

template <int K, int MT>
void launch_stream_mt(const QkvRopeParams& p, int groups, cudaStream_t stream) {
  if (p.embed != nullptr) {
    if constexpr (CombineNormRows<K, MT>::kEarlyX) {
      const CombineNormRows<K, MT> rows{static_cast<const bf16_t*>(p.embed), nullptr, nullptr, 0,
                                        static_cast<const bf16_t*>(p.norm_w), static_cast<bf16_t*>(p.x_out), p.eps,
                                        p.embed_tokens};
      return launch_rows<K, MT>(rows, p, groups, stream);
    }
    throw Error("qkv_rope: the fused embedding gather runs at 1-2 tokens");
  }
  if (p.moe_yw == nullptr)
    return launch_rows<K, MT>(StreamRows<K, MT>{static_cast<const bf16_t*>(p.xn)}, p, groups, stream);
  const CombineNormRows<K, MT> rows{static_cast<const bf16_t*>(p.moe_x_mid), static_cast<const bf16_t*>(p.moe_yw),
                                    p.moe_topk_idx, p.moe_top_k, static_cast<const bf16_t*>(p.norm_w),
                                    static_cast<bf16_t*>(p.x_out), p.eps};
  launch_rows<K, MT>(rows, p, groups, stream);
}

template <int K>
void launch_stream(const QkvRopeParams& p, cudaStream_t stream) {
  const int groups = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  switch (p.n_tokens) {
    case 1: return launch_stream_mt<K, 1>(p, groups, stream);
    case 2: return launch_stream_mt<K, 2>(p, groups, stream);
    default: return launch_stream_mt<K, 4>(p, groups, stream);
  }
}

template <int K, int MT>
void launch(const QkvRopeParams& p, cudaStream_t stream) {
  const int n_pairs = (p.n_heads + 2 * p.n_kv_heads) * (kHeadDim / 2);
  const int grid = (n_pairs + kWarps - 1) / kWarps;
  constexpr int smem = staged_bytes<K, MT>();
  static const bool smem_ok = (allow_smem(qkv_rope_kernel<K, MT>, smem), true);
  (void)smem_ok;
  launch_pdl(qkv_rope_kernel<K, MT>, dim3(grid), dim3(kWarps * 32), smem, stream, p);
  CUDA_CHECK_LAUNCH();
}

template <int K>
void dispatch_mt(const QkvRopeParams& p, cudaStream_t stream) {
  if (p.n_tokens == 1) return launch<K, 1>(p, stream);
  if (p.n_tokens == 2) return launch<K, 2>(p, stream);
  return launch<K, 4>(p, stream);
}

}  // namespace

void qkv_rope(const QkvRopeParams& p, cudaStream_t stream) {
  MXS_CHECK(p.n_tokens >= 1, "qkv_rope: n_tokens must be >= 1");
  MXS_CHECK(p.kv.n_kv_heads == p.n_kv_heads, "qkv_rope: KV view and params disagree on n_kv_heads");
  MXS_CHECK(p.moe_yw == nullptr || (p.hidden == 2880 && p.n_tokens <= 4 && p.moe_top_k >= 1 &&
                                     p.moe_top_k <= kCombineMaxTopK && p.moe_x_mid && p.moe_topk_idx && p.norm_w &&
                                     p.x_out && p.x_out != p.moe_x_mid),
            "qkv_rope: the fused MoE combine + norm needs hidden 2880, 1-4 tokens, 1-8 experts per token, all its "
            "buffers, and x_out distinct from moe_x_mid");
  MXS_CHECK(p.embed == nullptr || (p.hidden == 2880 && p.n_tokens <= 2 && p.moe_yw == nullptr && p.embed_tokens &&
                                    p.norm_w && p.x_out),
            "qkv_rope: the fused embedding gather + norm needs hidden 2880, 1-2 tokens, no MoE combine, the token "
            "ids, the norm weight and x_out");
  switch (p.hidden) {
    case 2880: return p.n_tokens <= 4 ? launch_stream<2880>(p, stream) : dispatch_mt<2880>(p, stream);
    case 64: return dispatch_mt<64>(p, stream);
    default: throw Error(strfmt("qkv_rope: hidden = %d is not supported (supported: 2880, 64)", p.hidden));
  }
}

}  // namespace mxs::cuda
