// Elementwise ops on CUDA: swiglu, add, convert (f32 / bf16 / f16, any pair), fill_random, copy.
// Grid-stride loops of 256 threads; each uses the CPU's expression with explicit rounding where nvcc would
// otherwise contract into an FMA, so results match csrc/cpu/elementwise.cc up to the device libm (expf, logf,
// cosf) in the last ulp.
#include <algorithm>

#include "core/random.h"
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1 << 16)); }

#define GLM4_GRID_STRIDE(i, n)                                                                     \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// out f32[M,F] = silu(gu[:, :F]) * gu[:, F:]
__global__ void __launch_bounds__(256) swiglu_kernel(float* __restrict__ out, const float* __restrict__ gu, int64_t F,
                                                     int64_t total) {
  GLM4_GRID_STRIDE(i, total) {
    const int64_t m = i / F, j = i - m * F;
    const float g = gu[m * 2 * F + j], u = gu[m * 2 * F + F + j];
    out[i] = g / (1.f + expf(-g)) * u;
  }
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
  const int64_t total = out.numel(), F = out.dim(1);
  if (total == 0) return;
  swiglu_kernel<<<blocks_for(total), 256, 0, stream_of(c)>>>(out.data<float>(), gu.data<float>(), F, total);
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
