// INT4 quantize / dequantize / dequant-matmul in the canonical layout (csrc/core/int4_layout.h).
#include <cmath>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

void quantize_int4(Context& c, const QWeight& q, const Tensor& w) {
  const int64_t n = q.n, k = q.k, g = q.group, ng = k / g;
  uint8_t* codes = q.codes.data<uint8_t>();
  uint16_t* scales = q.scales.data<uint16_t>();
  uint16_t* zeros = q.zeros.data<uint16_t>();
  std::atomic<int64_t> bad_row{-1};
  c.pool().parallel_for(n, 1, [&](int64_t b, int64_t e) {
    std::vector<float> row(k);
    for (int64_t r = b; r < e; ++r) {
      load_row(w, r, row.data());
      for (int64_t gi = 0; gi < ng; ++gi) {
        const float* v = row.data() + gi * g;
        float lo = v[0], hi = v[0];
        bool finite = true;
        for (int64_t i = 0; i < g; ++i) {
          finite = finite && std::isfinite(v[i]);
          lo = std::min(lo, v[i]);
          hi = std::max(hi, v[i]);
        }
        if (!finite) {
          bad_row.store(r);
          continue;
        }
        float s, lo0;
        int4_group_params(lo, hi, &s, &lo0);
        const uint16_t sb = f32_to_bf16(s);
        const float sf = bf16_to_f32(sb);
        const uint16_t zb = f32_to_bf16(-lo0 / sf);
        const float zf = bf16_to_f32(zb);
        scales[r * ng + gi] = sb;
        zeros[r * ng + gi] = zb;
        uint8_t* out = codes + r * (k / 2) + gi * g / 2;
        for (int64_t i = 0; i < g; i += 2) out[i / 2] = int4_pack2(int4_code(v[i], sf, zf), int4_code(v[i + 1], sf, zf));
      }
    }
  });
  GLM4_CHECK(bad_row.load() < 0, GLM4_E_INVALID_ARG, "quantize_int4: row ", bad_row.load(), " of ", w.describe(),
             " holds NaN or Inf; the checkpoint is damaged");
}

// Row r of the weight (canonical layout), dequantized to float: (value of the code in its codebook - zero) * scale.
static void dequant_row(const QWeight& q, int64_t r, float* dst) {
  const int64_t k = q.k, ng = k / q.group;
  const uint8_t* codes = q.codes.data<uint8_t>() + r * (k / 2);
  const uint16_t* sc = q.scales.data<uint16_t>() + r * ng;
  const uint16_t* zr = q.zeros.data<uint16_t>() + r * ng;
  for (int64_t gi = 0; gi < ng; ++gi) {
    const float s = bf16_to_f32(sc[gi]), z = bf16_to_f32(zr[gi]);
    for (int64_t i = gi * q.group; i < (gi + 1) * q.group; ++i)
      dst[i] = (int4_code_value(q.codebook, int4_get(codes, i)) - z) * s;
  }
}


void dequantize_int4(Context& c, const Tensor& out, const QWeight& q) {
  c.pool().parallel_for(q.n, 1, [&](int64_t b, int64_t e) {
    std::vector<float> row(q.k);
    for (int64_t r = b; r < e; ++r) {
      dequant_row(q, r, row.data());
      for (int64_t i = 0; i < q.k; ++i) store(out, r * q.k + i, row[i]);
    }
  });
}

void matmul_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias) {
  const int64_t m = x.dim(0), n = w.n, k = w.k;
  const float* xs = x.data<float>();
  float* ys = out.data<float>();
  c.pool().parallel_for(n, 4, [&](int64_t b, int64_t e) {
    std::vector<float> row(k);
    for (int64_t r = b; r < e; ++r) {
      dequant_row(w, r, row.data());
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

}  // namespace cpu
}  // namespace glm4
