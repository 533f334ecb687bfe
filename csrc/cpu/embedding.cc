#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void embedding(Context& c, const Tensor& out, const Tensor& table, const Tensor& ids) {
  const int64_t t = ids.dim(0), h = table.dim(1), v = table.dim(0);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < t; ++i)
    GLM4_CHECK(id[i] >= 0 && id[i] < v, GLM4_E_INVALID_ARG, "embedding: token id ", id[i], " at position ", i,
               " is outside the vocabulary [0, ", v, ")");
  c.pool().parallel_for(t, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) load_row(table, id[i], out.data<float>() + i * h);
  });
}

}  // namespace cpu
}  // namespace glm4
