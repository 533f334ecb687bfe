// GLM-4 rotary embedding on CUDA, in place on x f32[T, heads, D]: interleaved pairs (x[2i], x[2i+1]) of the first
// rot_dim dims of every head are rotated by pos[t] * theta^(-2i/rot_dim). Positions are read on the device.
// One thread per (t, head, pair). The angle is computed like the CPU (inv_freq in f64 rounded to f32, then an f32
// product) and the rotation uses explicitly rounded products (no FMA contraction), so the only difference from
// the CPU is the last-ulp behaviour of sincosf against the host libm.
#include <algorithm>

#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

__global__ void __launch_bounds__(256) rotary_kernel(float* __restrict__ x, const int32_t* __restrict__ pos, int64_t heads,
                                                     int64_t D, int64_t half, int64_t rot_dim, float theta, int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half, th = i / half, t = th / heads;
    const float inv_freq =
        static_cast<float>(1.0 / pow(static_cast<double>(theta), 2.0 * static_cast<double>(j) / static_cast<double>(rot_dim)));
    const float a = static_cast<float>(pos[t]) * inv_freq;
    float sn, cs;
    sincosf(a, &sn, &cs);
    float* v = x + th * D + 2 * j;
    const float x0 = v[0], x1 = v[1];
    v[0] = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
    v[1] = __fadd_rn(__fmul_rn(x1, cs), __fmul_rn(x0, sn));
  }
}

}  // namespace

void rotary(Context& c, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta) {
  const int64_t T = x.dim(0), heads = x.dim(1), D = x.dim(2), half = rot_dim / 2;
  const int64_t total = T * heads * half;
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 1 << 16));
  rotary_kernel<<<blocks, 256, 0, stream_of(c)>>>(x.data<float>(), pos.data<int32_t>(), heads, D, half, rot_dim, theta,
                                                  total);
  CUDA_CHECK_LAUNCH("rotary");
}

}  // namespace cuda
}  // namespace glm4
