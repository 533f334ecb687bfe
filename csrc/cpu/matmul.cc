#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void matmul(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t m = x.dim(0), n = w.dim(0), k = w.dim(1);
  const float* xs = x.data<float>();
  float* ys = out.data<float>();
  c.pool().parallel_for(n, 4, [&](int64_t b, int64_t e) {
    std::vector<float> row(k);
    for (int64_t r = b; r < e; ++r) {
      load_row(w, r, row.data());
      const float bv = bias.defined() ? load(bias, r) : 0.f;
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = xs + i * k;
        double acc = 0;
        for (int64_t j = 0; j < k; ++j) acc += static_cast<double>(xi[j]) * row[j];
        ys[i * n + r] = static_cast<float>(acc) + bv;
      }
    }
  });
}

void add_bias(Context&, const Tensor& x, const Tensor& b) {
  const int64_t m = x.dim(0), n = x.dim(1);
  float* xs = x.data<float>();
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) xs[i * n + j] += load(b, j);
}

}  // namespace cpu
}  // namespace glm4
