// RMSNorm on CUDA: out f32|bf16 [T,H] = x / sqrt(mean(x^2) + eps) * w, w bf16 | f32 [H]; an f32 out may alias x.
// A bf16 out stores the same f32 value rounded to nearest even (store_f: convert's rounding), for the GEMM that
// reads h in bf16: the values it sees are those of the f32 out + convert, without the extra pass.
// One block per row. Rows of H = 1024 * V (V <= 8; GLM-4: 4096) take the register form: each thread loads its
// 4 V values once with 16-byte loads (x, o), keeps them in registers for the output, and the row is read once
// instead of twice (a 2048-token chunk's add_rmsnorm took 48 us, ~2x its bytes at the copy rate). The sum of squares is accumulated in f64 like the CPU reference (cheap: H values a row),
// and the output uses the CPU's expression (x * inv) * w, so results agree to the last bit in most rows.
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// No __restrict__ on x/out: they may alias (each element is read before the same thread overwrites it).
template <typename TW, typename TO>
__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(TO* out, const float* x, const TW* __restrict__ w,
                                                           int64_t H, float eps) {
  __shared__ double red[32];
  const int64_t row = blockIdx.x;
  const float* xr = x + row * H;
  TO* yr = out + row * H;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) {
    const double v = xr[i];
    ss += v * v;
  }
  ss = block_reduce(ss, red, SumOp{});
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(H) + static_cast<double>(eps)));
  for (int64_t i = threadIdx.x; i < H; i += kThreads) store_f(yr, i, xr[i] * inv * load_f(w, i));
}

// add(x, x, o) + rmsnorm(out, x, w) in one launch. Each thread forms and stores the sums of exactly the elements
// it then squares (same i, same order as rmsnorm_kernel's loop), so the f64 sum of squares, its reduction and the
// output are bit-identical to the two kernels in sequence. Every element of x is written and re-read by the
// same thread, so out may alias x or o (no __restrict__).
template <typename TW, typename TO>
__global__ void __launch_bounds__(kThreads) add_rmsnorm_kernel(TO* out, float* x, const float* o,
                                                               const TW* __restrict__ w, int64_t H, float eps) {
  __shared__ double red[32];
  const int64_t row = blockIdx.x;
  float* xr = x + row * H;
  const float* orow = o + row * H;
  TO* yr = out + row * H;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < H; i += kThreads) {
    const float s = __fadd_rn(xr[i], orow[i]);
    xr[i] = s;
    const double v = s;
    ss += v * v;
  }
  ss = block_reduce(ss, red, SumOp{});
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(H) + static_cast<double>(eps)));
  for (int64_t i = threadIdx.x; i < H; i += kThreads) store_f(yr, i, xr[i] * inv * load_f(w, i));
}

// The instantiated pairs: weight {bf16, f32} x out {f32, bf16}.
// The register form (H == 4 * kThreads * V): thread t owns the float4s t, t + kThreads, ... of the row.
template <typename TW, typename TO, int V, bool ADD>
__global__ void __launch_bounds__(kThreads) rmsnorm_vec_kernel(TO* out, float* x, const float* o, const TW* __restrict__ w,
                                                               float eps) {
  constexpr int64_t H = 4 * kThreads * V;
  __shared__ double red[32];
  const int64_t row = blockIdx.x;
  float4* xr = reinterpret_cast<float4*>(x + row * H);
  TO* yr = out + row * H;
  float4 v[V];
  double ss = 0.0;
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = xr[j * kThreads + threadIdx.x];
  if constexpr (ADD) {
    const float4* orow = reinterpret_cast<const float4*>(o + row * H);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float4 b = orow[j * kThreads + threadIdx.x];
      v[j].x = __fadd_rn(v[j].x, b.x);
      v[j].y = __fadd_rn(v[j].y, b.y);
      v[j].z = __fadd_rn(v[j].z, b.z);
      v[j].w = __fadd_rn(v[j].w, b.w);
      xr[j * kThreads + threadIdx.x] = v[j];
    }
  }
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const double a = v[j].x, b = v[j].y, c = v[j].z, d = v[j].w;
    ss += a * a;
    ss += b * b;
    ss += c * c;
    ss += d * d;
  }
  ss = block_reduce(ss, red, SumOp{});
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(H) + static_cast<double>(eps)));
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const int64_t i = 4 * (static_cast<int64_t>(j) * kThreads + threadIdx.x);
    store_f(yr, i, v[j].x * inv * load_f(w, i));
    store_f(yr, i + 1, v[j].y * inv * load_f(w, i + 1));
    store_f(yr, i + 2, v[j].z * inv * load_f(w, i + 2));
    store_f(yr, i + 3, v[j].w * inv * load_f(w, i + 3));
  }
}

// V of the register form for a row of H (0: the plain kernels), with the 16-byte alignment it needs.
int vec_of(int64_t H, const void* a, const void* b) {
  if (H % (4 * kThreads) != 0) return 0;
  const int64_t v = H / (4 * kThreads);
  if (v != 1 && v != 2 && v != 4 && v != 8) return 0;
  if ((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(b)) & 15) return 0;
  return static_cast<int>(v);
}

template <typename TW, typename TO, bool ADD>
bool launch_vec(cudaStream_t st, unsigned blocks, TO* out, float* x, const float* o, const TW* w, int64_t H, float eps) {
  switch (vec_of(H, x, ADD ? static_cast<const void*>(o) : static_cast<const void*>(x))) {
    case 1: rmsnorm_vec_kernel<TW, TO, 1, ADD><<<blocks, kThreads, 0, st>>>(out, x, o, w, eps); return true;
    case 2: rmsnorm_vec_kernel<TW, TO, 2, ADD><<<blocks, kThreads, 0, st>>>(out, x, o, w, eps); return true;
    case 4: rmsnorm_vec_kernel<TW, TO, 4, ADD><<<blocks, kThreads, 0, st>>>(out, x, o, w, eps); return true;
    case 8: rmsnorm_vec_kernel<TW, TO, 8, ADD><<<blocks, kThreads, 0, st>>>(out, x, o, w, eps); return true;
    default: return false;
  }
}

template <typename TO>
void launch_add_rmsnorm(cudaStream_t st, unsigned blocks, const Tensor& out, const Tensor& x, const Tensor& o,
                        const Tensor& w, int64_t H, float eps) {
  if (w.dtype() == DType::BF16 ? launch_vec<Bf16, TO, true>(st, blocks, out.data<TO>(), x.data<float>(), o.data<float>(), w.data<Bf16>(), H, eps)
                               : launch_vec<float, TO, true>(st, blocks, out.data<TO>(), x.data<float>(), o.data<float>(), w.data<float>(), H, eps))
    return;
  if (w.dtype() == DType::BF16)
    add_rmsnorm_kernel<Bf16, TO><<<blocks, kThreads, 0, st>>>(out.data<TO>(), x.data<float>(), o.data<float>(), w.data<Bf16>(), H, eps);
  else
    add_rmsnorm_kernel<float, TO><<<blocks, kThreads, 0, st>>>(out.data<TO>(), x.data<float>(), o.data<float>(), w.data<float>(), H, eps);
}
template <typename TO>
void launch_rmsnorm(cudaStream_t st, unsigned blocks, const Tensor& out, const Tensor& x, const Tensor& w, int64_t H,
                    float eps) {
  // rmsnorm's x is read-only (the kernel's x parameter is written only when ADD)
  float* xw = const_cast<float*>(x.data<float>());
  if (w.dtype() == DType::BF16 ? launch_vec<Bf16, TO, false>(st, blocks, out.data<TO>(), xw, nullptr, w.data<Bf16>(), H, eps)
                               : launch_vec<float, TO, false>(st, blocks, out.data<TO>(), xw, nullptr, w.data<float>(), H, eps))
    return;
  if (w.dtype() == DType::BF16)
    rmsnorm_kernel<Bf16, TO><<<blocks, kThreads, 0, st>>>(out.data<TO>(), x.data<float>(), w.data<Bf16>(), H, eps);
  else
    rmsnorm_kernel<float, TO><<<blocks, kThreads, 0, st>>>(out.data<TO>(), x.data<float>(), w.data<float>(), H, eps);
}

}  // namespace

void add_rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& o, const Tensor& w, float eps) {
  const int64_t T = x.dim(0), H = x.dim(1);
  if (T == 0 || H == 0) return;
  GLM4_CHECK(T < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "add_rmsnorm: ", T, " rows is too many for one call");
  const unsigned blocks = static_cast<unsigned>(T);
  if (out.dtype() == DType::BF16) launch_add_rmsnorm<Bf16>(stream_of(c), blocks, out, x, o, w, H, eps);
  else launch_add_rmsnorm<float>(stream_of(c), blocks, out, x, o, w, H, eps);
  CUDA_CHECK_LAUNCH("add_rmsnorm");
}

void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t T = x.dim(0), H = x.dim(1);
  if (T == 0 || H == 0) return;
  GLM4_CHECK(T < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "rmsnorm: ", T, " rows is too many for one call");
  const unsigned blocks = static_cast<unsigned>(T);
  if (out.dtype() == DType::BF16) launch_rmsnorm<Bf16>(stream_of(c), blocks, out, x, w, H, eps);
  else launch_rmsnorm<float>(stream_of(c), blocks, out, x, w, H, eps);
  CUDA_CHECK_LAUNCH("rmsnorm");
}

}  // namespace cuda
}  // namespace glm4
