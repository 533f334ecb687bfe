// RMSNorm on CUDA: out f32[T,H] = x / sqrt(mean(x^2) + eps) * w, w bf16 | f32 [H]; out may alias x.
// One block per row. The sum of squares is accumulated in f64 like the CPU reference (cheap: H values a row),
// and the output uses the CPU's expression (x * inv) * w, so results agree to the last bit in most rows.
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// No __restrict__ on x/out: they may alias (each element is read before the same thread overwrites it).
template <typename TW>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(float* out, const float* x, const TW* __restrict__ w,
                                                           int64_t H, float eps) {
  __shared__ double red[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * H;
  float* yr = out + row * H;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) {
    const double v = xr[i];
    ss += v * v;
  }
  ss = block_reduce(ss, red, SumOp{});
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(H) + static_cast<double>(eps)));
  for (int64_t i = threadIdx.x; i < H; i += kThreads) yr[i] = xr[i] * inv * load_f(w, i);
}

}  // namespace

void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t T = x.dim(0), H = x.dim(1);
  if (T == 0 || H == 0) return;
  GLM4_CHECK(T < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "rmsnorm: ", T, " rows is too many for one call");
  const unsigned blocks = static_cast<unsigned>(T);
  if (w.dtype() == DType::BF16)
    rmsnorm_kernel<Bf16><<<blocks, kThreads, 0, stream_of(c)>>>(out.data<float>(), x.data<float>(), w.data<Bf16>(), H, eps);
  else
    rmsnorm_kernel<float><<<blocks, kThreads, 0, stream_of(c)>>>(out.data<float>(), x.data<float>(), w.data<float>(), H, eps);
  CUDA_CHECK_LAUNCH("rmsnorm");
}

}  // namespace cuda
}  // namespace glm4
