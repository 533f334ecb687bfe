// INT4 quantize / dequantize / dequant-matmul in the canonical layout (csrc/core/int4_layout.h).
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"
#include "ops.h"

namespace glm4 {
namespace cpu {

// One group of g values (already times the column factors) -> scale, zero (bf16 bits) and packed codes, by scheme
// (core/int4_layout.h). The caller has checked that every value is finite.
static void quantize_group(const float* v, int64_t g, int scheme, uint16_t* sb_out, uint16_t* zb_out, uint8_t* out) {
  if (scheme == kInt4SchemeAsym) {
    float lo = v[0], hi = v[0];
    for (int64_t i = 0; i < g; ++i) {
      lo = std::min(lo, v[i]);
      hi = std::max(hi, v[i]);
    }
    float s, lo0;
    int4_group_params(lo, hi, &s, &lo0);
    const uint16_t sb = f32_to_bf16(s);
    const float sf = bf16_to_f32(sb);
    const uint16_t zb = f32_to_bf16(-lo0 / sf);
    const float zf = bf16_to_f32(zb);
    *sb_out = sb;
    *zb_out = zb;
    for (int64_t i = 0; i < g; i += 2) out[i / 2] = int4_pack2(int4_code(v[i], sf, zf), int4_code(v[i + 1], sf, zf));
    return;
  }
  float amax = 0.f;
  for (int64_t i = 0; i < g; ++i) amax = std::max(amax, std::fabs(v[i]));
  const uint16_t sb = f32_to_bf16(scheme == kInt4SchemeSym ? int4_sym_scale(amax) : (amax > 0.f ? amax : 1.f));
  const float sf = bf16_to_f32(sb);
  *sb_out = sb;
  if (scheme == kInt4SchemeSym) {
    *zb_out = f32_to_bf16(8.f);
    for (int64_t i = 0; i < g; i += 2) out[i / 2] = int4_pack2(int4_code(v[i], sf, 8.f), int4_code(v[i + 1], sf, 8.f));
  } else {
    *zb_out = 0;
    for (int64_t i = 0; i < g; i += 2) out[i / 2] = int4_pack2(int4_nf4_code(v[i] / sf), int4_nf4_code(v[i + 1] / sf));
  }
}

void quantize_int4(Context& c, const QWeight& q, const Tensor& w, int64_t scheme, const Tensor& col_scale) {
  const int64_t n = q.n, k = q.k, g = q.group, ng = k / g;
  uint8_t* codes = q.codes.data<uint8_t>();
  uint16_t* scales = q.scales.data<uint16_t>();
  uint16_t* zeros = q.zeros.data<uint16_t>();
  const float* cs = col_scale.defined() ? col_scale.data<float>() : nullptr;  // [K] activation-aware factors
  std::atomic<int64_t> bad_row{-1};
  c.pool().parallel_for(n, 1, [&](int64_t b, int64_t e) {
    std::vector<float> row(k);
    for (int64_t r = b; r < e; ++r) {
      load_row(w, r, row.data());
      if (cs)
        for (int64_t i = 0; i < k; ++i) row[i] = row[i] * cs[i];
      for (int64_t gi = 0; gi < ng; ++gi) {
        const float* v = row.data() + gi * g;
        bool finite = true;
        for (int64_t i = 0; i < g; ++i) finite = finite && std::isfinite(v[i]);
        if (!finite) {
          bad_row.store(r);
          continue;
        }
        quantize_group(v, g, static_cast<int>(scheme), scales + r * ng + gi, zeros + r * ng + gi,
                       codes + r * (k / 2) + gi * g / 2);
      }
    }
  });
  GLM4_CHECK(bad_row.load() < 0, GLM4_E_INVALID_ARG, "quantize_int4: row ", bad_row.load(), " of ", w.describe(),
             cs ? " times col_scale" : "", " holds NaN or Inf; the checkpoint is damaged");
}

// Row r of the weight, dequantized to float: (value(code) - zero) * scale in f32 (value = the code itself, or its
// NF4 value). Layout 1 is read through its index functions (tests only: the CPU backend never repacks).
static void dequant_row(const QWeight& q, int64_t r, float* dst) {
  const int64_t k = q.k, ng = k / q.group;
  const uint8_t* all = q.codes.data<uint8_t>();
  const uint16_t* sc = q.scales.data<uint16_t>();
  const uint16_t* zr = q.zeros.data<uint16_t>();
  float value[16];
  for (int i = 0; i < 16; ++i) value[i] = int4_code_value(q.codebook, i);
  const bool tiled = q.layout == kInt4LayoutTiled;
  for (int64_t gi = 0; gi < ng; ++gi) {
    const int64_t si = tiled ? int4_tiled_group_index(r, gi, ng) : r * ng + gi;
    const float s = bf16_to_f32(sc[si]), z = bf16_to_f32(zr[si]);
    for (int64_t i = gi * q.group; i < (gi + 1) * q.group; ++i) {
      int code;
      if (tiled) {
        bool high = false;
        const uint8_t b = all[int4_tiled_code_byte(r, i, k, &high)];
        code = high ? b >> 4 : b & 0xf;
      } else {
        code = int4_get(all + r * (k / 2), i);
      }
      dst[i] = (value[code] - z) * s;
    }
  }
}

// Canonical <-> layout 1 (core/int4_layout.h), a tile at a time: every code and every scale/zero moves once.
void repack_int4(Context& c, const QWeight& dst, const QWeight& src) {
  const int64_t n = src.n, k = src.k, ng = k / src.group;
  const bool to_tiled = dst.layout == kInt4LayoutTiled;
  const uint8_t* sc = src.codes.data<uint8_t>();
  uint8_t* dc = dst.codes.data<uint8_t>();
  const uint16_t* ss = src.scales.data<uint16_t>();
  const uint16_t* sz = src.zeros.data<uint16_t>();
  uint16_t* ds = dst.scales.data<uint16_t>();
  uint16_t* dz = dst.zeros.data<uint16_t>();
  c.pool().parallel_for(n / 16, 1, [&](int64_t b, int64_t e) {
    for (int64_t nt = b; nt < e; ++nt) {
      const int64_t r0 = nt * 16;
      // bytes of this row tile in either layout: [r0 * k/2, (r0 + 16) * k/2)
      std::memset(dc + r0 * (k / 2), 0, static_cast<size_t>(8 * k));
      for (int64_t r = r0; r < r0 + 16; ++r) {
        for (int64_t i = 0; i < k; ++i) {
          bool high = false;
          const int64_t tb = int4_tiled_code_byte(r, i, k, &high);
          const int64_t cb = r * (k / 2) + i / 2;
          if (to_tiled) {
            const int code = int4_get(sc + r * (k / 2), i);
            dc[tb] = static_cast<uint8_t>(dc[tb] | (high ? code << 4 : code));
          } else {
            const int code = high ? sc[tb] >> 4 : sc[tb] & 0xf;
            dc[cb] = static_cast<uint8_t>(dc[cb] | ((i & 1) ? code << 4 : code));
          }
        }
        for (int64_t gi = 0; gi < ng; ++gi) {
          const int64_t ti = int4_tiled_group_index(r, gi, ng), ci = r * ng + gi;
          if (to_tiled) {
            ds[ti] = ss[ci];
            dz[ti] = sz[ci];
          } else {
            ds[ci] = ss[ti];
            dz[ci] = sz[ti];
          }
        }
      }
    }
  });
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

// The reference of the fused linear: exactly rmsnorm(), matmul_int4(), then add() / swiglu() (the CPU's
// expressions in the same order), so on the CPU it is bit-identical to the unfused ops.
void linear_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps, int64_t mode_arg,
                 const Tensor& bias, const Tensor& norm_w) {
  const LinearMode mode = static_cast<LinearMode>(mode_arg);
  const int64_t m = x.dim(0), n = w.n, k = w.k;
  std::vector<float> xn(static_cast<size_t>(m * k));
  std::memcpy(xn.data(), x.data<float>(), static_cast<size_t>(m * k) * sizeof(float));
  if (norm_w.defined()) {
    std::vector<float> wf(k);
    load_row(norm_w.reshape({1, k}), 0, wf.data());
    for (int64_t i = 0; i < m; ++i) {
      float* xr = xn.data() + i * k;
      double ss = 0;
      for (int64_t j = 0; j < k; ++j) ss += static_cast<double>(xr[j]) * xr[j];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(k) + eps));
      for (int64_t j = 0; j < k; ++j) xr[j] = xr[j] * inv * wf[j];
    }
  }
  std::vector<float> y(static_cast<size_t>(m * n));
  c.pool().parallel_for(n, 4, [&](int64_t b, int64_t e) {
    std::vector<float> row(k);
    for (int64_t r = b; r < e; ++r) {
      dequant_row(w, r, row.data());
      const float bv = bias.defined() ? load(bias, r) : 0.f;
      for (int64_t i = 0; i < m; ++i) {
        const float* xi = xn.data() + i * k;
        double acc = 0;
        for (int64_t j = 0; j < k; ++j) acc += static_cast<double>(xi[j]) * row[j];
        y[i * n + r] = static_cast<float>(acc) + bv;
      }
    }
  });
  float* o = out.data<float>();
  if (mode == LinearMode::Store) {
    std::memcpy(o, y.data(), y.size() * sizeof(float));
  } else if (mode == LinearMode::Accumulate) {
    for (int64_t i = 0; i < m * n; ++i) o[i] = o[i] + y[i];
  } else {
    const int64_t f = n / 2;
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < f; ++j) {
        const float g = y[i * n + j], u = y[i * n + f + j];
        o[i * f + j] = g / (1.f + std::exp(-g)) * u;
      }
  }
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
