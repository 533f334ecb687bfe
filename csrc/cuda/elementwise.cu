// Elementwise ops on CUDA: swiglu (kernels in elt_kernels.cuh), add, convert (f32 / bf16 / f16, any pair), fill_random, copy.
// Grid-stride loops of 256 threads; each uses the CPU's expression with explicit rounding where nvcc would
// otherwise contract into an FMA, so results match csrc/cpu/elementwise.cc up to the device libm (expf, logf,
// cosf) in the last ulp.
#include <algorithm>
#include <type_traits>

#include "core/random.h"
#include "elt_kernels.cuh"
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1 << 16)); }

#define GLM4_GRID_STRIDE(i, n)                                                                     \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// swiglu: out f32|bf16 [M,F] = silu(gu[:, :F]) * gu[:, F:], gu f32|bf16 [M, 2F] (elt_kernels.cuh). v2 (flat grid,
// 16-byte vectors, two a thread, PDL) where F % 4 (f32 gu) or F % 8 (bf16 gu) == 0 and the tensors are 16-byte
// aligned; v1 otherwise and under GLM4_ELT_OLD=swiglu. Same bits either way.
template <typename TI, typename TO>
void launch_swiglu(cudaStream_t st, const Tensor& out, const Tensor& gu) {
  const int64_t M = out.dim(0), F = out.dim(1);
  TO* o = out.data<TO>();
  const TI* g = gu.data<TI>();
  if (!elt::elt_old("swiglu") && elt::swiglu_v2_ok<TI>(M, F, g, o))
    CUDA_CHECK((elt::launch_swiglu_v2<TI, TO>(st, elt::elt_pdl(), o, g, M, F)));
  else
    CUDA_CHECK((elt::launch_swiglu_v1<TI, TO>(st, o, g, M, F)));
}

// out may alias a or b: no __restrict__.
__global__ void __launch_bounds__(256) add_kernel(float* out, const float* a, const float* b, int64_t n) {
  GLM4_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

template <typename TI, typename TO>
__global__ void __launch_bounds__(256) convert_kernel(TO* __restrict__ out, const TI* __restrict__ in, int64_t n) {
  GLM4_GRID_STRIDE(i, n) store_f(out, i, load_f(in, i));
}

template <typename TO>
__global__ void __launch_bounds__(256) fill_random_kernel(TO* __restrict__ out, int64_t n, uint64_t seed, float mean,
                                                          float stdv) {
  GLM4_GRID_STRIDE(i, n) store_f(out, i, __fadd_rn(mean, __fmul_rn(stdv, normal_at(seed, static_cast<uint64_t>(i)))));
}

template <typename TI>
void convert_from(cudaStream_t st, const Tensor& out, const TI* in, int64_t n) {
  switch (out.dtype()) {
    case DType::F32: convert_kernel<TI, float><<<blocks_for(n), 256, 0, st>>>(out.data<float>(), in, n); break;
    case DType::BF16: convert_kernel<TI, Bf16><<<blocks_for(n), 256, 0, st>>>(out.data<Bf16>(), in, n); break;
    case DType::F16: convert_kernel<TI, F16><<<blocks_for(n), 256, 0, st>>>(out.data<F16>(), in, n); break;
    default: GLM4_FAIL(GLM4_E_DTYPE, "convert: cannot write ", out.describe());
  }
}

}  // namespace

void swiglu(Context& c, const Tensor& out, const Tensor& gu) {
  if (out.numel() == 0) return;
  // The instantiated pairs: gate_up {f32, bf16} x out {f32, bf16}.
  const bool in_bf16 = gu.dtype() == DType::BF16;
  if (out.dtype() == DType::BF16) {
    if (in_bf16) launch_swiglu<Bf16, Bf16>(stream_of(c), out, gu);
    else launch_swiglu<float, Bf16>(stream_of(c), out, gu);
  } else {
    if (in_bf16) launch_swiglu<Bf16, float>(stream_of(c), out, gu);
    else launch_swiglu<float, float>(stream_of(c), out, gu);
  }
  CUDA_CHECK_LAUNCH("swiglu");
}

void add(Context& c, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = out.numel();
  if (n == 0) return;
  add_kernel<<<blocks_for(n), 256, 0, stream_of(c)>>>(out.data<float>(), a.data<float>(), b.data<float>(), n);
  CUDA_CHECK_LAUNCH("add");
}

void convert(Context& c, const Tensor& out, const Tensor& in) {
  const int64_t n = in.numel();
  if (n == 0) return;
  cudaStream_t st = stream_of(c);
  // The instantiated pairs: every (in, out) in {f32, bf16, f16}^2.
  switch (in.dtype()) {
    case DType::F32: convert_from(st, out, in.data<float>(), n); break;
    case DType::BF16: convert_from(st, out, in.data<Bf16>(), n); break;
    case DType::F16: convert_from(st, out, in.data<F16>(), n); break;
    default: GLM4_FAIL(GLM4_E_DTYPE, "convert: cannot read ", in.describe());
  }
  CUDA_CHECK_LAUNCH("convert");
}

void fill_random(Context& c, const Tensor& out, uint64_t seed, float mean, float std) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (out.dtype() == DType::F32)
    fill_random_kernel<float><<<blocks_for(n), 256, 0, stream_of(c)>>>(out.data<float>(), n, seed, mean, std);
  else
    fill_random_kernel<Bf16><<<blocks_for(n), 256, 0, stream_of(c)>>>(out.data<Bf16>(), n, seed, mean, std);
  CUDA_CHECK_LAUNCH("fill_random");
}

void copy(Context& c, const Tensor& dst, const Tensor& src) {
  if (src.nbytes() == 0 || dst.raw() == src.raw()) return;
  CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), static_cast<size_t>(src.nbytes()), cudaMemcpyDeviceToDevice,
                             stream_of(c)));
}

}  // namespace cuda
}  // namespace glm4
