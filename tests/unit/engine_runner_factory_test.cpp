// The CUDA backend's per-card default for the bf12 dense copies (engine/runner_factory.h, resolve_bf12_dense):
// "auto" keeps q/k/v's copy below 4.5 TB/s of peak DRAM bandwidth (H100 SXM 3.35 TB/s) and drops it above (H200
// 4.8 TB/s); every explicit list, "" included, passes through unchanged.
#include <gtest/gtest.h>

#include "engine/runner_factory.h"

namespace mxs {
namespace {

TEST(RunnerFactory, Bf12AutoDependsOnTheCardsBandwidth) {
  EXPECT_STREQ(kBf12DenseDefault, "auto");
  const double h100 = 2.0 * 2619e6 * 5120 / 8, h200 = 2.0 * 3201e6 * 6144 / 8;  // memory clock x bus width
  EXPECT_EQ(resolve_bf12_dense("auto", h100), "lm_head,o_proj,qkv");
  EXPECT_EQ(resolve_bf12_dense("auto", h200), "lm_head,o_proj");
  EXPECT_EQ(resolve_bf12_dense("auto", 4.5e12), "lm_head,o_proj");
  EXPECT_EQ(resolve_bf12_dense("auto", 4.49e12), "lm_head,o_proj,qkv");
  for (const char* list : {"", "qkv", "lm_head,o_proj,qkv", "o_proj"})
    for (double bw : {h100, h200}) EXPECT_EQ(resolve_bf12_dense(list, bw), list);
}

}  // namespace
}  // namespace mxs
