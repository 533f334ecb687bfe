// INT4 in the canonical layout (core/int4_layout.h) on CUDA: quantize, dequantize, and the dequantizing matmul.
//   codes  u8   [N, K/2]  low nibble = even k     scales, zeros  bf16 [N, K/G]     W = (code - zero) * scale
// Every row of codes is K/2 bytes with K % 32 == 0 (K % G == 0, G in {32, 64, 128}), so rows are whole 16-byte
// chunks of 32 codes, and a chunk never straddles a group.
//
// matmul_int4 picks the kernel by M (tokens):
//   M <= 8 : gemv_int4  -- decode; reads the weights once for all M rows (memory bound)
//   M  > 8 : tensor-core GEMM (gemm_tc.cuh) with an INT4 -> bf16 tile loader (prefill; matrix bound)
// Measured on the H100 (bench/NOTES.md): at M = 8 the GEMV still beats one 128-row GEMM tile 2-3x (gate_up
// 122 us vs ~224 us), so the switch stays at 8 until the GEMM gets faster.
#include <algorithm>

#include "gemm_int4.h"
#include "gemm_tc.cuh"
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {

// gemv_int4.cu: layout 1
void matmul_int4_tiled(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias);
void dequantize_int4_tiled(Context& c, const Tensor& out, const QWeight& q);

namespace {

// ============================================================ quantize

// Device twin of int4_pack2 (core/int4_layout.h, host only): even code in the low nibble.
__device__ __forceinline__ uint8_t pack2(int even_code, int odd_code) {
  return static_cast<uint8_t>((even_code & 0xf) | ((odd_code & 0xf) << 4));
}

// One warp per (row, group): lane l holds the E = G/32 consecutive values l*E .. l*E+E-1 of the group (times the
// optional per-column factors cs, a float32 product). Arithmetic is the CPU's (core/int4_layout.h helpers, IEEE
// division, round-to-nearest-even bf16) for every scheme, so the codes, scales and zeros are bit-identical to
// csrc/cpu/int4.cc. A group holding NaN or Inf (the CPU throws) gets NaN scale and zero and zero codes, so that the
// damage is visible downstream instead of silently quantized.
template <typename T, int E>
__global__ void __launch_bounds__(256) quantize_int4_kernel(const T* __restrict__ w, const float* __restrict__ cs,
                                                            uint8_t* __restrict__ codes, uint16_t* __restrict__ scales,
                                                            uint16_t* __restrict__ zeros, int64_t n, int64_t k,
                                                            int scheme) {
  constexpr int G = 32 * E;
  const int64_t ng = k / G, total = n * ng;
  const int lane = threadIdx.x & 31;
  const int64_t nwarps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t wg = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); wg < total;
       wg += nwarps) {
    const int64_t r = wg / ng, gi = wg - r * ng;
    const int64_t c0 = gi * G + lane * E;
    const T* src = w + r * k + c0;
    float v[E];
    bool finite = true;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      v[e] = load_f(src, e);
      if (cs != nullptr) v[e] = v[e] * cs[c0 + e];
      finite = finite && isfinite(v[e]);
    }
    finite = __all_sync(0xffffffffu, finite);
    uint8_t* out = codes + r * (k / 2) + gi * (G / 2);
    if (!finite) {
      if (lane == 0) scales[wg] = zeros[wg] = 0x7fc0;  // bf16 NaN
      if (E == 1) {
        if ((lane & 1) == 0) out[lane / 2] = 0;
      } else {
#pragma unroll
        for (int e = 0; e < E; e += 2) out[(lane * E + e) / 2] = 0;
      }
      continue;
    }
    uint16_t sb, zb;
    float sf, zf;
    if (scheme == kInt4SchemeAsym) {
      float lo = v[0], hi = v[0];
#pragma unroll
      for (int e = 1; e < E; ++e) {
        lo = fminf(lo, v[e]);
        hi = fmaxf(hi, v[e]);
      }
      lo = warp_min(lo);  // min/max are exact in any order (the +-0 difference is erased by int4_group_params)
      hi = warp_max(hi);
      float s, lo0;
      int4_group_params(lo, hi, &s, &lo0);
      sb = f_to_bf16_bits(s);
      sf = bf16_bits_to_f(sb);
      zb = f_to_bf16_bits(-lo0 / sf);
      zf = bf16_bits_to_f(zb);
    } else {
      float amax = fabsf(v[0]);
#pragma unroll
      for (int e = 1; e < E; ++e) amax = fmaxf(amax, fabsf(v[e]));
      amax = warp_max(amax);  // exact in any order
      sb = f_to_bf16_bits(scheme == kInt4SchemeSym ? int4_sym_scale(amax) : (amax > 0.f ? amax : 1.f));
      sf = bf16_bits_to_f(sb);
      zf = scheme == kInt4SchemeSym ? 8.f : 0.f;
      zb = f_to_bf16_bits(zf);
    }
    if (lane == 0) {
      scales[wg] = sb;
      zeros[wg] = zb;
    }
    auto code = [&](float x) { return scheme == kInt4SchemeNf4 ? int4_nf4_code(x / sf) : int4_code(x, sf, zf); };
    if (E == 1) {
      const int c = code(v[0]);
      const int odd = __shfl_down_sync(0xffffffffu, c, 1);
      if ((lane & 1) == 0) out[lane / 2] = pack2(c, odd);
    } else {
#pragma unroll
      for (int e = 0; e < E; e += 2) out[(lane * E + e) / 2] = pack2(code(v[e]), code(v[e + 1]));
    }
  }
}

// ============================================================ dequantize

// One thread per 16-byte chunk (32 codes, one group): out[r, c*32 + j] = (code - zero) * scale, the CPU's f32
// expression, stored as f32 or rounded to bf16 like the host.
template <typename TO>
__global__ void __launch_bounds__(256) dequantize_int4_kernel(const uint4* __restrict__ codes,
                                                              const uint16_t* __restrict__ scales,
                                                              const uint16_t* __restrict__ zeros, TO* __restrict__ out,
                                                              int64_t n, int64_t k, int g, int codebook) {
  const int64_t cpr = k / 32, total = n * cpr, kg = k / g;
  const float nf4[16] = {GLM4_NF4_VALUES};
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cpr, c = i - r * cpr;
    const uint4 q = codes[i];
    const int64_t gi = r * kg + (c * 32) / g;
    const float s = bf16_bits_to_f(scales[gi]), z = bf16_bits_to_f(zeros[gi]);
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    float v[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const uint32_t q = (words[j >> 3] >> ((j & 7) * 4)) & 0xfu;
      v[j] = ((codebook == kInt4CodebookNf4 ? nf4[q] : static_cast<float>(q)) - z) * s;
    }
    TO* o = out + r * k + c * 32;
    if constexpr (sizeof(TO) == 4) {
#pragma unroll
      for (int j = 0; j < 32; j += 4) *reinterpret_cast<float4*>(o + j) = make_float4(v[j], v[j + 1], v[j + 2], v[j + 3]);
    } else {
#pragma unroll
      for (int j = 0; j < 32; j += 8) {
        uint4 p;
        p.x = f_to_bf16_bits(v[j + 0]) | (static_cast<uint32_t>(f_to_bf16_bits(v[j + 1])) << 16);
        p.y = f_to_bf16_bits(v[j + 2]) | (static_cast<uint32_t>(f_to_bf16_bits(v[j + 3])) << 16);
        p.z = f_to_bf16_bits(v[j + 4]) | (static_cast<uint32_t>(f_to_bf16_bits(v[j + 5])) << 16);
        p.w = f_to_bf16_bits(v[j + 6]) | (static_cast<uint32_t>(f_to_bf16_bits(v[j + 7])) << 16);
        *reinterpret_cast<uint4*>(o + j) = p;
      }
    }
  }
}

// ============================================================ GEMV (decode, M <= 8)
//
// A warp owns R consecutive output rows; the block's warps walk K together in tiles of TC = 32*U chunks of 16
// bytes (32 codes, one scale/zero), lane l taking chunks l, l+32, ... of the tile in each of its rows (a warp load
// covers 512 contiguous bytes of a row). The next tile's codes are loaded into registers before the current tile
// is computed, so every warp keeps U*R 16-byte loads in flight while it does arithmetic.
//
// x is staged per tile in shared memory, shared by all warps of the block: chunk c's 32 floats at c*36 floats
// (padding 4: the 8 lanes of a quarter warp, which read 8 different chunks, hit 8 different bank quads), plus
// each chunk's sum of x. (Reading x straight from L1 in this chunk-per-lane pattern touches 32 cache lines per
// warp load and capped the kernel at ~1.5 TB/s on the H100, falling as 1/M.)
//
// Dequantization without a table and without int->float conversions: a nibble q placed in bits 19..22 of the
// word 0x3F000000 is the float 0.5 + q/32 (exact). One PRMT per code builds it from a pre-shifted byte:
//   lo = (w << 3) & 0x78787878   -> bytes hold q<<3 of codes 0,2,4,6 of the word
//   hi = (w >> 1) & 0x78787878   -> codes 1,3,5,7
//   f  = prmt(lo, 0x3F000000, byte b -> byte 2, 0x3F -> byte 3)
// With f = 0.5 + q/32, for one chunk (one scale s, one zero z):
//   sum_k x_k (q_k - z) s = s * (32 * sum_k x_k f_k - (16 + z) * sum_k x_k)
// so the inner loop is one PRMT and one FFMA per code and row (sum_k x_k comes from the staging). The f32
// rounding of sum x f costs ~4 bits against a plain f32 dot product (|q/32| <= 0.47 next to 0.5): relative
// error ~1e-6, far below the bf16 scales' own rounding.
template <int M, int R_>
struct GemvShape {
  static constexpr int R = R_;                  // rows per warp: more rows share each x read
  static constexpr int U = M == 1 ? 2 : 1;      // chunks per lane per tile (x tile: M * U * 4.5 KB of smem)
  static constexpr int WARPS = M <= 4 ? 4 : 8;  // more warps share the x tile when it is large
  static constexpr int THREADS = WARPS * 32;
  static constexpr int TC = 32 * U;             // chunks per tile
  static constexpr int XS = 36;                 // floats per staged chunk (32 + 4 padding)
  static constexpr int XV = TC * 8 / THREADS;   // float4 of one x row per thread per tile
  // M <= 3: at most 128 registers (>= 16 warps an SM, 64 KB of weight loads in flight); larger M needs more
  static constexpr int MIN_BLOCKS = M <= 3 ? 65536 / (128 * THREADS) : 1;
  static_assert(R == 2 || R == 4, "rows per warp");
  static_assert(TC * 8 % THREADS == 0, "x tile split");
};

__device__ __forceinline__ float nib_f(uint32_t bytes, uint32_t sel) {
  return __uint_as_float(__byte_perm(bytes, 0x3F000000u, sel));
}

template <int M, int R_>
__global__ void __launch_bounds__(GemvShape<M, R_>::THREADS, GemvShape<M, R_>::MIN_BLOCKS)
    gemv_int4_kernel(const float* __restrict__ x, const uint8_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                     const uint16_t* __restrict__ zeros, tc::Epilogue ep, int K, int gshift) {
  using SH = GemvShape<M, R_>;
  constexpr int R = SH::R, U = SH::U, WARPS = SH::WARPS, THREADS = SH::THREADS, TC = SH::TC, XS = SH::XS, XV = SH::XV;
  __shared__ __align__(16) float xt[M][TC * XS];  // x tile, chunk-padded
  __shared__ float xsum[M][TC];                   // sum of each chunk of x

  const int N = ep.N;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int row0 = (blockIdx.x * WARPS + warp) * R;  // rows past N repeat row N-1 and are not written
  const int C = K >> 5;                               // 16-byte chunks per row
  const int KG = C >> gshift;                         // groups per row (a group is 2^gshift chunks)
  const int ntiles = (C + TC - 1) / TC;
  const uint64_t pol = l2_evict_first_policy();

  const int64_t rb = K >> 1;  // bytes per row of codes
  auto row_of = [&](int r) { return static_cast<int64_t>(min(row0 + r, N - 1)); };

  uint4 qn[U][R];
  uint32_t szn[U][R];  // scale bits | zero bits << 16
  float4 xr[M][XV];
  auto load_codes = [&](int tile) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = tile * TC + u * 32 + lane;
      const bool ok = c < C;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int64_t n = row_of(r);
        qn[u][r] = ok ? ld_stream16(codes + n * rb + c * 16, pol) : make_uint4(0, 0, 0, 0);
        const int64_t gi = n * KG + (c >> gshift);
        szn[u][r] = ok ? (static_cast<uint32_t>(__ldg(scales + gi)) | (static_cast<uint32_t>(__ldg(zeros + gi)) << 16)) : 0u;
      }
    }
  };
  auto load_x = [&](int tile) {  // float4 f of the tile: chunk f/8, floats (f%8)*4 ..; coalesced
#pragma unroll
    for (int v = 0; v < XV; ++v) {
      const int f = tid + v * THREADS, c = tile * TC + (f >> 3);
#pragma unroll
      for (int m = 0; m < M; ++m)
        xr[m][v] = c < C ? ldg4(x + static_cast<int64_t>(m) * K + c * 32 + (f & 7) * 4) : make_float4(0.f, 0.f, 0.f, 0.f);
    }
  };

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  load_codes(0);
  load_x(0);
  for (int tile = 0; tile < ntiles; ++tile) {
    __syncthreads();  // the previous tile's x has been read by every warp
#pragma unroll
    for (int v = 0; v < XV; ++v) {
      const int f = tid + v * THREADS, cc = f >> 3;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        *reinterpret_cast<float4*>(&xt[m][cc * XS + (f & 7) * 4]) = xr[m][v];
        float t = (xr[m][v].x + xr[m][v].y) + (xr[m][v].z + xr[m][v].w);
        t += __shfl_xor_sync(0xffffffffu, t, 1);  // the 8 threads of a chunk are consecutive lanes
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        t += __shfl_xor_sync(0xffffffffu, t, 4);
        if ((f & 7) == 0) xsum[m][cc] = t;
      }
    }
    __syncthreads();
    uint4 q[U][R];
    uint32_t sz[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) {
        q[u][r] = qn[u][r];
        sz[u][r] = szn[u][r];
      }
    if (tile + 1 < ntiles) {  // in flight during the arithmetic below
      load_codes(tile + 1);
      load_x(tile + 1);
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int cl = u * 32 + lane;  // chunk within the tile
      if (tile * TC + cl >= C) break;
      float dot[R][M];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < M; ++m) dot[r][m] = 0.f;
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // word j: codes 8j .. 8j+7 of the chunk
        uint32_t lo[R], hi[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const uint32_t w = j == 0 ? q[u][r].x : j == 1 ? q[u][r].y : j == 2 ? q[u][r].z : q[u][r].w;
          lo[r] = (w << 3) & 0x78787878u;
          hi[r] = (w >> 1) & 0x78787878u;
        }
#pragma unroll
        for (int h = 0; h < 2; ++h) {  // codes 8j+4h .. 8j+4h+3 = lo.b(2h), hi.b(2h), lo.b(2h+1), hi.b(2h+1)
          float4 xv[M];
#pragma unroll
          for (int m = 0; m < M; ++m) xv[m] = *reinterpret_cast<const float4*>(&xt[m][cl * XS + 8 * j + 4 * h]);
          // PRMT selector: result bytes (0, 1, 2, 3) <- (y.b0 = 0, y.b0 = 0, x.b(code byte), y.b3 = 0x3F)
          const uint32_t s0 = 0x7044u | ((2u * h) << 8), s1 = 0x7044u | ((2u * h + 1u) << 8);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            const float f0 = nib_f(lo[r], s0), f1 = nib_f(hi[r], s0);
            const float f2 = nib_f(lo[r], s1), f3 = nib_f(hi[r], s1);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float d = dot[r][m];
              d = fmaf(xv[m].x, f0, d);
              d = fmaf(xv[m].y, f1, d);
              d = fmaf(xv[m].z, f2, d);
              d = fmaf(xv[m].w, f3, d);
              dot[r][m] = d;
            }
          }
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float s = __uint_as_float(sz[u][r] << 16), zz = 16.f + __uint_as_float(sz[u][r] & 0xffff0000u);
#pragma unroll
        for (int m = 0; m < M; ++m) acc[r][m] = fmaf(s, fmaf(32.f, dot[r][m], -zz * xsum[m][cl]), acc[r][m]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int n = row0 + r;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      const float v = warp_sum(acc[r][m]);
      if (lane == 0 && n < N) ep.y[static_cast<int64_t>(m) * N + n] = v + ep.bias(n);
    }
  }
}

// ============================================================ GEMM tile loader (prefill, M > 8)

// W tile [BN rows of N][BK = 32 columns of K] from canonical codes: thread t loads 8 bytes (16 codes) of row
// t/2, dequantizes them with the CPU's f32 expression (code - zero) * scale and rounds to bf16 (the same values
// dequantize_int4 writes as bf16).
struct Int4Tile {
  struct Params {
    const uint8_t* codes;
    const uint16_t* scales;
    const uint16_t* zeros;
    int group;
  };
  uint2 q;
  float s, z;
  __device__ __forceinline__ void load(const Params& p, int N, int K, int n0, int k0) {
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1, n = n0 + row;
    if (n < N) {
      q = __ldg(reinterpret_cast<const uint2*>(p.codes + static_cast<int64_t>(n) * (K >> 1) + (k0 >> 1) + half * 8));
      const int64_t gi = static_cast<int64_t>(n) * (K / p.group) + k0 / p.group;
      s = bf16_bits_to_f(__ldg(p.scales + gi));
      z = bf16_bits_to_f(__ldg(p.zeros + gi));
    } else {
      q = make_uint2(0, 0);
      s = 0.f;
      z = 0.f;
    }
  }
  __device__ __forceinline__ void store(uint16_t (*sm)[tc::LDS]) const {
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint32_t w = j == 0 ? q.x : q.y;
      float f[8];
#pragma unroll
      for (int i = 0; i < 8; ++i)  // 0x4B000000 | q is the float 2^23 + q: subtracting 2^23 gives q exactly
        f[i] = (__uint_as_float(0x4B000000u | ((w >> (4 * i)) & 0xfu)) - 8388608.f - z) * s;
      uint4 o;
      o.x = tc::pack_bf16x2(f[0], f[1]);
      o.y = tc::pack_bf16x2(f[2], f[3]);
      o.z = tc::pack_bf16x2(f[4], f[5]);
      o.w = tc::pack_bf16x2(f[6], f[7]);
      *reinterpret_cast<uint4*>(&sm[row][half * 16 + j * 8]) = o;
    }
  }
};

// ============================================================ launch helpers

template <typename T>
void launch_quantize(cudaStream_t st, const T* w, const float* cs, const QWeight& q, int scheme) {
  const int64_t groups = q.n * (q.k / q.group);
  const int64_t blocks64 = std::min<int64_t>((groups + 7) / 8, 1 << 20);
  const unsigned blocks = static_cast<unsigned>(std::max<int64_t>(blocks64, 1));
  uint8_t* codes = q.codes.data<uint8_t>();
  uint16_t* sc = q.scales.data<uint16_t>();
  uint16_t* zr = q.zeros.data<uint16_t>();
  switch (q.group) {
    case 32: quantize_int4_kernel<T, 1><<<blocks, 256, 0, st>>>(w, cs, codes, sc, zr, q.n, q.k, scheme); break;
    case 64: quantize_int4_kernel<T, 2><<<blocks, 256, 0, st>>>(w, cs, codes, sc, zr, q.n, q.k, scheme); break;
    case 128: quantize_int4_kernel<T, 4><<<blocks, 256, 0, st>>>(w, cs, codes, sc, zr, q.n, q.k, scheme); break;
    default: GLM4_FAIL(GLM4_E_INVALID_ARG, "quantize_int4: group size ", q.group, " is not 32, 64 or 128");
  }
  CUDA_CHECK_LAUNCH("quantize_int4");
}

template <int M, int R>
void launch_gemv_r(cudaStream_t st, const float* x, const QWeight& w, const tc::Epilogue& ep) {
  using SH = GemvShape<M, R>;
  constexpr int rows_per_block = SH::R * SH::WARPS;
  const unsigned blocks = static_cast<unsigned>((w.n + rows_per_block - 1) / rows_per_block);
  const int gshift = w.group == 32 ? 0 : w.group == 64 ? 1 : 2;
  gemv_int4_kernel<M, R><<<blocks, SH::THREADS, 0, st>>>(x, w.codes.data<uint8_t>(), w.scales.data<uint16_t>(),
                                                        w.zeros.data<uint16_t>(), ep, static_cast<int>(w.k), gshift);
  CUDA_CHECK_LAUNCH("matmul_int4 (gemv)");
}

// Rows per warp: 4 rows share every x read, but a small matrix (GLM-4's qkv, o_proj, down: N <= 4608) then has
// too few warps to keep enough loads in flight (~9 warps an SM): there 2 rows a warp (H100: qkv 7.6 -> 7.3 us,
// o_proj 5.9 -> 5.5, down 15.8 -> 14.1). Larger M always uses 2 (registers).
template <int M>
void launch_gemv(cudaStream_t st, const float* x, const QWeight& w, const tc::Epilogue& ep) {
  if constexpr (M <= 3) {
    if (w.n >= 16384) {
      launch_gemv_r<M, 4>(st, x, w, ep);
      return;
    }
  }
  launch_gemv_r<M, 2>(st, x, w, ep);
}

}  // namespace

// ============================================================ ops

void quantize_int4(Context& c, const QWeight& q, const Tensor& w, int64_t scheme, const Tensor& col_scale) {
  if (q.n == 0 || q.k == 0) return;
  cudaStream_t st = stream_of(c);
  const float* cs = col_scale.defined() ? col_scale.data<float>() : nullptr;
  const int sc = static_cast<int>(scheme);
  switch (w.dtype()) {
    case DType::F32: launch_quantize(st, w.data<float>(), cs, q, sc); break;
    case DType::BF16: launch_quantize(st, w.data<Bf16>(), cs, q, sc); break;
    case DType::F16: launch_quantize(st, w.data<F16>(), cs, q, sc); break;
    default: GLM4_FAIL(GLM4_E_DTYPE, "quantize_int4: w must be bf16, f16 or f32, got ", w.describe());
  }
}

void dequantize_int4(Context& c, const Tensor& out, const QWeight& q) {
  if (q.n == 0 || q.k == 0) return;
  if (q.layout == kInt4LayoutTiled) {
    dequantize_int4_tiled(c, out, q);
    return;
  }
  GLM4_CHECK(aligned16(q.codes.raw()) && aligned16(out.raw()), GLM4_E_INVALID_ARG,
             "dequantize_int4: codes and out must be 16-byte aligned (got ", q.codes.describe(), ", ", out.describe(), ")");
  const int64_t chunks = q.n * (q.k / 32);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((chunks + 255) / 256, 1 << 20));
  cudaStream_t st = stream_of(c);
  const auto* codes = reinterpret_cast<const uint4*>(q.codes.raw());
  const uint16_t* sc = q.scales.data<uint16_t>();
  const uint16_t* zr = q.zeros.data<uint16_t>();
  if (out.dtype() == DType::F32)
    dequantize_int4_kernel<float><<<blocks, 256, 0, st>>>(codes, sc, zr, out.data<float>(), q.n, q.k, q.group, q.codebook);
  else
    dequantize_int4_kernel<Bf16><<<blocks, 256, 0, st>>>(codes, sc, zr, out.data<Bf16>(), q.n, q.k, q.group, q.codebook);
  CUDA_CHECK_LAUNCH("dequantize_int4");
}

void matmul_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias) {
  const int64_t m = x.dim(0);
  if (w.layout == kInt4LayoutTiled) {  // the kernel layout: linear_plan (gemm_int4.cu) picks the kernel
    const LinearPlan plan = linear_plan(m, w.n, w.k, w.group, w.layout, out.dtype() == DType::BF16);
    if (plan.kind == LinearKind::Gemv) {
      matmul_int4_tiled(c, out, x, w, bias);  // gemv_int4.cu: the tensor-core GEMV
      return;
    }
    gemm_int4_layout1(c, out, x, w, bias, plan);  // gemm_int4.cu: either codebook
    return;
  }
  GLM4_CHECK(w.layout == 0, GLM4_E_UNSUPPORTED, "matmul_int4: layout ", w.layout,
             " is not implemented by the CUDA backend; pass the canonical layout 0");
  GLM4_CHECK(w.codebook == kInt4CodebookInt, GLM4_E_UNSUPPORTED, "matmul_int4: the CUDA kernels of the canonical layout read ",
             "integer codes only; repack an NF4 weight to layout 1 (repack_int4)");
  if (m == 0 || w.n == 0) return;
  GLM4_CHECK(w.k > 0 && w.k % 32 == 0 && (w.group == 32 || w.group == 64 || w.group == 128), GLM4_E_SHAPE,
             "matmul_int4: K=", w.k, " with group ", w.group, " is not a valid INT4 shape");
  GLM4_CHECK(w.n < (int64_t{1} << 31) && w.k < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED,
             "matmul_int4: [", m, ",", w.k, "] x [", w.n, ",", w.k, "] exceeds 32-bit dimensions");
  GLM4_CHECK(aligned16(x.raw()) && aligned16(w.codes.raw()), GLM4_E_INVALID_ARG,
             "matmul_int4: x ", x.describe(), " and codes ", w.codes.describe(), " must be 16-byte aligned");
  tc::Epilogue ep{out.data<float>(), nullptr, nullptr, static_cast<int>(m), static_cast<int>(w.n)};
  if (bias.defined()) {
    if (bias.dtype() == DType::F32)
      ep.bias_f32 = bias.data<float>();
    else
      ep.bias_bf16 = bias.data<uint16_t>();
  }
  cudaStream_t st = stream_of(c);
  const float* xs = x.data<float>();
  // The configurations instantiated: gemv for M = 1..8, the tensor-core GEMM for M > 8.
  switch (m) {
    case 1: launch_gemv<1>(st, xs, w, ep); return;
    case 2: launch_gemv<2>(st, xs, w, ep); return;
    case 3: launch_gemv<3>(st, xs, w, ep); return;
    case 4: launch_gemv<4>(st, xs, w, ep); return;
    case 5: launch_gemv<5>(st, xs, w, ep); return;
    case 6: launch_gemv<6>(st, xs, w, ep); return;
    case 7: launch_gemv<7>(st, xs, w, ep); return;
    case 8: launch_gemv<8>(st, xs, w, ep); return;
    default: {
      Int4Tile::Params p{w.codes.data<uint8_t>(), w.scales.data<uint16_t>(), w.zeros.data<uint16_t>(), w.group};
      tc::launch_gemm_tc<Int4Tile, true>(st, xs, p, static_cast<int>(m), static_cast<int>(w.n), static_cast<int>(w.k), ep,
                                         "matmul_int4 (gemm)");
    }
  }
}

}  // namespace cuda
}  // namespace glm4
