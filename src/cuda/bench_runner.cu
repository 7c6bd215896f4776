// See bench_runner.h.
#include "cuda/bench_runner.h"

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

}  // namespace mxs::cuda
