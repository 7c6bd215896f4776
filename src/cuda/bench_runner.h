// The CudaRunner a CUDA benchmark runs on: the checkpoint in `model_dir`, or random weights of `preset`
// generated on the device (seed 1234, ~uniform routing) when it is empty. `model` gets what was loaded, in
// words, for the report.
#pragma once
#include <memory>
#include <string>

#include "cuda/cuda_runner.h"

namespace mxs::cuda {

std::unique_ptr<CudaRunner> make_bench_runner(const std::string& model_dir, const std::string& preset,
                                              const CudaRunnerOptions& options, std::string* model);

// The card's device-to-device copy bandwidth (GB/s, read + write counted): the benchmarks' roofline.
double measure_copy_gb_s();

}  // namespace mxs::cuda
