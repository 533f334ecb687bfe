// KV-cache write and causal grouped-query attention over the cache (prefill of many tokens and decode of one
// are the same op: query t sees cache rows start[t]..pos[t], start = 0 when absent).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void kv_write(Context&, const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& pos) {
  const int64_t t = k.dim(0), row = k.dim(1) * k.dim(2), s = kc.dim(0);
  const int32_t* p = pos.data<int32_t>();
  for (int64_t i = 0; i < t; ++i) {
    GLM4_CHECK(p[i] >= 0 && p[i] < s, GLM4_E_INVALID_ARG, "kv_write: position ", p[i], " is outside the cache of ", s,
               " rows; raise maxContext");
    for (int64_t j = 0; j < row; ++j) {
      store(kc, p[i] * row + j, k.data<float>()[i * row + j]);
      store(vc, p[i] * row + j, v.data<float>()[i * row + j]);
    }
  }
}

void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
               float scale, const Tensor& start) {
  const int64_t t = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = kc.dim(1), s = kc.dim(0), per = hq / hkv;
  const int32_t* p = pos.data<int32_t>();
  const int32_t* st = start.defined() ? start.data<int32_t>() : nullptr;
  for (int64_t i = 0; i < t; ++i) {
    GLM4_CHECK(p[i] >= 0 && p[i] < s, GLM4_E_INVALID_ARG, "attention: position ", p[i], " is outside the cache of ", s,
               " rows");
    GLM4_CHECK(!st || (st[i] >= 0 && st[i] <= p[i]), GLM4_E_INVALID_ARG, "attention: start ", st ? st[i] : 0,
               " of query ", i, " is not in [0, ", p[i], "] (its last row)");
  }
  c.pool().parallel_for(t * hq, 1, [&](int64_t b, int64_t e) {
    std::vector<float> sc, kr(d), acc(d);
    for (int64_t th = b; th < e; ++th) {
      const int64_t i = th / hq, h = th % hq, g = h / per, b0 = st ? st[i] : 0, len = p[i] + 1 - b0;
      const float* qv = q.data<float>() + (i * hq + h) * d;
      sc.resize(len);
      float mx = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        double dot = 0;
        for (int64_t x = 0; x < d; ++x) dot += static_cast<double>(qv[x]) * load(kc, ((b0 + j) * hkv + g) * d + x);
        sc[j] = static_cast<float>(dot) * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < len; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < len; ++j) {
        const float w = static_cast<float>(sc[j] / sum);
        for (int64_t x = 0; x < d; ++x) acc[x] += w * load(vc, ((b0 + j) * hkv + g) * d + x);
      }
      std::copy(acc.begin(), acc.end(), out.data<float>() + (i * hq + h) * d);
    }
  });
}

}  // namespace cpu
}  // namespace glm4
