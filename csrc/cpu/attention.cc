// KV-cache write and causal grouped-query attention over the cache (prefill of many tokens and decode of one
// are the same op: query t sees positions 0..pos[t] of its sequence, found through the block table when there
// is one). The arithmetic per (query, head) does not depend on the rows' places in the pool, so a sequence gets
// bit for bit the same result wherever its blocks are.
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

// Row of the pool that holds position p of query t's sequence (paged: through the block table; contiguous: p).
// Throws when the position, the sequence or the table entry falls outside the pool.
namespace {
struct RowMap {
  const int32_t* table = nullptr;  // [B, NB] or null (contiguous)
  const int32_t* seq = nullptr;    // [T] or null (all sequence 0)
  int64_t b = 1, nb = 0, bs = 1, shift = 0, rows = 0;
  const int32_t* base(int64_t t, int64_t p) const {  // the table row of query t, checked
    const int64_t s = seq ? seq[t] : 0;
    GLM4_CHECK(s >= 0 && s < b, GLM4_E_INVALID_ARG, "attention: sequence ", s, " of query ", t, " is not in [0, ", b,
               ") (the block table's rows)");
    GLM4_CHECK(p < nb * bs, GLM4_E_INVALID_ARG, "attention: position ", p, " of query ", t, " is past the ", nb,
               " blocks of ", bs, " tokens of its table row");
    return table + s * nb;
  }
  int64_t row(const int32_t* tb, int64_t p) const { return table ? int64_t{tb[p >> shift]} * bs + (p & (bs - 1)) : p; }
};
}  // namespace

void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
               float scale, int64_t block_size, const Tensor& table, const Tensor& seq) {
  const int64_t t = q.dim(0), hq = q.dim(1), d = q.dim(2), hkv = kc.dim(1), per = hq / hkv;
  RowMap m;
  m.rows = kc.dim(0);
  if (table.defined()) {
    m.table = table.data<int32_t>();
    m.seq = seq.defined() ? seq.data<int32_t>() : nullptr;
    m.b = table.dim(0);
    m.nb = table.dim(1);
    m.bs = block_size;
    while ((int64_t{1} << m.shift) < block_size) ++m.shift;
  }
  const int32_t* p = pos.data<int32_t>();
  std::vector<const int32_t*> tb(t, nullptr);
  for (int64_t i = 0; i < t; ++i) {
    if (!m.table) {
      GLM4_CHECK(p[i] >= 0 && p[i] < m.rows, GLM4_E_INVALID_ARG, "attention: position ", p[i], " of query ", i,
                 " is outside the cache of ", m.rows, " rows");
      continue;
    }
    GLM4_CHECK(p[i] >= 0, GLM4_E_INVALID_ARG, "attention: position ", p[i], " of query ", i, " is negative");
    tb[i] = m.base(i, p[i]);
    for (int64_t j = 0; j <= p[i] >> m.shift; ++j) {
      const int64_t last = std::min<int64_t>(p[i] - (j << m.shift), m.bs - 1);  // last offset read in block j
      GLM4_CHECK(tb[i][j] >= 0 && int64_t{tb[i][j]} * m.bs + last < m.rows, GLM4_E_INVALID_ARG,
                 "attention: block table entry ", tb[i][j], " (block ", j, " of sequence ", m.seq ? m.seq[i] : 0,
                 ", read by query ", i, ") is outside the pool of ", m.rows, " rows (", m.rows / m.bs, " blocks of ",
                 m.bs, ")");
    }
  }
  c.pool().parallel_for(t * hq, 1, [&](int64_t b, int64_t e) {
    std::vector<float> sc, acc(d);
    std::vector<int64_t> rows;
    for (int64_t th = b; th < e; ++th) {
      const int64_t i = th / hq, h = th % hq, g = h / per, len = p[i] + 1;
      const float* qv = q.data<float>() + (i * hq + h) * d;
      rows.resize(len);
      for (int64_t j = 0; j < len; ++j) rows[j] = m.row(tb[i], j);
      sc.resize(len);
      float mx = -INFINITY;
      for (int64_t j = 0; j < len; ++j) {
        double dot = 0;
        for (int64_t x = 0; x < d; ++x) dot += static_cast<double>(qv[x]) * load(kc, (rows[j] * hkv + g) * d + x);
        sc[j] = static_cast<float>(dot) * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < len; ++j) sum += (sc[j] = std::exp(sc[j] - mx));
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t j = 0; j < len; ++j) {
        const float w = static_cast<float>(sc[j] / sum);
        for (int64_t x = 0; x < d; ++x) acc[x] += w * load(vc, (rows[j] * hkv + g) * d + x);
      }
      if (out.dtype() == DType::F32) std::copy(acc.begin(), acc.end(), out.data<float>() + (i * hq + h) * d);
      else for (int64_t x = 0; x < d; ++x) out.data<uint16_t>()[(i * hq + h) * d + x] = f32_to_bf16(acc[x]);
    }
  });
}

}  // namespace cpu
}  // namespace glm4
