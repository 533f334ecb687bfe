// Shared by every .cu: error checks that carry file:line, and small device helpers.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/context.h"  // stream_of(Context&)
#include "core/error.h"
#include "core/tensor.h"

#define CUDA_CHECK(expr)                                                                                     \
  do {                                                                                                       \
    cudaError_t err_ = (expr);                                                                               \
    if (err_ != cudaSuccess) {                                                                               \
      (void)cudaGetLastError();                                                                              \
      ::glm4::fail(err_ == cudaErrorMemoryAllocation ? GLM4_E_OOM : GLM4_E_CUDA, __FILE__, __LINE__,          \
                   ::glm4::str(#expr, " failed: ", cudaGetErrorName(err_), " (", cudaGetErrorString(err_), ")")); \
    }                                                                                                        \
  } while (0)

// After every launch: a bad configuration shows up here, not three kernels later.
#define CUDA_CHECK_LAUNCH(name) ::glm4::cudart::check_last(name, __FILE__, __LINE__)

namespace glm4 {
namespace cudart {
void check_last(const char* what, const char* file, int line);
}
namespace cuda {

inline cudaStream_t stream_of(Context& c) { return static_cast<cudaStream_t>(c.stream()); }

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T from_f(float v);
template <>
__device__ __forceinline__ float from_f<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }

inline unsigned grid_for(int64_t n, int block) { return static_cast<unsigned>((n + block - 1) / block); }

}  // namespace cuda
}  // namespace glm4
