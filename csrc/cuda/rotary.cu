// GLM-4 rotary embedding on CUDA, in place on x f32[T, heads, D]: interleaved pairs (x[2i], x[2i+1]) of the first
// rot_dim dims of every head are rotated by pos[t] * theta^(-2i/rot_dim). Positions are read on the device.
// One thread per (t, head, pair). The angle is computed like the CPU (inv_freq in f64 rounded to f32, then an f32
// product) and the rotation uses explicitly rounded products (no FMA contraction), so the only difference from
// the CPU is the last-ulp behaviour of sincosf against the host libm.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "elt_kernels.cuh"
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

using elt::fill_inv_freq;
using elt::inv_freq_of;
using elt::kInvFreqTable;

// Programmatic dependent launch (sm_90; dattn, issue 12: 40 of these a decode token, each a launch's worth of
// latency plus the f64 pow of the inv_freq table): the fused kernels are launched with the PDL attribute, fill their
// inv_freq table (a function of the arguments alone) BEFORE griddepcontrol.wait, so the pow overlaps the tail of the
// kernel before (the qkv GEMV, which triggers its dependents early), then wait (every read of q/k/v/pos/rows and every
// write comes after it) and trigger their own dependents (the attention split kernel, which waits in turn).
// GLM4_ROTARY_PDL=0 (or GLM4_ELT_PDL=0) launches them plainly (read once a process).
__device__ __forceinline__ void rot_pdl_wait_trigger() {
  elt::pdl_wait();
  elt::pdl_trigger();
}
bool rotary_pdl() {
  static const bool on = [] {
    const char* e = std::getenv("GLM4_ROTARY_PDL");
    if (e && std::strcmp(e, "0") == 0) return false;
    return elt::elt_pdl();
  }();
  return on;
}
template <typename K, typename... A>
void launch_rot(K kernel, dim3 grid, cudaStream_t st, A... args) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = dim3(256, 1, 1);
  lc.dynamicSmemBytes = 0;
  lc.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = at;
  lc.numAttrs = rotary_pdl() ? 1 : 0;
  CUDA_CHECK(cudaLaunchKernelEx(&lc, kernel, args...));
}

// rotary(q) + rotary(k) + kv_write(k, v) in one launch: one thread per (t, head slot, element pair), the head
// slots being the Hq query heads, then the Hkv key heads, then the Hkv value heads. A pair below rot_dim of a
// q or k head is rotated with rotary_kernel's exact expressions and written back in place; k and v pairs are then
// stored to cache row rows[t] (skipped outside [0, S), like kv_write_kernel), from the rotated registers, so the
// cache holds what kv_write would read from k after rotary. D may be odd (the last pair is a single element).
// Grid as rotary_kv_write_qkv_kernel's: blockIdx.y = token t0 + y, x over its items with 32-bit indices.
template <typename KV>
__global__ void __launch_bounds__(256)
    rotary_kv_write_kernel(float* __restrict__ q, float* __restrict__ k, const float* __restrict__ v, KV* __restrict__ kc,
                           KV* __restrict__ vc, const int32_t* __restrict__ pos, const int32_t* __restrict__ rows,
                           int Hq, int Hkv, int D, int pairs, int half, int64_t rot_dim, float theta, int64_t S,
                           int64_t t0) {
  __shared__ float inv_tab[kInvFreqTable];
  const bool tab = fill_inv_freq(inv_tab, half, rot_dim, theta);
  rot_pdl_wait_trigger();
  const int slots = Hq + 2 * Hkv, n = slots * pairs;
  const int64_t t = t0 + blockIdx.y;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int h = i / pairs, j = i - h * pairs;
    const int e = 2 * j;
    const bool two = e + 1 < D;
    float* rot = nullptr;  // q or k: rotated in place
    const float* src;
    int kvh = -1;          // KV head for the cache write (k or v)
    bool is_k = false;
    if (h < Hq) {
      rot = q + (t * Hq + h) * D + e;
      src = rot;
    } else if (h < Hq + Hkv) {
      kvh = h - Hq;
      is_k = true;
      rot = k + (t * Hkv + kvh) * D + e;
      src = rot;
    } else {
      kvh = h - Hq - Hkv;
      src = v + (t * Hkv + kvh) * D + e;
    }
    float x0 = src[0], x1 = two ? src[1] : 0.f;
    if (rot != nullptr && j < half) {  // j < half: e + 1 < rot_dim <= D, so both elements exist
      const float inv_freq = tab ? inv_tab[j] : inv_freq_of(j, rot_dim, theta);
      const float a = static_cast<float>(pos[t]) * inv_freq;
      float sn, cs;
      sincosf(a, &sn, &cs);
      const float y0 = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
      const float y1 = __fadd_rn(__fmul_rn(x1, cs), __fmul_rn(x0, sn));
      rot[0] = y0;
      rot[1] = y1;
      x0 = y0;
      x1 = y1;
    }
    if (kvh >= 0) {
      const int64_t r = rows[t];
      if (r < 0 || r >= S) continue;  // outside the cache: never write out of bounds
      KV* dst = (is_k ? kc : vc) + (r * Hkv + kvh) * D + e;
      store_f(dst, 0, x0);
      if (two) store_f(dst, 1, x1);
    }
  }
}

}  // namespace

namespace {
// qkv f32 or bf16 (TI), cache f32 or bf16 (KV): v2 with `items` groups a thread, or v1.
template <typename TI, typename KV>
void launch_qkv(cudaStream_t st, bool v2, int items, float* q, const TI* qkv, KV* kc, KV* vc, const int32_t* pos,
                const int32_t* rows, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t rot_dim, float theta, int64_t S) {
  const int64_t pairs = (D + 1) / 2, half = rot_dim / 2;
  if (v2) {
    const int n4 = static_cast<int>((Hq + 2 * Hkv) * D / 4);
    const dim3 block(static_cast<unsigned>(elt::rotary_v2_threads(n4, items)));
    auto kernel = items == 2 ? elt::rotary_qkv_v2_kernel<TI, KV, 2> : elt::rotary_qkv_v2_kernel<TI, KV, elt::kRotItems>;
    for (int64_t t0 = 0; t0 < T; t0 += int64_t{1} << 30) {  // grid.x <= 2^31 - 1 tokens a launch
      const dim3 grid(static_cast<unsigned>(std::min<int64_t>(T - t0, int64_t{1} << 30)));
      CUDA_CHECK(elt::launch(kernel, grid, block, st, rotary_pdl(), q, qkv, kc, vc, pos, rows, static_cast<int>(Hq),
                             static_cast<int>(Hkv), static_cast<int>(D), static_cast<int>(half), rot_dim, theta, S, t0));
    }
    return;
  }
  const int64_t n = (Hq + 2 * Hkv) * pairs;
  const unsigned bx = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024));
  for (int64_t t0 = 0; t0 < T; t0 += 65535) {  // grid.y <= 65535 tokens a launch
    const dim3 grid(bx, static_cast<unsigned>(std::min<int64_t>(T - t0, 65535)));
    launch_rot(elt::rotary_qkv_v1_kernel<TI, KV>, grid, st, q, qkv, kc, vc, pos, rows, static_cast<int>(Hq),
               static_cast<int>(Hkv), static_cast<int>(D), static_cast<int>(pairs), static_cast<int>(half), rot_dim, theta,
               S, t0);
  }
}
}  // namespace

// v2 (elt_kernels.cuh: one block a token, 4 values a load, sin/cos once a (token, pair); 2 groups a thread up to 256
// tokens, 4 above) where it applies: D % 4 == 0, rot_dim / 2 <= 256, aligned rows; v1 otherwise and under
// GLM4_ELT_OLD=rotary. Bit-identical either way. qkv f32 or bf16 (the bf16 GEMM output at T > 8: half the read).
void rotary_kv_write_qkv(Context& c, const Tensor& q, const Tensor& qkv, const Tensor& kc, const Tensor& vc,
                         const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = kc.dim(1), S = kc.dim(0);
  const int64_t pairs = (D + 1) / 2, half = rot_dim / 2;
  const int64_t n = (Hq + 2 * Hkv) * pairs;  // items a token
  if (T == 0 || n == 0) return;
  GLM4_CHECK(n < (int64_t{1} << 30) && D < (int64_t{1} << 30), GLM4_E_UNSUPPORTED, "rotary_kv_write_qkv: ", Hq, " + 2 x ",
             Hkv, " heads of ", D, " is too many for one token's 32-bit indices");
  cudaStream_t st = stream_of(c);
  const bool kv32 = kc.dtype() != DType::BF16, in32 = qkv.dtype() != DType::BF16;
  float* qp = q.data<float>();
  const int32_t* pp = static_cast<const int32_t*>(pos.data<int32_t>());
  const int32_t* rp = static_cast<const int32_t*>(rows.data<int32_t>());
  const bool v2 = !elt::elt_old("rotary") && elt::rotary_v2_ok(D, half, qp, qkv.raw(), kc.raw(), vc.raw(), kv32, in32);
  const int items = elt::rotary_v2_items(T);
  if (in32) {
    const float* src = static_cast<const float*>(qkv.data<float>());
    if (kv32) launch_qkv(st, v2, items, qp, src, kc.data<float>(), vc.data<float>(), pp, rp, T, Hq, Hkv, D, rot_dim, theta, S);
    else launch_qkv(st, v2, items, qp, src, kc.data<Bf16>(), vc.data<Bf16>(), pp, rp, T, Hq, Hkv, D, rot_dim, theta, S);
  } else {
    const Bf16* src = static_cast<const Bf16*>(qkv.data<Bf16>());
    if (kv32) launch_qkv(st, v2, items, qp, src, kc.data<float>(), vc.data<float>(), pp, rp, T, Hq, Hkv, D, rot_dim, theta, S);
    else launch_qkv(st, v2, items, qp, src, kc.data<Bf16>(), vc.data<Bf16>(), pp, rp, T, Hq, Hkv, D, rot_dim, theta, S);
  }
  CUDA_CHECK_LAUNCH("rotary_kv_write_qkv");
}

void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc, const Tensor& vc,
                     const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = k.dim(1), S = kc.dim(0);
  const int64_t pairs = (D + 1) / 2, half = rot_dim / 2;
  const int64_t n = (Hq + 2 * Hkv) * pairs;  // items a token
  if (T == 0 || n == 0) return;
  GLM4_CHECK(n < (int64_t{1} << 30) && D < (int64_t{1} << 30), GLM4_E_UNSUPPORTED, "rotary_kv_write: ", Hq, " + 2 x ", Hkv,
             " heads of ", D, " is too many for one token's 32-bit indices");
  const unsigned bx = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024));
  cudaStream_t st = stream_of(c);
  for (int64_t t0 = 0; t0 < T; t0 += 65535) {  // grid.y <= 65535 tokens a launch
    const dim3 grid(bx, static_cast<unsigned>(std::min<int64_t>(T - t0, 65535)));
    if (kc.dtype() == DType::BF16)
      launch_rot(rotary_kv_write_kernel<Bf16>, grid, st, q.data<float>(), k.data<float>(), static_cast<const float*>(v.data<float>()),
                 kc.data<Bf16>(), vc.data<Bf16>(), static_cast<const int32_t*>(pos.data<int32_t>()),
                 static_cast<const int32_t*>(rows.data<int32_t>()), static_cast<int>(Hq), static_cast<int>(Hkv),
                 static_cast<int>(D), static_cast<int>(pairs), static_cast<int>(half), rot_dim, theta, S, t0);
    else
      launch_rot(rotary_kv_write_kernel<float>, grid, st, q.data<float>(), k.data<float>(), static_cast<const float*>(v.data<float>()),
                 kc.data<float>(), vc.data<float>(), static_cast<const int32_t*>(pos.data<int32_t>()),
                 static_cast<const int32_t*>(rows.data<int32_t>()), static_cast<int>(Hq), static_cast<int>(Hkv),
                 static_cast<int>(D), static_cast<int>(pairs), static_cast<int>(half), rot_dim, theta, S, t0);
  }
  CUDA_CHECK_LAUNCH("rotary_kv_write");
}

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
