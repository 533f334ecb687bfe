// The canonical INT4 layout: the one `quantize` writes to disk and every backend is tested against.
//
// A linear weight W of shape [N, K] (N output rows, K input columns; y = x W^T) is quantized per output row
// in groups of G consecutive input columns (G in {32, 64, 128}, K % G == 0):
//   codes  : I4   [N, K]    stored as u8 [N, K/2]; byte (n, k/2) holds code(n, k) for even k in its low
//                           nibble (bits 0..3) and code(n, k+1) in its high nibble (bits 4..7)
//   scales : BF16 [N, K/G]  scale of group (n, g)
//   zeros  : BF16 [N, K/G]  zero point of group (n, g), a real number in code units (asymmetric)
//   W(n, k) = (code(n, k) - zeros(n, k/G)) * scales(n, k/G),   code in 0..15
// Quantization of one group with min m and max M (both widened to include 0 so that 0 is exact-ish):
//   scale = (M - m) / 15 rounded to bf16 (1 when M == m), zero = -m / scale rounded to bf16,
//   code  = clamp(round_half_even(w / scale + zero), 0, 15).
#pragma once
#include <cstdint>
#include <cmath>

#if defined(__CUDACC__)
#define GLM4_HD __host__ __device__ __forceinline__
#else
#define GLM4_HD inline
#endif

namespace glm4 {

constexpr int kInt4Max = 15;

inline uint8_t int4_pack2(int even_code, int odd_code) {
  return static_cast<uint8_t>((even_code & 0xf) | ((odd_code & 0xf) << 4));
}
inline int int4_get(const uint8_t* row, int64_t k) {
  uint8_t b = row[k >> 1];
  return (k & 1) ? (b >> 4) : (b & 0xf);
}
inline bool valid_group(int64_t g) { return g == 32 || g == 64 || g == 128; }

// Scale and zero of one group from its min and max, before rounding to bf16 (the caller rounds both, and
// then quantizes with the rounded values so that dequantization reproduces exactly what was chosen).
// Shared by every backend so that quantization is bit-identical everywhere.
GLM4_HD void int4_group_params(float wmin, float wmax, float* scale, float* zero_over_scale_src) {
  float lo = wmin < 0.f ? wmin : 0.f, hi = wmax > 0.f ? wmax : 0.f;
  float s = (hi - lo) / 15.f;
  *scale = s > 0.f ? s : 1.f;
  *zero_over_scale_src = lo;  // zero = -lo / bf16(scale), computed by the caller after rounding scale
}
// code = clamp(round_half_even(w / scale + zero), 0, 15) with the bf16-rounded scale and zero as floats.
GLM4_HD int int4_code(float w, float scale, float zero) {
  float q = rintf(w / scale + zero);
  q = q < 0.f ? 0.f : (q > 15.f ? 15.f : q);
  return static_cast<int>(q);
}

}  // namespace glm4
