// The INT4 linear's kernel choice on CUDA (one function for every shape) and the tensor-core GEMMs over the kernel
// layout 1 (gemm_int4.cu). Used by matmul_int4 (int4.cu) and reported to TypeScript (linearPath).
#pragma once
#include <cstdint>
#include <string>

#include "ops.h"

namespace glm4 {
namespace cuda {

enum class LinearKind {
  Gemv,       // M <= 8: the decode GEMV (reads the weights once for all rows)
  Canonical,  // layout 0, M > 8: gemm_tc.cuh with the INT4 tile loader (the path before layout 1)
  Wgmma,      // layout 1, sm_90a: gemm_int4_sm90.cuh
  Mma,        // layout 1, sm_80+: gemm_int4_mma.cuh
};

struct LinearPlan {
  LinearKind kind = LinearKind::Gemv;
  int cfg = 0;     // index into the instantiated configurations of the kind (gemm_int4.cu)
  int splits = 1;  // K splits (small M: more blocks streaming the weights; the splits add with atomics)
  int grid = 0;    // blocks (wgmma: persistent, <= SMs)
  int tiles = 0;   // wgmma: output tiles; the first dp whole, each of the others in `splits` K pieces
  int dp = 0;      //   (gemmk::Sched; dp = 0 with splits > 1: the uniform K split)
  std::string label() const;  // e.g. "wgmma r256 t16 splits=4" (what the bench prints)
};

// The choice for out[M, N] = x[M, K] W^T with W in `layout`, on the current device. The measurements behind
// the thresholds are written beside the function (gemm_int4.cu).
// whole: whole tiles only (a bf16 out, which K pieces cannot add into): the cheapest whole-tile configuration.
LinearPlan linear_plan(int64_t m, int64_t n, int64_t k, int group, int layout, bool whole = false);

// out f32[M,N] = x bf16[M,K] W^T (+ bias) through plan (kind Wgmma or Mma); W in layout 1, either codebook
// (NF4 through a 256-entry bf16-pair table in shared memory). Epilogue fusions: out bf16 (the f32 result rounded to
// nearest even; the plan's K pieces are dropped: whole tiles only), accumulate (out f32 += result: the residual
// add; K pieces add into out as it is).
void gemm_int4_layout1(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias,
                       const LinearPlan& plan, bool accumulate = false);

}  // namespace cuda
}  // namespace glm4
