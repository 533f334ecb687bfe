// Token embedding on CUDA: out f32[T,H] = table[ids[t]] (table bf16 | f32 [V,H]). Ids are read on the device;
// an id outside [0, V) gives a row of zeros (the CPU throws; a kernel cannot).
#include <algorithm>

#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

// One block per token; VEC: H % 4 == 0 with aligned rows -> 4 values a thread per step (8 bytes of bf16 or 16 of
// f32 in, 16 bytes out).
template <typename TB, bool VEC>
__global__ void __launch_bounds__(256) embedding_kernel(float* __restrict__ out, const TB* __restrict__ table,
                                                        const int32_t* __restrict__ ids, int64_t V, int64_t H) {
  const int64_t t = blockIdx.x;  // one token per block
  const int32_t id = ids[t];
  float* o = out + t * H;
  const bool ok = id >= 0 && id < V;
  const TB* src = table + (ok ? static_cast<int64_t>(id) : 0) * H;
  if (VEC) {
    for (int64_t i = threadIdx.x * 4; i < H; i += blockDim.x * 4) {
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (ok) v = make_float4(load_f(src, i), load_f(src, i + 1), load_f(src, i + 2), load_f(src, i + 3));
      *reinterpret_cast<float4*>(o + i) = v;
    }
  } else {
    for (int64_t i = threadIdx.x; i < H; i += blockDim.x) o[i] = ok ? load_f(src, i) : 0.f;
  }
}

template <typename TB>
void launch(cudaStream_t st, const Tensor& out, const Tensor& table, const Tensor& ids) {
  const int64_t T = ids.dim(0), V = table.dim(0), H = table.dim(1);
  GLM4_CHECK(T < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "embedding: ", T, " tokens is too many for one call");
  const bool vec = H % 4 == 0 && aligned16(out.raw());
  const unsigned blocks = static_cast<unsigned>(T);
  if (vec)
    embedding_kernel<TB, true><<<blocks, 256, 0, st>>>(out.data<float>(), table.data<TB>(), ids.data<int32_t>(), V, H);
  else
    embedding_kernel<TB, false><<<blocks, 256, 0, st>>>(out.data<float>(), table.data<TB>(), ids.data<int32_t>(), V, H);
  CUDA_CHECK_LAUNCH("embedding");
}

}  // namespace

void embedding(Context& c, const Tensor& out, const Tensor& table, const Tensor& ids) {
  if (ids.dim(0) == 0 || table.dim(1) == 0) return;
  if (table.dtype() == DType::BF16)
    launch<Bf16>(stream_of(c), out, table, ids);
  else
    launch<float>(stream_of(c), out, table, ids);
}

}  // namespace cuda
}  // namespace glm4
