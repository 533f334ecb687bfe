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

// ---------------------------------------------------------------------------------------------------------
// Codebooks: what a 4-bit code q stands for before the group's zero and scale apply.
//   codebook 0 (integer):  w = (q - zero) * scale                 (what `quantize` writes; symmetric = zero 8)
//   codebook 1 (NF4):      w = (kInt4Nf4[q] - zero) * scale       (bitsandbytes' NormalFloat4; zero is 0 normally)
// Both evaluated in float32 in this order: (value - zero) first, then the product.
constexpr int kInt4CodebookInt = 0;
constexpr int kInt4CodebookNf4 = 1;
inline bool valid_codebook(int cb) { return cb == kInt4CodebookInt || cb == kInt4CodebookNf4; }

// The 16 NF4 values (QLoRA's NormalFloat4: quantiles of N(0, 1) scaled to [-1, 1], with an exact 0 at code 7), as
// float32. Written once for the native code; the TypeScript reference (test/helpers/reference.ts) keeps its own copy and
// the dequantize_int4 cases compare the two bit for bit.
#define GLM4_NF4_VALUES                                                                                         \
  -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,                \
      -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,             \
      0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, \
      1.0f
constexpr float kInt4Nf4[16] = {GLM4_NF4_VALUES};
// The value of code q (0..15) in a codebook, on host or device (kernels keep the NF4 table in registers or
// shared memory; this is the plain form).
GLM4_HD float int4_code_value(int codebook, int q) {
  const float nf4[16] = {GLM4_NF4_VALUES};
  return codebook == 1 ? nf4[q & 15] : static_cast<float>(q);
}

// ---------------------------------------------------------------------------------------------------------
// Quantization schemes (quantize_int4's `scheme`; the record's "scheme", lib/checkpoint/int4-format.ts). Each group
// of G weights (times the optional per-input-column factor of activation-aware scaling, a float32 product) gets:
//   0 asymmetric (codebook 0): int4_group_params above: scale = bf16((max - min) / 15), zero = bf16(-min / scale)
//   1 symmetric  (codebook 0): scale = bf16(absmax / 7) (1 when 0), zero = 8 exactly;
//                              code = clamp(round_half_even(w / scale + 8), 0, 15): codes 1..15 cover [-absmax, absmax]
//                              without clipping (code 0 = -8 scale is never needed), w = (q - 8) * scale
//   2 NF4        (codebook 1): scale = bf16(absmax) (1 when 0), zero = 0; code = the NF4 value nearest w / scale
//                              (int4_nf4_code: ties to the lower code), w = NF4[q] * scale (bitsandbytes' NF4 with
//                              our group as its block and a bf16 absmax)
// Every step is float32 with IEEE division, so CPU, CUDA and the TypeScript reference give the same bits.
constexpr int kInt4SchemeAsym = 0;
constexpr int kInt4SchemeSym = 1;
constexpr int kInt4SchemeNf4 = 2;
inline bool valid_scheme(int64_t s) { return s >= 0 && s <= 2; }
// The scale of a symmetric (scheme 1) group from its absolute maximum, before the caller rounds it to bf16.
GLM4_HD float int4_sym_scale(float absmax) {
  const float s = absmax / 7.f;
  return s > 0.f ? s : 1.f;
}
// The NF4 code of x = w / scale: how many of the 15 midpoints between neighbouring NF4 values lie below x
// (midpoint i = float32((NF4[i] + NF4[i+1]) * 0.5)); x on a midpoint takes the lower code.
GLM4_HD int int4_nf4_code(float x) {
  const float v[16] = {GLM4_NF4_VALUES};
  int c = 0;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int i = 0; i < 15; ++i) c += x > (v[i] + v[i + 1]) * 0.5f ? 1 : 0;
  return c;
}

// ---------------------------------------------------------------------------------------------------------
// Layout 1: the CUDA kernel layout ("tiled16x64"). QWeight::layout 0 is the canonical layout above (disk, CPU);
// layout 1 is what every CUDA INT4 kernel reads (the M = 1..8 GEMV, the small- and large-M GEMMs); `repack_int4`
// writes it from layout 0 at load (and back). Same tensors, same byte and element counts, another order. It
// applies when N % 16 == 0 and K % 64 == 0 (every GLM-4-9B shape); other shapes keep layout 0.
//
// codes (u8, N*K/2 bytes): tiles of 16 rows x 64 k, 512 bytes each. Tile (nt, kt), nt < N/16, kt < K/64, starts at
// byte 512 * (nt * (K/64) + kt): a row tile's run over K is contiguous. Inside a tile, lane l = 4 g + t
// (g = l / 4, t = l % 4) of a warp owns bytes 16 l .. 16 l + 15, four little-endian u32 words; word j (0..3) holds
// the k16 sub-tile k0 = 64 kt + 16 j as the A fragment of mma.m16n8k16 (A = W: rows n, columns k):
//   a0 = W[16nt+g  , k0+2t  ]   a1 = W[16nt+g  , k0+2t+1]
//   a2 = W[16nt+g+8, k0+2t  ]   a3 = W[16nt+g+8, k0+2t+1]
//   a4 = W[16nt+g  , k0+2t+8]   a5 = W[16nt+g  , k0+2t+9]
//   a6 = W[16nt+g+8, k0+2t+8]   a7 = W[16nt+g+8, k0+2t+9]
// Bits 4p..4p+3 of the word hold entry [a0, a2, a4, a6, a1, a3, a5, a7][p], so that (word >> 4s) & 0x000F000F is
// the pair (a[2s], a[2s+1]) in the low and high half-words (s = 0..3): one mask (and an OR with a float's
// exponent) makes the mma's A register s.
// scales, zeros (bf16, N * K/G elements): element (n, gi) at ((n / 16) * (K/G) + gi) * 16 + n % 16: for each
// (row tile, group) the 16 rows' values contiguously (one 32-byte sector a warp).
// Rows [16a, 16b) of a layout-1 weight are again a layout-1 weight (rows slice like layout 0).
constexpr int kInt4LayoutCanonical = 0;
constexpr int kInt4LayoutTiled = 1;
GLM4_HD bool int4_tiled_shape_ok(int64_t n, int64_t k) { return n % 16 == 0 && k % 64 == 0; }
// Byte of the layout-1 codes that holds code (n, k) of a weight with K columns, and whether it is the high nibble.
GLM4_HD int64_t int4_tiled_code_byte(int64_t n, int64_t k, int64_t K, bool* high) {
  const int64_t nt = n >> 4, kt = k >> 6;
  const int r = static_cast<int>(n & 15), c = static_cast<int>(k & 15), j = static_cast<int>((k >> 4) & 3);
  const int g = r & 7, hi_row = r >> 3, t = (c & 7) >> 1, odd = c & 1, hi_k = c >> 3;
  const int p = 4 * odd + 2 * hi_k + hi_row;  // entry a_i, i = 4 hi_k + 2 hi_row + odd, sits at nibble p
  *high = (p & 1) != 0;
  return 512 * (nt * (K >> 6) + kt) + 16 * (4 * g + t) + 4 * j + (p >> 1);
}
// Index of scale / zero (n, gi) in layout 1 (groups_per_row = K/G).
GLM4_HD int64_t int4_tiled_group_index(int64_t n, int64_t gi, int64_t groups_per_row) {
  return ((n >> 4) * groups_per_row + gi) * 16 + (n & 15);
}

}  // namespace glm4
