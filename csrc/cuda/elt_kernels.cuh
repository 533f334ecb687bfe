// The small ops of a layer between the GEMMs (issues 13 and 14): rotary_kv_write_qkv, rmsnorm / add_rmsnorm in
// their register form, swiglu. Each in two versions:
//   v1: the kernels as they were (run12's profile: 53.9 / 33.5 / 64.6 us at T = 2048, 4.2 / 5.0 / 3.8 us at T = 64);
//   v2: 16-byte loads and stores, several in flight a thread, the per-row constants (rmsnorm's weights, rotary's
//       inv_freq) read before griddepcontrol.wait, sin/cos once a (token, pair) instead of once a head, swiglu on a
//       bf16 gate_up. Same arithmetic as v1 element for element (bit-identical outputs; the op cases and
//       bench/kernels/elt_bench.cu check it).
// Included by rotary.cu, rmsnorm.cu, elementwise.cu (the ops) and by bench/kernels/elt_bench.cu (the harness), so the
// harness times exactly the kernels the ops run.
//
// Programmatic dependent launch (sm_90): every kernel here starts with its constant prologue, then
// griddepcontrol.wait (every read of an activation and every write comes after it: the previous kernel in the stream
// has completed and flushed), then griddepcontrol.launch_dependents at once, so that a PDL-launched successor (the
// GEMV v3, the attention split kernel, the next small op) can be scheduled and run its own prologue while this grid
// streams. On other archs and without the launch attribute both instructions are no-ops.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace elt {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// A launch with the PDL attribute when `pdl` (cudaLaunchKernelEx; legal during stream capture: the graph gets a
// programmatic edge). Returns the launch's error (the callers check it their way: CUDA_CHECK or the harness's).
template <typename... P, typename... A>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t st, bool pdl, A... args) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = 0;
  lc.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = at;
  lc.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&lc, kernel, static_cast<P>(args)...);
}

// The switches, read once a process (host):
//   GLM4_ELT_OLD=rotary,rmsnorm,swiglu (any of them, or "all"): that op runs its v1 kernels, launched as before (the
//     rotary ones with PDL unless GLM4_ROTARY_PDL=0, the others plainly), for A/B in one process;
//   GLM4_ELT_PDL=0: the v2 kernels launched without the PDL attribute (GLM4_ROTARY_PDL=0 does the same for rotary).
// PDL is used on sm_90 and later only.
inline bool elt_old(const char* op) {
  static const std::string list = [] {
    const char* e = std::getenv("GLM4_ELT_OLD");
    return std::string(",") + (e ? e : "") + ",";
  }();
  return list.find(",all,") != std::string::npos || list.find(",1,") != std::string::npos ||
         list.find(std::string(",") + op + ",") != std::string::npos;
}
inline bool elt_pdl() {
  static const bool on = [] {
    const char* e = std::getenv("GLM4_ELT_PDL");
    if (e && std::strcmp(e, "0") == 0) return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

// =============================================================================================== rotary_kv_write_qkv
// inv_freq = theta^(-2j/rot_dim), the f64 pow rounded to f32 (rotary_kernel's expression in rotary.cu). The fused
// kernels compute it once a block into shared memory when half <= kInvFreqTable (the same value, bit for bit) instead
// of once a thread: the f64 pow dominated rotary_kv_write (66 us for T = 2048 on the H200 against ~18 us of traffic).
constexpr int kInvFreqTable = 256;
__device__ __forceinline__ float inv_freq_of(int64_t j, int64_t rot_dim, float theta) {
  return static_cast<float>(1.0 / pow(static_cast<double>(theta), 2.0 * static_cast<double>(j) / static_cast<double>(rot_dim)));
}
__device__ __forceinline__ bool fill_inv_freq(float* tab, int64_t half, int64_t rot_dim, float theta) {
  const bool use = half <= kInvFreqTable;
  if (use)
    for (int64_t j = threadIdx.x; j < half; j += blockDim.x) tab[j] = inv_freq_of(j, rot_dim, theta);
  __syncthreads();
  return use;
}
// The rotation of one pair, with explicitly rounded products (no FMA contraction): the CPU's expression.
__device__ __forceinline__ void rotate_pair(float& x0, float& x1, float sn, float cs) {
  const float y0 = __fsub_rn(__fmul_rn(x0, cs), __fmul_rn(x1, sn));
  const float y1 = __fadd_rn(__fmul_rn(x1, cs), __fmul_rn(x0, sn));
  x0 = y0;
  x1 = y1;
}

// v1: rotary_kv_write_kernel (rotary.cu) on q, k, v read out of one packed QKV row qkv[t] = [q heads | k heads | v
// heads] (row stride W = (Hq + 2 Hkv) D; f32, or bf16 widened exactly: the f32 op on the widened copy, bit for bit):
// the rotated q goes to q (contiguous [T, Hq, D], what attention reads), the rotated k and v only to the cache. One thread per (slot, pair) of a token, blockIdx.y = token t0 + y, x strides over
// the token's items with 32-bit indices; sincosf per (head, pair); scalar loads and stores (D may be odd).
__device__ __forceinline__ float load_qkv(const float* p, int i) { return p[i]; }
__device__ __forceinline__ float load_qkv(const Bf16* p, int i) { return bf16_bits_to_f(p[i].v); }
template <typename TI, typename KV>
__global__ void __launch_bounds__(256)
    rotary_qkv_v1_kernel(float* __restrict__ q, const TI* __restrict__ qkv, KV* __restrict__ kc, KV* __restrict__ vc,
                         const int32_t* __restrict__ pos, const int32_t* __restrict__ rows, int Hq, int Hkv, int D,
                         int pairs, int half, int64_t rot_dim, float theta, int64_t S, int64_t t0) {
  __shared__ float inv_tab[kInvFreqTable];
  const bool tab = fill_inv_freq(inv_tab, half, rot_dim, theta);
  pdl_wait();
  pdl_trigger();
  const int slots = Hq + 2 * Hkv, n = slots * pairs;
  const int64_t t = t0 + blockIdx.y;
  const TI* src_row = qkv + t * static_cast<int64_t>(slots) * D;
  const int32_t p = pos[t];
  const int64_t r = rows[t];
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const int h = i / pairs, j = i - h * pairs;
    const int e = 2 * j;
    const bool two = e + 1 < D;
    const TI* src = src_row + h * D + e;
    float x0 = load_qkv(src, 0), x1 = two ? load_qkv(src, 1) : 0.f;
    const bool is_v = h >= Hq + Hkv;
    if (!is_v && j < half) {
      const float inv_freq = tab ? inv_tab[j] : inv_freq_of(j, rot_dim, theta);
      const float a = static_cast<float>(p) * inv_freq;
      float sn, cs;
      sincosf(a, &sn, &cs);
      rotate_pair(x0, x1, sn, cs);
    }
    if (h < Hq) {
      float* dst = q + (t * Hq + h) * D + e;
      dst[0] = x0;
      if (two) dst[1] = x1;
    } else {
      const int kvh = is_v ? h - Hq - Hkv : h - Hq;
      if (r < 0 || r >= S) continue;  // outside the cache: never write out of bounds
      KV* dst = (is_v ? vc : kc) + (r * Hkv + kvh) * D + e;
      store_f(dst, 0, x0);
      if (two) store_f(dst, 1, x1);
    }
  }
}

// v2: one block a token, thread i of the token's W / 4 float4s (ITEMS a thread, all loads issued before any use:
// ITEMS x 16 bytes in flight a thread). Needs D % 4 == 0 (a float4 never straddles two heads), half <= kInvFreqTable,
// qkv and q 16-byte aligned, the caches 16 (f32) or 8 (bf16) bytes. sin/cos of pair j of the token: thread j
// computes inv_freq[j] before griddepcontrol.wait (a function of the arguments), then (sin, cos)(pos[t] * inv_freq[j])
// after it, into shared memory, once for the token's Hq + Hkv rotated heads (v1: once a head). The same f32 angle and
// sincosf, the same rounded products as v1: q and the cache rows are v1's bit for bit. A float4 holds pairs j0 and
// j0 + 1; each is rotated iff below half (rot_dim % 4 == 2 rotates the first pair of the last float4 only).
template <typename KV>
__device__ __forceinline__ void store4(KV* dst, float4 v) {
  if constexpr (std::is_same_v<KV, float>) {
    *reinterpret_cast<float4*>(dst) = v;
  } else {
    const uint32_t lo = static_cast<uint32_t>(f_to_bf16_bits(v.x)) | (static_cast<uint32_t>(f_to_bf16_bits(v.y)) << 16);
    const uint32_t hi = static_cast<uint32_t>(f_to_bf16_bits(v.z)) | (static_cast<uint32_t>(f_to_bf16_bits(v.w)) << 16);
    *reinterpret_cast<uint2*>(dst) = make_uint2(lo, hi);
  }
}
constexpr int kRotItems = 4;
// Four consecutive qkv values as floats: one 16-byte (f32) or 8-byte (bf16, widened exactly) load, streaming.
__device__ __forceinline__ float4 load_qkv4(const float* p, int64_t i) { return __ldcs(reinterpret_cast<const float4*>(p) + i); }
__device__ __forceinline__ float4 load_qkv4(const Bf16* p, int64_t i) {
  const uint2 u = __ldcs(reinterpret_cast<const uint2*>(p) + i);
  return make_float4(bf16lo(u.x), bf16hi(u.x), bf16lo(u.y), bf16hi(u.y));
}
template <typename TI, typename KV, int ITEMS>
__global__ void __launch_bounds__(1024)
    rotary_qkv_v2_kernel(float* __restrict__ q, const TI* __restrict__ qkv, KV* __restrict__ kc, KV* __restrict__ vc,
                         const int32_t* __restrict__ pos, const int32_t* __restrict__ rows, int Hq, int Hkv, int D,
                         int half, int64_t rot_dim, float theta, int64_t S, int64_t t0) {
  __shared__ float inv_tab[kInvFreqTable];
  __shared__ float2 sc[kInvFreqTable];  // (sin, cos) of pair j at this token's position
  const int tid = threadIdx.x, bd = blockDim.x;
  for (int j = tid; j < half; j += bd) inv_tab[j] = inv_freq_of(j, rot_dim, theta);  // read back by the same thread
  pdl_wait();
  pdl_trigger();
  const int D4 = D >> 2, n4 = (Hq + 2 * Hkv) * D4, nq4 = Hq * D4, nk4 = (Hq + Hkv) * D4;
  const int64_t t = t0 + blockIdx.x;
  const int64_t src0 = t * n4;  // the token's first group of 4 values
  float4* qd = reinterpret_cast<float4*>(q) + t * nq4;
  float4 v[ITEMS];
  auto load = [&](int base) {
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int i = base + k * bd + tid;
      if (i < n4) v[k] = load_qkv4(qkv, src0 + i);  // read once: streaming
    }
  };
  load(0);
  const int32_t p = pos[t];
  const int64_t r = rows[t];
  for (int j = tid; j < half; j += bd) {
    float sn, cs;
    sincosf(static_cast<float>(p) * inv_tab[j], &sn, &cs);
    sc[j] = make_float2(sn, cs);
  }
  __syncthreads();
  const bool row_ok = r >= 0 && r < S;  // outside the cache: never write out of bounds
  for (int base = 0; base < n4; base += ITEMS * bd) {
    if (base > 0) load(base);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int i = base + k * bd + tid;
      if (i >= n4) continue;
      float4 x = v[k];
      const int h = i / D4, e = (i - h * D4) << 2, j0 = e >> 1;
      if (i < nk4) {  // q or k head: rotate the pairs below half
        if (j0 < half) {
          const float2 a = sc[j0];
          rotate_pair(x.x, x.y, a.x, a.y);
        }
        if (j0 + 1 < half) {
          const float2 a = sc[j0 + 1];
          rotate_pair(x.z, x.w, a.x, a.y);
        }
      }
      if (i < nq4) {
        qd[i] = x;
      } else if (row_ok) {
        const bool is_v = i >= nk4;
        const int kvh = h - Hq - (is_v ? Hkv : 0);
        store4((is_v ? vc : kc) + (r * Hkv + kvh) * D + e, x);
      }
    }
  }
}
// Threads a token for v2 (W / 4 groups of 4 values, `items` each, whole warps; the kernel loops when the token needs
// more). Items a thread by T (run14, H200, GLM-4 rows, bf16 cache, us in a graph): T = 2048: 2 / 4 / 8 a thread 27.6 /
// 20.9 / 20.8 (4: enough bytes in flight at ~4 blocks an SM); T = 64: 1.69 / 1.97 / 2.91, T = 32: 1.59 / 1.92 / 2.83
// (2: twice the threads, half the serial loads a thread, when the grid is a fraction of the GPU). Same bits either way.
constexpr int kRotItemsSmallT = 2, kRotSmallT = 256;
inline int rotary_v2_items(int64_t T) { return T <= kRotSmallT ? kRotItemsSmallT : kRotItems; }
inline int rotary_v2_threads(int n4, int items = kRotItems) {
  const int want = (n4 + items - 1) / items;
  return std::min(1024, std::max(32, (want + 31) / 32 * 32));
}
// qkv: 16-byte (f32) or 8-byte (bf16) aligned rows (D % 4 == 0 makes every row start so when the base is).
inline bool rotary_v2_ok(int64_t D, int64_t half, const void* q, const void* qkv, const void* kc, const void* vc,
                         bool kv_f32, bool qkv_f32 = true) {
  const uintptr_t kvmask = kv_f32 ? 15u : 7u, inmask = qkv_f32 ? 15u : 7u;
  return D % 4 == 0 && half <= kInvFreqTable && aligned16(q) && (reinterpret_cast<uintptr_t>(qkv) & inmask) == 0 &&
         ((reinterpret_cast<uintptr_t>(kc) | reinterpret_cast<uintptr_t>(vc)) & kvmask) == 0;
}

// =============================================================================================== rmsnorm
// out f32|bf16 [T,H] = x / sqrt(mean(x^2) + eps) * w (ADD: x += o first, the sum stored). One block of kThreads a row,
// the register form: H == 4 * kThreads * V, thread t owns the float4s t, t + kThreads, ... of the row. The sum of
// squares in f64 like the CPU, summed in the same element order and reduced the same way by v1 and v2 (bit-identical
// outputs); the output is the CPU's expression (x * inv) * w. No __restrict__ on out / x / o: an f32 out may alias
// x or o (each element is read before the same thread overwrites it).
constexpr int kNormThreads = 256;

template <typename TW, typename TO, int V, bool ADD>
__global__ void __launch_bounds__(kNormThreads) rmsnorm_v1_kernel(TO* out, float* x, const float* o,
                                                                  const TW* __restrict__ w, float eps) {
  constexpr int64_t H = 4 * kNormThreads * V;
  __shared__ double red[32];
  const int64_t row = blockIdx.x;
  float4* xr = reinterpret_cast<float4*>(x + row * H);
  TO* yr = out + row * H;
  float4 v[V];
  double ss = 0.0;
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = xr[j * kNormThreads + threadIdx.x];
  if constexpr (ADD) {
    const float4* orow = reinterpret_cast<const float4*>(o + row * H);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float4 b = orow[j * kNormThreads + threadIdx.x];
      v[j].x = __fadd_rn(v[j].x, b.x);
      v[j].y = __fadd_rn(v[j].y, b.y);
      v[j].z = __fadd_rn(v[j].z, b.z);
      v[j].w = __fadd_rn(v[j].w, b.w);
      xr[j * kNormThreads + threadIdx.x] = v[j];
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
    const int64_t i = 4 * (static_cast<int64_t>(j) * kNormThreads + threadIdx.x);
    store_f(yr, i, v[j].x * inv * load_f(w, i));
    store_f(yr, i + 1, v[j].y * inv * load_f(w, i + 1));
    store_f(yr, i + 2, v[j].z * inv * load_f(w, i + 2));
    store_f(yr, i + 3, v[j].w * inv * load_f(w, i + 3));
  }
}

// Four weights as floats from one 16-byte (f32) or 8-byte (bf16) load.
__device__ __forceinline__ float4 load_w4(const float* w, int64_t i) { return __ldg(reinterpret_cast<const float4*>(w + i)); }
__device__ __forceinline__ float4 load_w4(const Bf16* w, int64_t i) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(w + i));
  return make_float4(bf16lo(u.x), bf16hi(u.x), bf16lo(u.y), bf16hi(u.y));
}
template <typename TO>
__device__ __forceinline__ void store_out4(TO* y, int64_t i, float4 r) {
  if constexpr (std::is_same_v<TO, float>) {
    *reinterpret_cast<float4*>(y + i) = r;
  } else {
    const uint32_t lo = static_cast<uint32_t>(f_to_bf16_bits(r.x)) | (static_cast<uint32_t>(f_to_bf16_bits(r.y)) << 16);
    const uint32_t hi = static_cast<uint32_t>(f_to_bf16_bits(r.z)) | (static_cast<uint32_t>(f_to_bf16_bits(r.w)) << 16);
    *reinterpret_cast<uint2*>(y + i) = make_uint2(lo, hi);
  }
}

// v2: v1's mapping and arithmetic; the weights (constant through the step) are loaded before griddepcontrol.wait, 16
// or 8 bytes at a time, so they are in registers when the reduction ends (v1 issued 4 V scalar weight loads after
// it: one more L2 round trip on the critical path of a small T); one 16-byte (f32) or 8-byte (bf16) store per float4
// of out (v1: four scalar stores); o read with the streaming hint (read once). Needs x, o, out 16-byte aligned (a
// bf16 out 8) and w 16 (f32) or 8 (bf16).
template <typename TW, typename TO, int V, bool ADD>
__global__ void __launch_bounds__(kNormThreads) rmsnorm_v2_kernel(TO* out, float* x, const float* o,
                                                                  const TW* __restrict__ w, float eps) {
  constexpr int64_t H = 4 * kNormThreads * V;
  __shared__ double red[32];
  float4 wv[V];
#pragma unroll
  for (int j = 0; j < V; ++j) wv[j] = load_w4(w, 4 * (static_cast<int64_t>(j) * kNormThreads + threadIdx.x));
  pdl_wait();
  pdl_trigger();
  const int64_t row = blockIdx.x;
  float4* xr = reinterpret_cast<float4*>(x + row * H);
  TO* yr = out + row * H;
  float4 v[V];
#pragma unroll
  for (int j = 0; j < V; ++j) v[j] = xr[j * kNormThreads + threadIdx.x];
  if constexpr (ADD) {
    const float4* orow = reinterpret_cast<const float4*>(o + row * H);
    float4 b[V];
#pragma unroll
    for (int j = 0; j < V; ++j) b[j] = __ldcs(orow + j * kNormThreads + threadIdx.x);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      v[j].x = __fadd_rn(v[j].x, b[j].x);
      v[j].y = __fadd_rn(v[j].y, b[j].y);
      v[j].z = __fadd_rn(v[j].z, b[j].z);
      v[j].w = __fadd_rn(v[j].w, b[j].w);
      xr[j * kNormThreads + threadIdx.x] = v[j];
    }
  }
  double ss = 0.0;
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
    const int64_t i = 4 * (static_cast<int64_t>(j) * kNormThreads + threadIdx.x);
    store_out4(yr, i, make_float4(v[j].x * inv * wv[j].x, v[j].y * inv * wv[j].y, v[j].z * inv * wv[j].z,
                                  v[j].w * inv * wv[j].w));
  }
}

// V of the register form for a row of H (0: not applicable), with the 16-byte alignment of x and o that v1 needs.
inline int rmsnorm_vec_of(int64_t H, const void* x, const void* o) {
  if (H % (4 * kNormThreads) != 0) return 0;
  const int64_t v = H / (4 * kNormThreads);
  if (v != 1 && v != 2 && v != 4 && v != 8) return 0;
  if ((reinterpret_cast<uintptr_t>(x) | reinterpret_cast<uintptr_t>(o)) & 15) return 0;
  return static_cast<int>(v);
}
// v2's extra alignment: out 16 (f32) / 8 (bf16) bytes, w 16 (f32) / 8 (bf16).
inline bool rmsnorm_v2_aligned(const void* out, bool out_f32, const void* w, bool w_f32) {
  return (reinterpret_cast<uintptr_t>(out) & (out_f32 ? 15u : 7u)) == 0 &&
         (reinterpret_cast<uintptr_t>(w) & (w_f32 ? 15u : 7u)) == 0;
}

// The register-form launch: v2 (pdl as given) or v1 (plain launch, as before). False when H has no register form.
template <typename TW, typename TO, bool ADD>
cudaError_t launch_rmsnorm_vec(int V, bool v2, bool pdl, cudaStream_t st, unsigned rows, TO* out, float* x,
                               const float* o, const TW* w, float eps) {
  const dim3 g(rows), b(kNormThreads);
#define GLM4_NORM_CASE(VV)                                                                   \
  case VV:                                                                                   \
    if (v2) return launch(rmsnorm_v2_kernel<TW, TO, VV, ADD>, g, b, st, pdl, out, x, o, w, eps); \
    rmsnorm_v1_kernel<TW, TO, VV, ADD><<<g, b, 0, st>>>(out, x, o, w, eps);                   \
    return cudaGetLastError();
  switch (V) {
    GLM4_NORM_CASE(1)
    GLM4_NORM_CASE(2)
    GLM4_NORM_CASE(4)
    GLM4_NORM_CASE(8)
    default: return cudaErrorInvalidValue;
  }
#undef GLM4_NORM_CASE
}

// =============================================================================================== swiglu
// out f32|bf16 [M,F] = silu(gu[:, :F]) * gu[:, F:], gu f32 or bf16 [M, 2F] (gate first; bf16 values are converted
// exactly, so a bf16 gu gives what convert + the f32 op give). The expression g / (1 + expf(-g)) * u (IEEE division)
// is the same in every kernel, so every version and vector width agrees bit for bit; a bf16 out is the f32 value
// rounded to nearest even (convert's rounding).
__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }
__device__ __forceinline__ float load_in(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_in(const Bf16* p, int64_t i) { return bf16_bits_to_f(p[i].v); }

// v1: grid.y = rows (no 64-bit division per element), grid.x strides over the row; VEC = 4 (f32 gu only) when
// F % 4 == 0 and the tensors are 16-byte aligned (float4 loads of gate and up), else 1.
template <typename TI, typename TO, int VEC>
__global__ void __launch_bounds__(256) swiglu_v1_kernel(TO* __restrict__ out, const TI* __restrict__ gu, int64_t F) {
  static_assert(VEC == 1 || std::is_same_v<TI, float>, "the float4 form reads f32");
  const int64_t m = blockIdx.y;
  const TI* g = gu + m * 2 * F;
  const TI* u = g + F;
  TO* o = out + m * F;
  const int64_t n = F / VEC;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if constexpr (VEC == 4) {
      // 16-byte loads, and one 16-byte (f32) or 8-byte (bf16) store a thread: four scalar stores at a 16-byte
      // stride held swiglu to ~2.1 TB/s on the H200 (157 us for 2048 x 13696).
      const float4 a = __ldcs(reinterpret_cast<const float4*>(g + 4 * i));  // read once: streaming
      const float4 b = __ldcs(reinterpret_cast<const float4*>(u + 4 * i));
      store_out4(o, 4 * i, make_float4(silu_mul(a.x, b.x), silu_mul(a.y, b.y), silu_mul(a.z, b.z), silu_mul(a.w, b.w)));
    } else {
      store_f(o, i, silu_mul(load_in(g, i), load_in(u, i)));
    }
  }
}

// v2: one flat index over the M x F / VEC vectors (no partly idle block at each row's end; one 32-bit division a
// vector), ITEMS vectors a thread (2, or 1 for small sizes: swiglu_v2_items) with every load issued before the first use; VEC = 4 (f32 gu: float4 of gate and
// of up) or 8 (bf16 gu: 16 bytes = 8 values of each); griddepcontrol.wait first (no constants to read), then the
// trigger. Needs F % VEC == 0, gu and out 16-byte aligned (a bf16 out of VEC 4: 8), M * F / VEC < 2^31.
constexpr int kSwigluItems = 2;
template <typename TI>
struct SwigluVec;
template <>
struct SwigluVec<float> {
  static constexpr int N = 4;
  using Raw = float4;
  static __device__ __forceinline__ void unpack(const float4& r, float* f) { f[0] = r.x; f[1] = r.y; f[2] = r.z; f[3] = r.w; }
};
template <>
struct SwigluVec<Bf16> {
  static constexpr int N = 8;
  using Raw = uint4;
  static __device__ __forceinline__ void unpack(const uint4& r, float* f) {
    f[0] = bf16lo(r.x); f[1] = bf16hi(r.x); f[2] = bf16lo(r.y); f[3] = bf16hi(r.y);
    f[4] = bf16lo(r.z); f[5] = bf16hi(r.z); f[6] = bf16lo(r.w); f[7] = bf16hi(r.w);
  }
};
template <typename TI, typename TO, int ITEMS>
__global__ void __launch_bounds__(256) swiglu_v2_kernel(TO* __restrict__ out, const TI* __restrict__ gu, int F, int nv) {
  using SV = SwigluVec<TI>;
  constexpr int N = SV::N;
  using Raw = typename SV::Raw;
  pdl_wait();
  pdl_trigger();
  const int FV = F / N;  // vectors a row
  Raw a[ITEMS], b[ITEMS];
  const int i0 = blockIdx.x * (ITEMS * 256) + threadIdx.x;
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
    const int i = i0 + k * 256;
    if (i < nv) {
      const int m = i / FV, c = i - m * FV;
      const Raw* g = reinterpret_cast<const Raw*>(gu + static_cast<int64_t>(m) * 2 * F) + c;
      a[k] = __ldcs(g);  // read once: streaming
      b[k] = __ldcs(g + FV);
    }
  }
#pragma unroll
  for (int k = 0; k < ITEMS; ++k) {
    const int i = i0 + k * 256;
    if (i >= nv) continue;
    const int m = i / FV, c = i - m * FV;
    float gf[N], uf[N];
    SV::unpack(a[k], gf);
    SV::unpack(b[k], uf);
    TO* o = out + static_cast<int64_t>(m) * F + static_cast<int64_t>(c) * N;
#pragma unroll
    for (int s = 0; s < N; s += 4)
      store_out4(o, s, make_float4(silu_mul(gf[s], uf[s]), silu_mul(gf[s + 1], uf[s + 1]), silu_mul(gf[s + 2], uf[s + 2]),
                                   silu_mul(gf[s + 3], uf[s + 3])));
  }
}
template <typename TI>
inline bool swiglu_v2_ok(int64_t M, int64_t F, const void* gu, const void* out) {
  constexpr int N = SwigluVec<TI>::N;
  return F > 0 && F % N == 0 && aligned16(gu) && aligned16(out) && M * (F / N) < (int64_t{1} << 31) - 256 * kSwigluItems;
}
// Vectors a thread by size (run14, H200, us in a graph): a bf16 gate_up of 2048 x 13696: 2 / 4 a thread 52.8 / 54.6;
// 64 rows: 2.86 / 3.73, and an f32 one of 64 rows 3.10 against v1's 2.72 with 1 a thread and twice the blocks: below
// ~1M vectors (a few MB) the grid is a fraction of the GPU and the shorter chain a thread wins, so 1 there.
constexpr int kSwigluSmall = 1 << 20;
inline int swiglu_v2_items(int64_t nv) { return nv <= kSwigluSmall ? 1 : kSwigluItems; }
template <typename TI, typename TO>
cudaError_t launch_swiglu_v2(cudaStream_t st, bool pdl, TO* out, const TI* gu, int64_t M, int64_t F, int items = 0) {
  const int nv = static_cast<int>(M * (F / SwigluVec<TI>::N));
  if (items == 0) items = swiglu_v2_items(nv);
  const unsigned blocks = static_cast<unsigned>((nv + 256 * items - 1) / (256 * items));
  auto kernel = items == 1 ? swiglu_v2_kernel<TI, TO, 1> : items == 4 ? swiglu_v2_kernel<TI, TO, 4> : swiglu_v2_kernel<TI, TO, kSwigluItems>;
  return launch(kernel, dim3(blocks), dim3(256), st, pdl, out, gu, static_cast<int>(F), nv);
}
// v1 over any shape (grid.y <= 65535 rows a launch).
template <typename TI, typename TO>
cudaError_t launch_swiglu_v1(cudaStream_t st, TO* out, const TI* gu, int64_t M, int64_t F) {
  const bool vec = std::is_same_v<TI, float> && F % 4 == 0 && aligned16(gu) && aligned16(out);
  const int64_t n = vec ? F / 4 : F;
  const unsigned bx = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024));
  for (int64_t m0 = 0; m0 < M; m0 += 65535) {
    const unsigned rows = static_cast<unsigned>(std::min<int64_t>(M - m0, 65535));
    TO* o = out + m0 * F;
    const TI* g = gu + m0 * 2 * F;
    if constexpr (std::is_same_v<TI, float>) {
      if (vec) {
        swiglu_v1_kernel<TI, TO, 4><<<dim3(bx, rows), 256, 0, st>>>(o, g, F);
        continue;
      }
    }
    swiglu_v1_kernel<TI, TO, 1><<<dim3(bx, rows), 256, 0, st>>>(o, g, F);
  }
  return cudaGetLastError();
}

}  // namespace elt
}  // namespace cuda
}  // namespace glm4
