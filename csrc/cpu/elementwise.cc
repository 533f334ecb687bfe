#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "core/random.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

// gu f32 or bf16: a bf16 row is converted to f32 first (exact), then the same math: swiglu(convert(gu)) bit for bit.
void swiglu(Context&, const Tensor& out, const Tensor& gu) {
  const int64_t m = out.dim(0), f = out.dim(1);
  std::vector<float> row(gu.dtype() == DType::F32 ? 0 : static_cast<size_t>(2 * f));
  for (int64_t i = 0; i < m; ++i) {
    const float* g;
    if (gu.dtype() == DType::F32) {
      g = gu.data<float>() + i * 2 * f;
    } else {
      for (int64_t j = 0; j < 2 * f; ++j) row[static_cast<size_t>(j)] = load(gu, i * 2 * f + j);
      g = row.data();
    }
    const float* u = g + f;
    if (out.dtype() == DType::F32) {
      float* o = out.data<float>() + i * f;
      for (int64_t j = 0; j < f; ++j) o[j] = g[j] / (1.f + std::exp(-g[j])) * u[j];
    } else {  // bf16: the same f32 value, rounded to nearest even (what convert gives)
      uint16_t* o = out.data<uint16_t>() + i * f;
      for (int64_t j = 0; j < f; ++j) o[j] = f32_to_bf16(g[j] / (1.f + std::exp(-g[j])) * u[j]);
    }
  }
}

void add(Context&, const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) out.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
}

void convert(Context&, const Tensor& out, const Tensor& in) {
  const int64_t n = in.numel();
  for (int64_t i = 0; i < n; ++i) store(out, i, load(in, i));
}

void fill_random(Context&, const Tensor& out, uint64_t seed, float mean, float std) {
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) store(out, i, mean + std * normal_at(seed, static_cast<uint64_t>(i)));
}

// memmove: copy(t, t) is allowed.
void copy(Context&, const Tensor& dst, const Tensor& src) {
  std::memmove(dst.raw(), src.raw(), static_cast<size_t>(src.nbytes()));
}

}  // namespace cpu
}  // namespace glm4
