// Device helpers shared by the kernels of csrc/cuda (not the runtime): exact bf16/f16 conversions that match
// the host ones in core/dtype.h bit for bit, warp and block reductions, streaming loads, device queries.
#pragma once
#include <cstdint>

#include "common.cuh"

namespace glm4 {
namespace cuda {

// ----- conversions (bit-identical to core/dtype.h, NaN included) -----
__device__ __forceinline__ float bf16_bits_to_f(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// Round to nearest even; NaN stays a quiet NaN with its sign (same as the host f32_to_bf16).
__device__ __forceinline__ uint16_t f_to_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
// IEEE half, round to nearest even, subnormals exact; NaN -> quiet NaN with the sign (same as host f32_to_f16).
__device__ __forceinline__ uint16_t f_to_f16_bits(float f) {
  const uint32_t u = __float_as_uint(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  if (((u >> 23) & 0xffu) == 0xffu) return static_cast<uint16_t>(sign | 0x7c00u | ((u & 0x7fffffu) ? 0x200u : 0u));
  return __half_as_ushort(__float2half_rn(f));  // RNE with correct overflow to inf and subnormal rounding
}
// Inf and NaN by hand so that the NaN payload is kept like the host f16_to_f32 (the hardware conversion
// returns a canonical NaN); every other half converts exactly either way.
__device__ __forceinline__ float f16_bits_to_f(uint16_t h) {
  if ((h & 0x7c00u) == 0x7c00u)
    return __uint_as_float((static_cast<uint32_t>(h & 0x8000u) << 16) | 0x7f800000u | (static_cast<uint32_t>(h & 0x3ffu) << 13));
  return __half2float(__ushort_as_half(h));
}

// Storage types by tag: the kernels see bf16/f16 as raw 16-bit words and convert explicitly.
struct Bf16 { uint16_t v; };
struct F16 { uint16_t v; };
__device__ __forceinline__ float load_f(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_f(const Bf16* p, int64_t i) { return bf16_bits_to_f(p[i].v); }
__device__ __forceinline__ float load_f(const F16* p, int64_t i) { return f16_bits_to_f(p[i].v); }
__device__ __forceinline__ void store_f(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(Bf16* p, int64_t i, float v) { p[i].v = f_to_bf16_bits(v); }
__device__ __forceinline__ void store_f(F16* p, int64_t i, float v) { p[i].v = f_to_f16_bits(v); }

// Two bf16 packed in a word -> two floats (low half is the lower address).
__device__ __forceinline__ float bf16lo(uint32_t w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }

// ----- loads -----
// Weights are read exactly once per token: keep them out of L1 (x and the KV cache live there) and mark them
// evict-first in L2, so that activations and the KV cache stay resident across the 40 layers.
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t p;
  asm("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}
__device__ __forceinline__ uint4 ld_stream16(const void* ptr, uint64_t policy) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(ptr), "l"(policy));
  return r;
}
__device__ __forceinline__ float4 ldg4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// ----- reductions -----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide reductions for blocks of up to 1024 threads (blockDim.x a multiple of 32). `red` is shared scratch
// of at least 32 elements. Every thread gets the result. Contains two __syncthreads.
template <typename T, typename Op>
__device__ __forceinline__ T block_reduce(T v, T* red, Op op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
  for (int i = 1; i < nw; ++i) v = op(v, red[i]);
  return v;
}
struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// The most dynamic shared memory `kernel` may be launched with on the current device: the opt-in limit a block
// minus the kernel's own static shared memory (asking for the whole opt-in limit fails with cudaErrorInvalidValue
// as soon as the kernel has any static __shared__). Sets the kernel's attribute to it and returns it.
inline int allow_dynamic_smem(const void* kernel, int optin) {
  cudaFuncAttributes fa{};
  CUDA_CHECK(cudaFuncGetAttributes(&fa, kernel));
  const int cap = optin - static_cast<int>(fa.sharedSizeBytes);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, cap));
  return cap;
}

// ----- host side -----
// Multiprocessor count and compute capability of the current device (cheap queries, legal during capture).
struct DevAttrs {
  int sms = 0, major = 0;
};
inline DevAttrs current_device_attrs() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  DevAttrs a;
  CUDA_CHECK(cudaDeviceGetAttribute(&a.sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&a.major, cudaDevAttrComputeCapabilityMajor, dev));
  return a;
}
__host__ __device__ inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace cuda
}  // namespace glm4
