// Shared pieces of the INT4 x BF16 tensor-core GEMMs (gemm_int4_mma.cuh for sm_80+, gemm_int4_sm90.cuh for
// sm_90a): the operands, layout-1 dequantization in registers, and small PTX wrappers. Depends only on the CUDA
// headers, so the standalone kernel harness (bench/kernels/gemm_int4_bench.cu) includes the same code as the addon.
//
// The problem, for every kernel here: Y f32 [M, N] (+)= X bf16 [M, K] * W^T (+ bias), W [N, K] INT4 in the kernel
// layout 1 of core/int4_layout.h ("tiled16x64": 16 x 64 tiles whose lane words are mma.m16n8k16 A fragments).
// W plays the A operand (rows = output features), the M tokens play the N columns of the MMA, so each tile of the
// accumulators is D[n][m] = Y^T, written back transposed by the epilogue.
#pragma once
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "core/int4_layout.h"  // GLM4_NF4_VALUES (header-only)

namespace glm4 {
namespace gemmk {

// INT4 weight in layout 1 (N % 16 == 0, K % 64 == 0, group in 32/64/128).
struct L1Weight {
  const uint8_t* codes;    // u8 [N*K/2]: 512-byte tiles (nt, kt) at 512 * (nt * K/64 + kt); lane l's 16 bytes at 16 l
  const uint16_t* scales;  // bf16: element (n, gi) at ((n/16) * (K/G) + gi) * 16 + n%16
  const uint16_t* zeros;   // bf16, same layout as scales
  int n, k, group;
  int codebook = 0;        // 0: w = (q - z) s; 1 (NF4): w = (NF4[q] - z) s
};

// Output: y f32 [M, N] row-major; bias (at most one of the two) added once per element. accumulate: several
// K splits add into y with atomics (y zeroed first by the launcher; bias added by split 0).
struct Out {
  float* y;                   // f32 [M, N] (null when ybf is set)
  const float* bias_f32;      // [N] or null
  const uint16_t* bias_bf16;  // [N] bf16 or null
  int m, n;
  // Epilogue modes (the tensor-core GEMM's fusions, ops linear_int4 / matmul_int4 on CUDA layout 1, M > 8):
  // ybf: bf16 [M, N] out, the f32 result rounded to nearest even (whole tiles only: no K pieces);
  // acc: y += result (the residual add; K pieces add into y as they are, nothing is zeroed first).
  uint16_t* ybf = nullptr;
  bool acc = false;
};

__device__ __forceinline__ float bias_at(const Out& o, int n) {
  if (o.bias_f32) return o.bias_f32[n];
  if (o.bias_bf16) return __uint_as_float(static_cast<uint32_t>(o.bias_bf16[n]) << 16);
  return 0.f;
}

// ---------------------------------------------------------------- dequantization (layout 1 -> mma A fragment)
// bf16x2 fused multiply-add (sm_80+), round to nearest even.
__device__ __forceinline__ uint32_t fma_bf16x2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
__device__ __forceinline__ uint32_t bf16x2_splat(uint16_t h) { return static_cast<uint32_t>(h) | (static_cast<uint32_t>(h) << 16); }
__device__ __forceinline__ uint16_t f2bf_rn(float f) {
  const __nv_bfloat16 b = __float2bfloat16_rn(f);
  return *reinterpret_cast<const uint16_t*>(&b);
}

// Scale and zero of the two rows (g and g+8) that one lane's fragment covers, prepared for the FMA below:
// s2 = (s, s) and nzs2 = (-(z - zc) s, -(z - zc) s) as bf16x2, per row. zc is the code offset the dequantization
// subtracts exactly (8 for integer codes, 0 for NF4's table values), so the rounded constant is small: a zero near
// the middle of the code range (every roughly symmetric group; exactly 8 for symmetric quantization) leaves
// |z - 8| s << |w| instead of |z s| ~ 8 s.
struct GroupSZ {
  uint32_t s_lo, nzs_lo, s_hi, nzs_hi;  // lo: row g, hi: row g + 8
};
__device__ __forceinline__ GroupSZ make_sz(uint16_t s_g, uint16_t z_g, uint16_t s_g8, uint16_t z_g8, float zc) {
  GroupSZ r;
  const float sg = __uint_as_float(static_cast<uint32_t>(s_g) << 16), zg = __uint_as_float(static_cast<uint32_t>(z_g) << 16);
  const float sh = __uint_as_float(static_cast<uint32_t>(s_g8) << 16), zh = __uint_as_float(static_cast<uint32_t>(z_g8) << 16);
  r.s_lo = bf16x2_splat(s_g);
  r.s_hi = bf16x2_splat(s_g8);
  r.nzs_lo = bf16x2_splat(f2bf_rn(-(zg - zc) * sg));  // zg - zc is exact in f32
  r.nzs_hi = bf16x2_splat(f2bf_rn(-(zh - zc) * sh));
  return r;
}

// Field-wise select (a select of references would take the array's address and move it to local memory).
__device__ __forceinline__ GroupSZ pick(bool second, const GroupSZ& a, const GroupSZ& b) {
  GroupSZ r;
  r.s_lo = second ? b.s_lo : a.s_lo;
  r.nzs_lo = second ? b.nzs_lo : a.nzs_lo;
  r.s_hi = second ? b.s_hi : a.s_hi;
  r.nzs_hi = second ? b.nzs_hi : a.nzs_hi;
  return r;
}

// One layout-1 word (a lane's k16 sub-tile) -> the four bf16x2 registers of its mma A fragment.
// (word >> 4s) & 0x000F000F holds the codes (a[2s], a[2s+1]) in the low bits of each half; OR-ing the bf16 128.0
// (0x4300, whose mantissa unit is 1) makes the pair (128 + q0, 128 + q1) exactly; one FMA subtracts 136 (exact:
// q - 8 in [-8, 7] is representable), a second applies w = (q - 8) s + (-(z - 8) s). Registers 0 and 2 are row g,
// 1 and 3 row g + 8. Rounding: -(z - 8) s is rounded to bf16 once per group and the result once per weight
// (|error| <= 2^-9 (|(z - 8) s| + |w|)); with z = 8 (symmetric) that is the single rounding of (q - z) s. The first
// version subtracted 128 and rounded -z s (|error| up to 2^-9 (15 s + |w|)): on the H200 that tripled the int4
// model's logit error against the golden (2.7e-4..3.4e-4 vs 9.4e-5 before the tensor-core GEMM).
__device__ __forceinline__ void dequant_word(uint32_t w, const GroupSZ& sz, uint32_t (&a)[4]) {
  constexpr uint32_t kMagic = 0x43004300u, kOne = 0x3F803F80u, kNeg136 = 0xC308C308u;  // bf16 -136
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const uint32_t v = ((w >> (4 * s)) & 0x000F000Fu) | kMagic;
    const uint32_t q = fma_bf16x2(v, kOne, kNeg136);  // q - 8, exact
    a[s] = (s & 1) ? fma_bf16x2(q, sz.s_hi, sz.nzs_hi) : fma_bf16x2(q, sz.s_lo, sz.nzs_lo);
  }
}

// NF4 (codebook 1): a 256-entry table in shared memory maps the two codes of a fragment register (q0 | q1 << 4)
// to the bf16 pair (NF4[q0], NF4[q1]); one ld.shared replaces the magic-number step, the scale/zero FMA is the same.
// The table values are NF4 rounded to bf16 (relative 2^-9, like the weights' own rounding).
constexpr int kNf4LutBytes = 256 * 4;
static __constant__ float kNf4Const[16] = {GLM4_NF4_VALUES};  // indexed at run time: constant memory, not a stack array
__device__ __forceinline__ void fill_nf4_lut(uint32_t* lut, int tid, int nthreads) {
  for (int i = tid; i < 256; i += nthreads)
    lut[i] = static_cast<uint32_t>(f2bf_rn(kNf4Const[i & 15])) | (static_cast<uint32_t>(f2bf_rn(kNf4Const[i >> 4])) << 16);
}
__device__ __forceinline__ void dequant_word_nf4(uint32_t w, const GroupSZ& sz, uint32_t lut, uint32_t (&a)[4]) {
#pragma unroll
  for (int s = 0; s < 4; ++s) {
    const uint32_t v = (w >> (4 * s)) & 0x000F000Fu;
    const uint32_t idx = (v | (v >> 12)) & 0xFFu;
    uint32_t pair;
    asm volatile("ld.shared.u32 %0, [%1];" : "=r"(pair) : "r"(lut + idx * 4));
    a[s] = (s & 1) ? fma_bf16x2(pair, sz.s_hi, sz.nzs_hi) : fma_bf16x2(pair, sz.s_lo, sz.nzs_lo);
  }
}

// ---------------------------------------------------------------- PTX wrappers (sm_80+)
__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint16_t lds16(uint32_t addr) {
  uint16_t v;
  asm volatile("ld.shared.u16 %0, [%1];" : "=h"(v) : "r"(addr));
  return v;
}

// 16-byte cp.async, zero-filling when !pred (the source address must still be valid: callers clamp it).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void red_add(float* p, float v) { asm volatile("red.global.add.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory"); }

// One output column n (a weight row) of a fragment tile: acc[4 i + off + e] -> y[m0 + 8 i + e][n] for the tile's
// I 8-token columns (m0 already holds the lane's 2t). Guards and bias are resolved once per column.
template <int I, int NACC>
__device__ __forceinline__ void store_column(const Out& o, const float (&acc)[NACC], int off, int m0, int n, bool split,
                                             bool add_bias) {
  if (n >= o.n) return;
  const float b = add_bias ? bias_at(o, n) : 0.f;
  if (o.ybf) {
    uint16_t* colb = o.ybf + n;
#pragma unroll
    for (int i = 0; i < I; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int m = m0 + 8 * i + e;
        if (m < o.m) colb[static_cast<int64_t>(m) * o.n] = f2bf_rn(acc[4 * i + off + e] + b);
      }
    return;
  }
  float* col = o.y + n;
  if (o.acc && !split) {
    // y += v for whole tiles: the loads of a chunk are issued together before its stores (a load after a store to
    // another row of y cannot be hoisted by the compiler: one load at a time was 2x the GEMM's time at M = 2048)
    constexpr int CH = I < 8 ? I : 8;
#pragma unroll
    for (int i0 = 0; i0 < I; i0 += CH) {
      float old[CH][2];
#pragma unroll
      for (int i = 0; i < CH; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int m = m0 + 8 * (i0 + i) + e;
          old[i][e] = m < o.m ? __ldcg(col + static_cast<int64_t>(m) * o.n) : 0.f;
        }
#pragma unroll
      for (int i = 0; i < CH; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int m = m0 + 8 * (i0 + i) + e;
          if (m < o.m) col[static_cast<int64_t>(m) * o.n] = old[i][e] + (acc[4 * (i0 + i) + off + e] + b);
        }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < I; ++i)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int m = m0 + 8 * i + e;
      if (m < o.m) {
        float* p = col + static_cast<int64_t>(m) * o.n;
        const float v = acc[4 * i + off + e] + b;
        if (split)
          red_add(p, v);
        else
          *p = v;
      }
    }
}

// Row m of the output at columns nbase + 8 i + e (i < I, e < 2), values val(i, e, n), by the Out's mode (bf16 out,
// K piece red.add, accumulate, store): the epilogue of the kernels whose lanes hold output rows (the swapped-operand
// kernels). Accumulate loads a chunk of values before storing them (see store_column).
template <int I, class F>
__device__ __forceinline__ void store_row(const Out& o, int m, int nbase, bool split, F&& val) {
  if (o.ybf) {
    uint16_t* r = o.ybf + static_cast<int64_t>(m) * o.n;
#pragma unroll
    for (int i = 0; i < I; ++i)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int n = nbase + 8 * i + e;
        if (n < o.n) r[n] = f2bf_rn(val(i, e, n));
      }
    return;
  }
  float* r = o.y + static_cast<int64_t>(m) * o.n;
  if (o.acc && !split) {
    constexpr int CH = I < 8 ? I : 8;
#pragma unroll
    for (int i0 = 0; i0 < I; i0 += CH) {
      float old[CH][2];
#pragma unroll
      for (int i = 0; i < CH; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = nbase + 8 * (i0 + i) + e;
          old[i][e] = n < o.n ? __ldcg(r + n) : 0.f;
        }
#pragma unroll
      for (int i = 0; i < CH; ++i)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int n = nbase + 8 * (i0 + i) + e;
          if (n < o.n) r[n] = old[i][e] + val(i0 + i, e, n);
        }
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < I; ++i)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int n = nbase + 8 * i + e;
      if (n < o.n) {
        const float v = val(i, e, n);
        if (split)
          red_add(r + n, v);
        else
          r[n] = v;
      }
    }
}

// Tile order shared by the persistent kernels: token blocks in panels of kPanel so that the tiles running at the
// same time share both their weight rows (consecutive tiles of a panel) and the panel's activations (L2-resident
// while the row blocks sweep past); K splits slowest.
constexpr int kPanel = 8;
struct TileCoord {
  int mb, nb, split;
};
__host__ __device__ __forceinline__ TileCoord tile_coord(int t, int n_mb, int n_nb) {
  const int per_split = n_mb * n_nb;
  TileCoord c;
  c.split = t / per_split;
  int r = t - c.split * per_split;
  const int full = n_mb / kPanel;  // complete panels
  const int in_full = full * kPanel * n_nb;
  if (r < in_full) {
    const int p = r / (kPanel * n_nb);
    r -= p * kPanel * n_nb;
    c.nb = r / kPanel;
    c.mb = p * kPanel + r % kPanel;
  } else {
    r -= in_full;
    const int w = n_mb - full * kPanel;  // width of the last panel (> 0 here)
    c.nb = r / w;
    c.mb = full * kPanel + r % w;
  }
  return c;
}

}  // namespace gemmk
}  // namespace glm4
