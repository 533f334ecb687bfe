// Small helpers for the reference backend: read any float dtype as float, write f32/bf16.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"

namespace glm4 {
namespace cpu {

inline float load(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::BF16: return bf16_to_f32(t.data<uint16_t>()[i]);
    case DType::F16: return f16_to_f32(t.data<uint16_t>()[i]);
    default: GLM4_FAIL(GLM4_E_DTYPE, "cpu: cannot read ", t.describe(), " as float");
  }
}
inline void store(const Tensor& t, int64_t i, float v) {
  switch (t.dtype()) {
    case DType::F32: t.data<float>()[i] = v; break;
    case DType::BF16: t.data<uint16_t>()[i] = f32_to_bf16(v); break;
    case DType::F16: t.data<uint16_t>()[i] = f32_to_f16(v); break;
    default: GLM4_FAIL(GLM4_E_DTYPE, "cpu: cannot write ", t.describe(), " as float");
  }
}
// Row r of a 2-D float tensor into dst (K values).
inline void load_row(const Tensor& t, int64_t r, float* dst) {
  const int64_t k = t.dim(-1);
  if (t.dtype() == DType::F32) {
    const float* s = t.data<float>() + r * k;
    for (int64_t i = 0; i < k; ++i) dst[i] = s[i];
  } else if (t.dtype() == DType::BF16) {
    const uint16_t* s = t.data<uint16_t>() + r * k;
    for (int64_t i = 0; i < k; ++i) dst[i] = bf16_to_f32(s[i]);
  } else {
    for (int64_t i = 0; i < k; ++i) dst[i] = load(t, r * k + i);
  }
}

}  // namespace cpu
}  // namespace glm4
