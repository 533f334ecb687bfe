#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

namespace {
// Rotary in place on t rows of `heads` heads of d floats each, row i at xs + i * stride.
void rotate_rows(float* xs, int64_t stride, const int32_t* p, int64_t t, int64_t heads, int64_t d, int64_t rot_dim,
                 float theta) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < half; ++j) {
      // Angles in float32 like the reference implementations: inv_freq in f32, then pos * inv_freq.
      const float inv_freq = static_cast<float>(1.0 / std::pow(static_cast<double>(theta), 2.0 * j / rot_dim));
      const float a = static_cast<float>(p[i]) * inv_freq;
      const float cs = std::cos(a), sn = std::sin(a);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = xs + i * stride + h * d + 2 * j;
        const float x0 = v[0], x1 = v[1];
        v[0] = x0 * cs - x1 * sn;
        v[1] = x1 * cs + x0 * sn;
      }
    }
  }
}
}  // namespace

void rotary(Context&, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta) {
  const int64_t heads = x.dim(1), d = x.dim(2);
  rotate_rows(x.data<float>(), heads * d, pos.data<int32_t>(), x.dim(0), heads, d, rot_dim, theta);
}

// The three ops in sequence (the CPU is the reference: same code, same results bit for bit).
void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc, const Tensor& vc,
                     const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  rotary(c, q, pos, rot_dim, theta);
  rotary(c, k, pos, rot_dim, theta);
  kv_write(c, kc, vc, k, v, rows);
}

// The same arithmetic on q, k, v read out of the packed rows: q copied out and rotated in place (rotate_rows, as
// rotary does), k copied to a buffer and rotated there, then k and v stored to the cache rows like kv_write.
void rotary_kv_write_qkv(Context&, const Tensor& q, const Tensor& qkv, const Tensor& kc, const Tensor& vc,
                         const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  const int64_t t = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = kc.dim(1), s = kc.dim(0);
  const int64_t width = (hq + 2 * hkv) * d, nq = hq * d, nkv = hkv * d;
  // A bf16 qkv is widened to f32 first (exact): the same arithmetic as on its f32 copy, bit for bit.
  std::vector<float> wide(qkv.dtype() == DType::F32 ? 0 : static_cast<size_t>(t * width));
  for (size_t i = 0; i < wide.size(); ++i) wide[i] = load(qkv, static_cast<int64_t>(i));
  const float* src = qkv.dtype() == DType::F32 ? qkv.data<float>() : wide.data();
  float* qs = q.data<float>();
  std::vector<float> kb(static_cast<size_t>(t * nkv));
  for (int64_t i = 0; i < t; ++i) {
    std::copy(src + i * width, src + i * width + nq, qs + i * nq);
    std::copy(src + i * width + nq, src + i * width + nq + nkv, kb.data() + i * nkv);
  }
  const int32_t* p = pos.data<int32_t>();
  rotate_rows(qs, nq, p, t, hq, d, rot_dim, theta);
  rotate_rows(kb.data(), nkv, p, t, hkv, d, rot_dim, theta);
  const int32_t* r = rows.data<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    GLM4_CHECK(r[i] >= 0 && r[i] < s, GLM4_E_INVALID_ARG, "rotary_kv_write_qkv: cache row ", r[i],
               " is outside the cache of ", s, " rows; raise maxContext");
    const float* vrow = src + i * width + nq + nkv;
    for (int64_t j = 0; j < nkv; ++j) {
      store(kc, r[i] * nkv + j, kb[i * nkv + j]);
      store(vc, r[i] * nkv + j, vrow[j]);
    }
  }
}

}  // namespace cpu
}  // namespace glm4
