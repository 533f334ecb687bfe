// The op contract. Every op, its tensors and their shapes are listed once in csrc/op_list.h. Implementations:
//   csrc/cpu/<family>.cc   glm4::cpu::<op>    the reference backend (plain, obviously right)
//   csrc/cuda/<family>.cu  glm4::cuda::<op>   the fast backend (same signature)
// csrc/core/dispatch.cc validates every argument (dtype, shape, device, contiguity) and records the op on the
// context; backends may therefore assume valid, contiguous inputs on their own device.
#pragma once
#include <cstdint>

#include "core/context.h"
#include "core/int4_layout.h"
#include "op_list.h"

namespace glm4 {

// An INT4 linear weight W[N, K] (see core/int4_layout.h). layout 0 is canonical (on disk, CPU); layout 1 is the
// CUDA kernel layout (repacked at load; CUDA ops only). codebook 0: integer codes, w = (q - z) * s; codebook 1:
// NF4, w = (NF4[q] - z) * s (kInt4Nf4 in core/int4_layout.h).
struct QWeight {
  Tensor codes;   // i4   [N, K]      (u8 [N, K/2] in memory)
  Tensor scales;  // bf16 [N, K/G]
  Tensor zeros;   // bf16 [N, K/G]
  int64_t n = 0, k = 0;
  int group = 128;
  int layout = 0;    // 0 canonical, 1 tiled16x64 (the CUDA kernel layout)
  int codebook = 0;  // 0 integer, 1 NF4
};

// matmul_int4 on CUDA: up to this many rows (tokens) run the GEMV; more run a tensor-core GEMM, which reads x as
// bf16 for layout 1 (an f32 x is converted first by the dispatch; cuda::linear_plan picks the kernel per shape).
constexpr int64_t kInt4GemvMaxM = 8;

// linear_int4's epilogue (its `mode` argument): what happens to y = norm(x) W^T + bias.
enum class LinearMode : int64_t {
  Store = 0,       // out f32[M,N] = y
  Accumulate = 1,  // out f32[M,N] += y   (the residual add of o_proj and down)
  SwiGlu = 2,      // out f32[M,N/2] = silu(y[:, :N/2]) * y[:, N/2:]   (gate first, like swiglu)
};

// Arguments for rotary / attention, all read on the device.
struct AttnShape {
  int64_t tokens = 0;    // T
  int64_t q_heads = 0;   // Hq
  int64_t kv_heads = 0;  // Hkv
  int64_t head_dim = 0;  // D
};

// Declarations generated from the op list (csrc/op_list.h): the two backends and the dispatch layer, same names,
// same arguments. The dispatch layer (csrc/core/dispatch.cc) validates and records; the backends compute.
#define GLM4_DECLARE_OP(name, js, params) void name params;
namespace cpu {
GLM4_OP_LIST(GLM4_DECLARE_OP)
}  // namespace cpu
namespace cuda {
GLM4_OP_LIST(GLM4_DECLARE_OP)
}  // namespace cuda
namespace ops {
GLM4_OP_LIST(GLM4_DECLARE_OP)
}  // namespace ops
#undef GLM4_DECLARE_OP

namespace cuda {
// Attention's split-K scratch (decode partial states and arrival tickets) for these arguments, from the context's
// "attention" workspace (Context::workspace), zero-filled when new; undefined when the kernel chosen does not
// split. The dispatch layer takes it when the op is recorded, so that the recorded op (and a plan captured with
// it) owns its scratch; attention_run then launches with it. cuda::attention does both at once (csrc/cuda/attention.cu).
Tensor attention_workspace(Context& c, const Tensor& q, const Tensor& kcache, const Tensor& table, const Tensor& seq,
                           int64_t block_size);
void attention_run(Context& c, const Tensor& out, const Tensor& q, const Tensor& kcache, const Tensor& vcache,
                   const Tensor& positions, float scale, int64_t block_size, const Tensor& table, const Tensor& seq,
                   const Tensor& work);
// linear_int4's scratch for the v3 GEMV's split-K partials and tickets (gemv_v3.cuh), from the context's "gemv3"
// workspace, zero-filled when new; undefined when the kernel chosen does not split K. Taken when the op is recorded
// (as attention's); linear_int4_run launches with it (without one, a kernel that needs it is not chosen).
Tensor linear_int4_workspace(Context& c, const Tensor& x, const QWeight& w, int64_t mode);
void linear_int4_run(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps, int64_t mode,
                     const Tensor& bias, const Tensor& norm_weight, const Tensor& work);
// linear_int4 of a bf16 x with M > kInt4GemvMaxM (layout 1, no norm, mode Store or Accumulate): the tensor-core
// GEMM with the store or the residual add in its epilogue (gemm_int4.cu).
void linear_int4_gemm(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, int64_t mode, const Tensor& bias);
}  // namespace cuda

}  // namespace glm4
