// Sampling kernels (see sampling.h). sampling_prepare: one CTA per sequence: copies the bf16 logits to fp32,
// raw log-normalizer (double sum) for logprobs, penalties, greedy argmax, temperature. A CUB segmented radix
// sort then orders the rows for the random ones; sampling_draw cuts that order (top-k, top-p, min-p) and
// draws over the kept candidates in ascending id order (double prefix sums by chunk of ids).
#include "cuda/kernels/sampling.h"

#include <cub/cub.cuh>

#include "common/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/device_math.cuh"

namespace mxs::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t splitmix64_dev(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Same bits as mxs::sample_uniform (engine/sampling_params.h).
__device__ __forceinline__ float sample_uniform_dev(uint64_t seed, uint64_t step) {
  const uint64_t r = splitmix64_dev(seed ^ splitmix64_dev(step + 0x5851f42d4c957f2dull));
  return float(r >> 40) * (1.0f / 16777216.0f);
}

// w = exp(z - z_max) rounded to fp32 from a double exp: the correctly rounded value, as glibc's expf
// nearly always gives, so that the weights (and the draw) match the CPU sampler.
__device__ __forceinline__ float weight_of(float z, float z_max) { return float(exp(double(z - z_max))); }

// "a before b": larger value first, lower id on ties. Used for arg-reductions.
struct Best {
  float v;
  int id;
};
__device__ __forceinline__ Best better(Best a, Best b) {
  if (b.id < 0) return a;
  if (a.id < 0) return b;
  return (b.v > a.v || (b.v == a.v && b.id < a.id)) ? b : a;
}

__device__ __forceinline__ Best shfl_xor(Best b, int o) {
  return Best{__shfl_xor_sync(0xffffffffu, b.v, o), __shfl_xor_sync(0xffffffffu, b.id, o)};
}
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int o) {
  return __shfl_xor_sync(0xffffffffu, v, o);
}

// Reduction over the whole block (kThreads threads); every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* s_buf) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  __syncthreads();
  if (lane == 0) s_buf[warp] = v;
  __syncthreads();
  T r = s_buf[0];
  for (int i = 1; i < int(blockDim.x / 32); ++i) r = op(r, s_buf[i]);
  return r;
}

__device__ Best block_argmax(const float* z, int n, Best* s_buf, int exclude_mask_count, const int32_t* excluded) {
  Best b{0.f, -1};
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    bool skip = false;
    for (int k = 0; k < exclude_mask_count; ++k) skip |= excluded[k] == i;
    if (!skip) b = better(b, Best{z[i], i});
  }
  return block_reduce(b, [](Best x, Best y) { return better(x, y); }, s_buf);
}

struct Shared {
  Best best[32];
  double dsum[32];
  float fmax[32];
  int flag[32];
  int32_t top_ids[kMaxTopLogprobs];
  double chunk_prefix[kThreads];
  double raw_log_sum;
  float raw_max;
};

__global__ void __launch_bounds__(kThreads) sampling_prepare(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float* z = p.z + size_t(s) * V;
  SampleResultDev& res = p.results[s];
  if (p.row_argmax && q.temperature == 0.0f && q.repetition_penalty == 1.0f && q.frequency_penalty == 0.0f &&
      q.presence_penalty == 0.0f && !q.want_logprob && q.top_logprobs == 0) {
    if (threadIdx.x == 0) {
      const unsigned long long key = p.row_argmax[s];
      const float top = to_f32(logits[0x7fffffff - int(key & 0xffffffffu)]);
      res.token = 0x7fffffff - int(key & 0xffffffffu);
      res.error = isnan(top) || key == 0ull ? 1 : 0;
    }
    return;
  }

  int has_nan = 0;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    const float v = to_f32(logits[i]);
    has_nan |= isnan(v);
    mx = fmaxf(mx, v);
    z[i] = v;
  }
  has_nan = block_reduce(has_nan, [](int a, int b) { return a | b; }, sh.flag);
  if (has_nan) {
    if (threadIdx.x == 0) res.error = 1, res.token = -1;
    return;
  }
  // 0. raw log-normalizer (for logprobs): max, then the double sum of exp(z - max).
  if (q.want_logprob || q.top_logprobs > 0) {
    mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
    double sum = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) sum += exp(double(z[i]) - double(mx));
    sum = block_reduce(sum, [](double a, double b) { return a + b; }, sh.dsum);
    if (threadIdx.x == 0) sh.raw_max = mx, sh.raw_log_sum = log(sum);
    __syncthreads();
    // top logprobs: the N best raw logits, descending, ties -> lower id.
    for (int k = 0; k < q.top_logprobs; ++k) {
      const Best b = block_argmax(z, V, sh.best, k, sh.top_ids);
      if (threadIdx.x == 0) {
        sh.top_ids[k] = b.id;
        res.top_ids[k] = b.id;
        res.top_lp[k] = float(double(b.v) - double(sh.raw_max) - sh.raw_log_sum);
      }
      __syncthreads();
    }
  }
  // 1. repetition penalty over distinct prompt + output ids.
  __syncthreads();
  if (q.repetition_penalty != 1.0f)
    for (int i = threadIdx.x; i < q.n_rep; i += blockDim.x) {
      float& v = z[p.ids[q.rep_offset + i]];
      v = v > 0.0f ? v / q.repetition_penalty : v * q.repetition_penalty;
    }
  __syncthreads();
  // 2. frequency / presence penalties over distinct output ids.
  if (q.frequency_penalty != 0.0f || q.presence_penalty != 0.0f)
    for (int i = threadIdx.x; i < q.n_out; i += blockDim.x)
      z[p.ids[q.out_offset + i]] -= float(p.counts[q.out_offset + i]) * q.frequency_penalty + q.presence_penalty;
  __syncthreads();
  if (q.temperature == 0.0f) {  // 3. greedy
    const Best b = block_argmax(z, V, sh.best, 0, nullptr);
    if (threadIdx.x == 0) {
      res.token = b.id;
      res.error = 0;
      if (q.want_logprob) res.logprob = float(double(to_f32(logits[b.id])) - double(sh.raw_max) - sh.raw_log_sum);
    }
    return;
  }
  // 4. temperature; keys/values for the sort.
  for (int i = threadIdx.x; i < V; i += blockDim.x) {
    z[i] = z[i] / q.temperature;
    p.order_in[size_t(s) * V + i] = i;
  }
  if (threadIdx.x == 0) {
    res.error = 0;
    if (q.want_logprob) res.logprob = 0.f;  // filled by sampling_draw
  }
}

// One random sequence: top-k, top-p, min-p over the sorted row, then the draw in ascending id order
// (sampler.h steps 5-9).
__global__ void __launch_bounds__(kThreads) sampling_draw(SamplingParamsDev p) {
  __shared__ Shared sh;
  __shared__ int s_kept;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  SampleResultDev& res = p.results[s];
  if (q.temperature == 0.0f || res.error != 0) return;
  const float* zs = p.z_sorted + size_t(s) * V;
  const int32_t* ord = p.order + size_t(s) * V;
  const float z_max = zs[0];
  if (!isfinite(z_max)) {
    if (threadIdx.x == 0) res.error = 2, res.token = -1;
    return;
  }
  int kept = (q.top_k > 0 && q.top_k < V) ? q.top_k : V;
  // Each thread owns a contiguous chunk of the order; chunk sums in double, prefix over chunks.
  const int chunk = (V + blockDim.x - 1) / blockDim.x;
  auto chunk_prefix = [&](int n, double scale_inv) {  // fills sh.chunk_prefix (exclusive) over [0, n)
    const int b = threadIdx.x * chunk, e = min(n, b + chunk);
    double cs = 0.0;
    for (int i = b; i < e; ++i) cs += scale_inv > 0 ? double(weight_of(zs[i], z_max)) / scale_inv : double(weight_of(zs[i], z_max));
    __syncthreads();
    sh.chunk_prefix[threadIdx.x] = cs;
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = 0.0;
      for (int i = 0; i < int(blockDim.x); ++i) {
        const double v = sh.chunk_prefix[i];
        sh.chunk_prefix[i] = acc;
        acc += v;
      }
      sh.dsum[0] = acc;
    }
    __syncthreads();
    return sh.dsum[0];
  };
  // 7. top-p: n = first i >= 1 whose cumulative p before it reaches top_p (else kept).
  if (q.top_p < 1.0f) {
    const double total = chunk_prefix(kept, 0.0);
    chunk_prefix(kept, total);  // prefix of p = w / total, summed in order within a chunk
    if (threadIdx.x == 0) s_kept = kept;
    __syncthreads();
    const int b = threadIdx.x * chunk, e = min(kept, b + chunk);
    double cum = sh.chunk_prefix[threadIdx.x];
    for (int i = b; i < e; ++i) {
      if (i >= 1 && cum >= double(q.top_p)) {
        atomicMin(&s_kept, i);
        break;
      }
      cum += double(weight_of(zs[i], z_max)) / total;
    }
    __syncthreads();
    kept = s_kept;
  }
  // 8. min-p: keep the prefix with w >= min_p (w is non-increasing along the order).
  if (q.min_p > 0.0f) {
    if (threadIdx.x == 0) s_kept = kept;
    __syncthreads();
    for (int i = 1 + threadIdx.x; i < kept; i += blockDim.x)
      if (!(weight_of(zs[i], z_max) >= q.min_p)) atomicMin(&s_kept, i);
    __syncthreads();
    kept = s_kept;
  }
  // 9. draw, walking the kept candidates in ascending id order. The kept set is a prefix of the sorted order,
  // so membership is a threshold test against its last element (z_b, id_b): z > z_b, or z == z_b and
  // id <= id_b. Chunks of ids per thread, double prefix over the chunks.
  const float* z = p.z + size_t(s) * V;
  const float z_b = zs[kept - 1];
  const int id_b = ord[kept - 1];
  auto is_kept = [&](int i) { return z[i] > z_b || (z[i] == z_b && i <= id_b); };
  auto kept_weight = [&](int i) { return is_kept(i) ? weight_of(z[i], z_max) : 0.0f; };
  __shared__ int s_last;
  {
    const int b = threadIdx.x * chunk, e = min(V, b + chunk);
    double cs = 0.0;
    int last = -1;
    for (int i = b; i < e; ++i) {
      if (!is_kept(i)) continue;
      cs += double(weight_of(z[i], z_max));
      last = i;
    }
    if (threadIdx.x == 0) s_last = -1;
    __syncthreads();
    sh.chunk_prefix[threadIdx.x] = cs;
    if (last >= 0) atomicMax(&s_last, last);
    __syncthreads();
    if (threadIdx.x == 0) {
      double acc = 0.0;
      for (int i = 0; i < int(blockDim.x); ++i) {
        const double v = sh.chunk_prefix[i];
        sh.chunk_prefix[i] = acc;
        acc += v;
      }
      sh.dsum[0] = acc;
      s_kept = s_last;  // the last kept candidate (largest id) if rounding leaves none
    }
    __syncthreads();
  }
  const double u = double(sample_uniform_dev(q.seed, q.step));
  const double target = u * sh.dsum[0];
  {
    const int b = threadIdx.x * chunk, e = min(V, b + chunk);
    double cum = sh.chunk_prefix[threadIdx.x];
    for (int i = b; i < e; ++i) {
      const float w = kept_weight(i);
      if (w == 0.0f) continue;
      cum += double(w);
      if (cum > target) {
        atomicMin(&s_kept, i);
        break;
      }
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    res.token = s_kept;
    if (q.want_logprob) res.logprob = 0.f;  // filled by sampling_logprob
  }
}

// Raw logprob of the sampled token, for every sequence that wants it (after the draw).
__global__ void __launch_bounds__(kThreads) sampling_logprob(SamplingParamsDev p) {
  __shared__ Shared sh;
  const int s = blockIdx.x, V = p.vocab;
  const SampleSeqParams& q = p.seqs[s];
  SampleResultDev& res = p.results[s];
  if (!q.want_logprob || res.error != 0) return;
  const bf16_t* logits = static_cast<const bf16_t*>(p.logits) + size_t(s) * V;
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, to_f32(logits[i]));
  mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); }, sh.fmax);
  double sum = 0.0;
  for (int i = threadIdx.x; i < V; i += blockDim.x) sum += exp(double(to_f32(logits[i])) - double(mx));
  sum = block_reduce(sum, [](double a, double b) { return a + b; }, sh.dsum);
  if (threadIdx.x == 0) res.logprob = float(double(to_f32(logits[res.token])) - double(mx) - log(sum));
}

__global__ void sample_uniform_kernel(const uint64_t* seeds, const uint64_t* steps, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = sample_uniform_dev(seeds[i], steps[i]);
}

}  // namespace

size_t sampling_sort_temp_bytes(int max_seqs, int vocab) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), int64_t(max_seqs) * vocab, max_seqs,
      static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(nullptr) + 1));
  return bytes;
}

void sample_tokens(const SamplingParamsDev& p, cudaStream_t stream) {
  MXS_CHECK(p.n_seqs >= 1 && p.vocab >= 1, "sample_tokens: n_seqs and vocab must be >= 1");
  sampling_prepare<<<p.n_seqs, kThreads, 0, stream>>>(p);
  CUDA_CHECK_LAUNCH();
  if (p.any_random) {
    size_t bytes = p.sort_temp_bytes;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        p.sort_temp, bytes, p.z, p.z_sorted, p.order_in, p.order, int64_t(p.n_seqs) * p.vocab, p.n_seqs,
        p.segment_offsets, p.segment_offsets + 1, 0, 32, stream));
    sampling_draw<<<p.n_seqs, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
    sampling_logprob<<<p.n_seqs, kThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH();
  }
}

void sample_uniform_device(const uint64_t* seeds, const uint64_t* steps, float* out, int n, cudaStream_t stream) {
  sample_uniform_kernel<<<(n + 255) / 256, 256, 0, stream>>>(seeds, steps, out, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mxs::cuda
