// See bench_dense_gemm.h.
#include "cuda/bench_dense_gemm.h"

#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "cuda/bench_runner.h"
#include "cuda/cuda_check.h"
#include "cuda/event_timing.h"
#include "cuda/kernels/dense_gemm.h"

namespace mxs::cuda {
namespace {

void lt_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) throw Error(strfmt("cuBLASLt error %d in %s", int(st), what));
}

struct Shape {
  const char* name;
  int k, n_out;
  bool bf16_out;  // the LM head writes bf16 logits; the others fp32 for their epilogues
};

constexpr size_t kWorkspace = 64u << 20;
constexpr size_t kRotateBytes = 512u << 20;

}  // namespace

BenchDenseGemmResult run_bench_dense_gemm(const BenchDenseGemmOptions& o) {
  BenchDenseGemmResult r;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  r.device = prop.name;
  r.copy_gb_s = measure_copy_gb_s();
  const Shape shapes[] = {{"qkv", 2880, 5120, false}, {"o_proj", 4096, 2880, false}, {"router", 2880, 32, false},
                          {"lm_head", 2880, 201088, true}};
  const int max_rows = *std::max_element(o.rows.begin(), o.rows.end());
  cublasHandle_t h;
  cublasLtHandle_t lt;
  MXS_CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "cublasCreate failed");
  lt_check(cublasLtCreate(&lt), "cublasLtCreate");
  void *ws = nullptr, *x = nullptr, *y = nullptr;
  CUDA_CHECK(cudaMalloc(&ws, kWorkspace));
  CUDA_CHECK(cudaMalloc(&x, size_t(max_rows) * 4096 * 2));
  CUDA_CHECK(cudaMalloc(&y, size_t(max_rows) * 201088 * 4));
  CUDA_CHECK(cudaMemset(x, 0, size_t(max_rows) * 4096 * 2));
  for (const Shape& s : shapes) {
    const size_t wbytes = size_t(s.k) * s.n_out * 2;
    const int copies = int(std::max<size_t>(1, (kRotateBytes + wbytes - 1) / wbytes));
    void* w = nullptr;
    CUDA_CHECK(cudaMalloc(&w, wbytes * copies));
    CUDA_CHECK(cudaMemset(w, 0, wbytes * copies));
    const auto wcopy = [&](int i) { return static_cast<char*>(w) + size_t(i % copies) * wbytes; };
    for (int m : o.rows) {
      BenchDenseGemmRow row;
      row.name = s.name, row.n_rows = m, row.k = s.k, row.n_out = s.n_out;
      row.us_default = 1e3 * mean_ms_per_call(3, o.iters, [&](int i) {
        if (s.bf16_out)
          gemm_bf16_bf16(h, x, wcopy(i), y, m, s.k, s.n_out);
        else
          gemm_bf16_f32(h, x, wcopy(i), static_cast<float*>(y), m, s.k, s.n_out);
      });
      // The same column-major problem as dense_gemm.cu: y^T [n_out, m] = w^T (w as [k, n_out]) . x [k, m].
      cublasLtMatmulDesc_t op;
      lt_check(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
      const cublasOperation_t tA = CUBLAS_OP_T, tB = CUBLAS_OP_N;
      lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &tA, sizeof(tA)), "TRANSA");
      lt_check(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tB, sizeof(tB)), "TRANSB");
      cublasLtMatrixLayout_t la, lb, lc;
      const cudaDataType_t yt = s.bf16_out ? CUDA_R_16BF : CUDA_R_32F;
      lt_check(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, s.k, s.n_out, s.k), "layout A");
      lt_check(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, s.k, m, s.k), "layout B");
      lt_check(cublasLtMatrixLayoutCreate(&lc, yt, s.n_out, m, s.n_out), "layout C");
      cublasLtMatmulPreference_t pref;
      lt_check(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
      lt_check(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &kWorkspace,
                                                    sizeof(kWorkspace)),
               "pref workspace");
      std::vector<cublasLtMatmulHeuristicResult_t> res(std::max(1, o.algos));
      int found = 0;
      lt_check(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, lc, lc, pref, int(res.size()), res.data(), &found),
               "AlgoGetHeuristic");
      const float one = 1.0f, zero = 0.0f;
      row.n_algos = found;
      for (int a = 0; a < found; ++a) {
        if (res[a].state != CUBLAS_STATUS_SUCCESS) continue;
        const double us = 1e3 * mean_ms_per_call(3, o.iters, [&](int i) {
          lt_check(cublasLtMatmul(lt, op, &one, wcopy(i), la, x, lb, &zero, y, lc, y, lc, &res[a].algo, ws,
                                  res[a].workspaceSize, nullptr),
                   "Matmul");
        });
        if (a == 0) row.us_first = us;
        if (row.best_index < 0 || us < row.us_best)
          row.us_best = us, row.best_index = a, row.best_workspace = res[a].workspaceSize;
      }
      cublasLtMatmulPreferenceDestroy(pref);
      cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb), cublasLtMatrixLayoutDestroy(lc);
      cublasLtMatmulDescDestroy(op);
      r.rows.push_back(row);
    }
    CUDA_CHECK(cudaFree(w));
  }
  cudaFree(ws), cudaFree(x), cudaFree(y);
  cublasLtDestroy(lt);
  cublasDestroy(h);
  return r;
}

}  // namespace mxs::cuda
