#include <cmath>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void rotary(Context&, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta) {
  const int64_t t = x.dim(0), heads = x.dim(1), d = x.dim(2), half = rot_dim / 2;
  const int32_t* p = pos.data<int32_t>();
  float* xs = x.data<float>();
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < half; ++j) {
      // Angles in float32 like the reference implementations: inv_freq in f32, then pos * inv_freq.
      const float inv_freq = static_cast<float>(1.0 / std::pow(static_cast<double>(theta), 2.0 * j / rot_dim));
      const float a = static_cast<float>(p[i]) * inv_freq;
      const float cs = std::cos(a), sn = std::sin(a);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xs + (i * heads + h) * d + 2 * j;
        const float x0 = v[0], x1 = v[1];
        v[0] = x0 * cs - x1 * sn;
        v[1] = x1 * cs + x0 * sn;
      }
    }
  }
}

// The three ops in sequence (the CPU is the reference: same code, same results bit for bit).
void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc, const Tensor& vc,
                     const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  rotary(c, q, pos, rot_dim, theta);
  rotary(c, k, pos, rot_dim, theta);
  kv_write(c, kc, vc, k, v, rows);
}

}  // namespace cpu
}  // namespace glm4
