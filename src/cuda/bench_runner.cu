// See bench_runner.h.
#include "cuda/bench_runner.h"

#include <algorithm>
#include <vector>

#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "model/weights.h"

namespace mxs::cuda {

std::unique_ptr<CudaRunner> make_bench_runner(const std::string& model_dir, const std::string& preset,
                                              const CudaRunnerOptions& options, std::string* model) {
  if (!model_dir.empty()) {
    const ModelWeights w = load_model(model_dir);
    *model = model_dir;
    return std::make_unique<CudaRunner>(w, options);
  }
  *model = "random " + preset + " weights (on the device)";
  return std::make_unique<CudaRunner>(ModelConfig::preset(preset), 1234, options);
}

// Device-to-device copy of 2 x 1 GiB buffers (larger than L2), median of 10 after 2 warm-ups.
double measure_copy_gb_s() {
  const size_t bytes = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  CUDA_CHECK(cudaMemset(a, 0x5a, bytes));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<double> gbs;
  for (int i = 0; i < 12; ++i) {
    CUDA_CHECK(cudaEventRecord(e0));
    CUDA_CHECK(cudaMemcpyAsync(i % 2 ? a : b, i % 2 ? b : a, bytes, cudaMemcpyDeviceToDevice));
    CUDA_CHECK(cudaEventRecord(e1));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (i >= 2) gbs.push_back(2.0 * double(bytes) / (ms * 1e-3) / 1e9);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  std::sort(gbs.begin(), gbs.end());
  return gbs[gbs.size() / 2];
}

}  // namespace mxs::cuda
