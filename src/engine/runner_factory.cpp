// make_runner: CpuRunner always; CudaRunner when the build has it (MXS_WITH_CUDA and src/cuda/cuda_runner.h).
#include "engine/runner_factory.h"

#include <algorithm>

#include "common/error.h"
#include "common/thread_pool.h"
#include "cpu/cpu_runner.h"

#if defined(MXS_WITH_CUDA) && __has_include("cuda/cuda_runner.h")
#include <cuda_runtime.h>

#include "cuda/cuda_runner.h"
#define MXS_HAVE_CUDA_RUNNER 1
#endif

namespace mxs {

bool build_has_cuda() {
#ifdef MXS_HAVE_CUDA_RUNNER
  return true;
#else
  return false;
#endif
}

bool cuda_device_usable() {
#ifdef MXS_HAVE_CUDA_RUNNER
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // a failed probe (no driver, no device) must not leave a sticky error behind
  return ok;
#else
  return false;
#endif
}

std::string default_backend() { return cuda_device_usable() ? "cuda" : "cpu"; }

void check_backend_available(const std::string& backend) {
  if (backend == "auto" || backend == "cpu" || (backend == "cuda" && build_has_cuda())) return;
  if (backend == "cuda")
    throw Error("--backend cuda: this build has no CUDA backend (rebuild with nvcc available, -DMXS_CUDA=ON)");
  throw Error(strfmt("--backend %s: unknown backend; supported: auto, cpu, cuda", backend.c_str()));
}

std::unique_ptr<ModelRunner> make_runner(const ModelWeights& weights, const RunnerSpec& spec_in) {
  RunnerSpec spec = spec_in;
  if (spec.backend == "auto") spec.backend = default_backend();
  if (spec.backend == "cpu") {
    cpu::CpuRunnerOptions opt;
    opt.block_size = spec.block_size;
    opt.num_blocks = spec.num_kv_blocks > 0
                         ? spec.num_kv_blocks
                         : int(std::max<int64_t>(1, (spec.kv_tokens + spec.block_size - 1) / spec.block_size));
    // Two KV groups when the model has sliding-window layers: their pool only needs the windows of the
    // running sequences (sliding_pool_blocks never runs dry), and never more blocks than the full pool.
    const ModelConfig& c = weights.config;
    if (spec.sliding_kv_group && spec.block_size > 0 && c.sliding_window > 0 &&
        std::find(c.layer_sliding.begin(), c.layer_sliding.end(), true) != c.layer_sliding.end()) {
      opt.num_sliding_blocks =
          std::min(sliding_pool_blocks(c.sliding_window, spec.block_size, spec.max_batch_size,
                                       spec.max_num_batched_tokens),
                   std::max(opt.num_blocks, min_sliding_pool_blocks(c.sliding_window, spec.block_size)));
    }
    return std::make_unique<cpu::CpuRunner>(weights, opt);
  }
  if (spec.backend == "cuda") {
#ifdef MXS_HAVE_CUDA_RUNNER
    cuda::CudaRunnerOptions opt;
    opt.block_size = spec.block_size;
    opt.num_kv_blocks = spec.num_kv_blocks;
    opt.device_memory_utilization = spec.device_memory_utilization;
    opt.max_seqs = spec.max_batch_size;
    opt.max_tokens = spec.max_num_batched_tokens;
    opt.max_model_len = spec.max_length;
    opt.num_sliding_kv_blocks = spec.sliding_kv_group ? -1 : 0;
    opt.bf12_dense = spec.bf12_dense;
    opt.lm_head_screen = spec.lm_head_screen;
    opt.exact_attention = spec.exact_attention;
    return std::make_unique<cuda::CudaRunner>(weights, opt);
#endif
  }
  check_backend_available(spec.backend);
  throw Error(strfmt("--backend %s: no runner", spec.backend.c_str()));
}

std::string runner_device_name(const ModelRunner& runner) {
#ifdef MXS_HAVE_CUDA_RUNNER
  if (auto* c = dynamic_cast<const cuda::CudaRunner*>(&runner)) return c->device_name();
#endif
  return strfmt("%s (%d threads)", runner.name().c_str(), ThreadPool::global().size());
}

}  // namespace mxs
