#include <cmath>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {
namespace {
// Row r of out (f32, or bf16: the f32 value rounded to nearest even like convert) = xr * inv * w.
inline void norm_row(const Tensor& out, int64_t r, int64_t h, const float* xr, float inv, const float* wf) {
  if (out.dtype() == DType::F32) {
    float* yr = out.data<float>() + r * h;
    for (int64_t i = 0; i < h; ++i) yr[i] = xr[i] * inv * wf[i];
  } else {
    uint16_t* yr = out.data<uint16_t>() + r * h;
    for (int64_t i = 0; i < h; ++i) yr[i] = f32_to_bf16(xr[i] * inv * wf[i]);
  }
}
}  // namespace

void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  const int64_t t = x.dim(0), h = x.dim(1);
  std::vector<float> wf(h);
  load_row(w.reshape({1, h}), 0, wf.data());
  c.pool().parallel_for(t, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const float* xr = x.data<float>() + r * h;
      double ss = 0;
      for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(h) + eps));
      norm_row(out, r, h, xr, inv, wf.data());
    }
  });
}

// add(x, x, o) then rmsnorm(out, x, w, eps) in one pass over each row: the sum is rounded to f32 and stored
// first, and the norm reads the stored values, so the arithmetic is exactly that of the two ops.
void add_rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& o, const Tensor& w, float eps) {
  const int64_t t = x.dim(0), h = x.dim(1);
  std::vector<float> wf(h);
  load_row(w.reshape({1, h}), 0, wf.data());
  c.pool().parallel_for(t, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* xr = x.data<float>() + r * h;
      const float* orow = o.data<float>() + r * h;
      for (int64_t i = 0; i < h; ++i) xr[i] = xr[i] + orow[i];
      double ss = 0;
      for (int64_t i = 0; i < h; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(h) + eps));
      norm_row(out, r, h, xr, inv, wf.data());
    }
  });
}

}  // namespace cpu
}  // namespace glm4
