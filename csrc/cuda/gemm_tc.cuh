// Tiled tensor-core GEMM for prefill (M > 8): out f32[M,N] = x f32[M,K] * W^T (+ bias), W given by a tile loader
// (INT4 canonical codes dequantized to bf16 in int4.cu, bf16 rows in matmul.cu).
//
// Block tile 128 (M) x 128 (N) x 32 (K), 256 threads = 8 warps as 2 (M) x 4 (N), each warp 64 x 32 = 4 x 4
// mma.sync.m16n8k16 bf16 tiles with f32 accumulators (64 registers). Shared memory holds both operands as bf16,
// K-contiguous rows padded to 40 elements (80 bytes: the 8 row addresses of an ldmatrix phase fall in distinct
// bank quads), double buffered (40 KB static). The next K tile is fetched from global memory into registers
// while the current one feeds the tensor cores, then converted (x: f32 -> bf16, W: dequantized) into the other
// buffer: one __syncthreads per K tile. Rows beyond M or N read as zero and are not written.
// mma.sync and ldmatrix exist on sm_80 and later: every architecture this addon is built for.
#pragma once
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace tc {

constexpr int BM = 128, BN = 128, BK = 32, LDS = BK + 8, THREADS = 256;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const uint16_t* smem) {
  const uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(a)
               : "memory");
}
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats -> packed bf16x2 (round to nearest even; low half = first argument).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&h);
}

// x f32 [M, K] -> bf16 tile [BM][LDS]. VEC: K % 4 == 0 and x 16-byte aligned (float4 loads; a float4 is then
// either entirely inside [0, K) or entirely outside). Otherwise element loads with bounds checks.
template <bool VEC>
struct ATile {
  float4 v[4];
  __device__ __forceinline__ void load(const float* __restrict__ x, int M, int K, int m0, int k0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = threadIdx.x + i * THREADS, row = idx >> 3, col = (idx & 7) * 4;
      const int m = m0 + row, k = k0 + col;
      const float* p = x + static_cast<int64_t>(m) * K + k;
      if (VEC) {
        v[i] = (m < M && k < K) ? ldg4(p) : make_float4(0.f, 0.f, 0.f, 0.f);
      } else {
        const bool ok = m < M;
        v[i].x = (ok && k + 0 < K) ? __ldg(p + 0) : 0.f;
        v[i].y = (ok && k + 1 < K) ? __ldg(p + 1) : 0.f;
        v[i].z = (ok && k + 2 < K) ? __ldg(p + 2) : 0.f;
        v[i].w = (ok && k + 3 < K) ? __ldg(p + 3) : 0.f;
      }
    }
  }
  __device__ __forceinline__ void store(uint16_t (*s)[LDS]) const {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = threadIdx.x + i * THREADS, row = idx >> 3, col = (idx & 7) * 4;
      *reinterpret_cast<uint2*>(&s[row][col]) = make_uint2(pack_bf16x2(v[i].x, v[i].y), pack_bf16x2(v[i].z, v[i].w));
    }
  }
};

struct Epilogue {
  float* y;                  // [M, N]
  const float* bias_f32;     // [N] or null
  const uint16_t* bias_bf16; // [N] bf16 or null
  int M, N;
  __device__ __forceinline__ float bias(int n) const {
    return bias_f32 ? bias_f32[n] : (bias_bf16 ? bf16_bits_to_f(bias_bf16[n]) : 0.f);
  }
};

// BTile: a W tile loader with
//   struct Params;                      (kernel argument)
//   void load(const Params&, int N, int K, int n0, int k0);   global -> registers
//   void store(uint16_t (*s)[LDS]) const;                     registers -> bf16 tile [BN][LDS] (row = n)
template <class BTile, bool AVEC>
__global__ void __launch_bounds__(THREADS) gemm_tc_kernel(const float* __restrict__ x, typename BTile::Params bp, int M,
                                                          int N, int K, Epilogue ep) {
  __shared__ __align__(16) uint16_t As[2][BM][LDS];
  __shared__ __align__(16) uint16_t Bs[2][BN][LDS];

  const int m0 = blockIdx.x * BM, n0 = blockIdx.y * BN;  // x fastest: blocks that share a W tile run together
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int wm = (warp >> 2) * 64, wn = (warp & 3) * 32;

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  ATile<AVEC> at;
  BTile bt;
  const int ktiles = (K + BK - 1) / BK;
  at.load(x, M, K, m0, 0);
  bt.load(bp, N, K, n0, 0);
  at.store(As[0]);
  bt.store(Bs[0]);
  __syncthreads();

  for (int kt = 0; kt < ktiles; ++kt) {
    const int cur = kt & 1;
    const bool more = kt + 1 < ktiles;
    if (more) {  // in flight while the tensor cores work on the current tile
      at.load(x, M, K, m0, (kt + 1) * BK);
      bt.load(bp, N, K, n0, (kt + 1) * BK);
    }
#pragma unroll
    for (int ks = 0; ks < BK; ks += 16) {
      uint32_t a[4][4], b[4][2];
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) ldmatrix_x4(a[mt], &As[cur][wm + mt * 16 + (lane & 15)][ks + (lane >> 4) * 8]);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, &Bs[cur][wn + np * 16 + (lane & 7) + ((lane >> 4) << 3)][ks + ((lane >> 3) & 1) * 8]);
        b[2 * np][0] = r[0];
        b[2 * np][1] = r[1];
        b[2 * np + 1][0] = r[2];
        b[2 * np + 1][1] = r[3];
      }
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) mma_bf16_16816(acc[mt][nt], a[mt], b[nt][0], b[nt][1]);
    }
    if (more) {
      at.store(As[cur ^ 1]);
      bt.store(Bs[cur ^ 1]);
    }
    __syncthreads();
  }

  // C fragment: c0,c1 at (row g, cols 2t, 2t+1), c2,c3 at (row g+8, same cols); g = lane/4, t = lane%4.
  const int g = lane >> 2, t2 = (lane & 3) * 2;
#pragma unroll
  for (int nt = 0; nt < 4; ++nt) {
    const int n = n0 + wn + nt * 8 + t2;
    const float b0 = n < ep.N ? ep.bias(n) : 0.f, b1 = n + 1 < ep.N ? ep.bias(n + 1) : 0.f;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = m0 + wm + mt * 16 + g + h * 8;
        if (m >= ep.M) continue;
        float* yr = ep.y + static_cast<int64_t>(m) * ep.N;
        if (n < ep.N) yr[n] = acc[mt][nt][2 * h] + b0;
        if (n + 1 < ep.N) yr[n + 1] = acc[mt][nt][2 * h + 1] + b1;
      }
    }
  }
}

// Launch on `stream`; M, N > 0. Grid x walks M tiles so that the blocks reading one W tile are co-scheduled and
// the tile is fetched from DRAM about once (L2 serves the rest).
template <class BTile, bool AVEC>
inline void launch_gemm_tc(cudaStream_t stream, const float* x, const typename BTile::Params& bp, int M, int N, int K,
                           const Epilogue& ep, const char* name) {
  const dim3 grid(static_cast<unsigned>((M + BM - 1) / BM), static_cast<unsigned>((N + BN - 1) / BN));
  GLM4_CHECK(grid.y <= 65535u, GLM4_E_UNSUPPORTED, name, ": N=", N, " needs more than 65535 column tiles");
  gemm_tc_kernel<BTile, AVEC><<<grid, THREADS, 0, stream>>>(x, bp, M, N, K, ep);
  CUDA_CHECK_LAUNCH(name);
}

}  // namespace tc
}  // namespace cuda
}  // namespace glm4
