// RMSNorm on CUDA: out f32|bf16 [T,H] = x / sqrt(mean(x^2) + eps) * w, w bf16 | f32 [H]; an f32 out may alias x.
// A bf16 out stores the same f32 value rounded to nearest even (store_f: convert's rounding), for the GEMM that
// reads h in bf16: the values it sees are those of the f32 out + convert, without the extra pass.
// One block per row. Rows of H = 1024 * V (V <= 8; GLM-4: 4096) take the register form: each thread loads its
// 4 V values once with 16-byte loads (x, o), keeps them in registers for the output, and the row is read once
// instead of twice (a 2048-token chunk's add_rmsnorm took 48 us, ~2x its bytes at the copy rate). The sum of squares is accumulated in f64 like the CPU reference (cheap: H values a row),
// and the output uses the CPU's expression (x * inv) * w, so results agree to the last bit in most rows.
#include <type_traits>

#include "elt_kernels.cuh"
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

// The register form (H = 1024 V, 16-byte aligned x and o): elt_kernels.cuh's v2 (weights before
// griddepcontrol.wait, vector stores, PDL) where its alignment holds, v1 under GLM4_ELT_OLD=rmsnorm. Both give the
// same bits. The instantiated pairs: weight {bf16, f32} x out {f32, bf16}.
template <typename TW, typename TO, bool ADD>
bool launch_vec(cudaStream_t st, unsigned blocks, TO* out, float* x, const float* o, const TW* w, int64_t H, float eps) {
  const int V = elt::rmsnorm_vec_of(H, x, ADD ? static_cast<const void*>(o) : static_cast<const void*>(x));
  if (V == 0) return false;
  const bool v2 = !elt::elt_old("rmsnorm") &&
                  elt::rmsnorm_v2_aligned(out, std::is_same_v<TO, float>, w, std::is_same_v<TW, float>);
  CUDA_CHECK((elt::launch_rmsnorm_vec<TW, TO, ADD>(V, v2, v2 && elt::elt_pdl(), st, blocks, out, x, o, w, eps)));
  return true;
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
