// Dense linear layers on CUDA: out f32[M,N] = x f32[M,K] * W^T (+ bias), W bf16 or f32 [N,K]; and add_bias.
//
// Kernel choice (one place, by design rather than measurement so far):
//   M <= 8          : gemv    -- a warp per R rows, 16-byte loads of W (8 bf16 / 4 f32), x through L1
//   M  > 8, W bf16  : tensor-core GEMM (gemm_tc.cuh), bf16 x bf16 -> f32
//   M  > 8, W f32   : a plain fp32 tiled GEMM (64x64 tiles), so that f32 weights keep f32 products
// Any K works: the 16-byte paths need K % 8 (bf16) or K % 4 (f32) and aligned pointers, else element loads.
#include <algorithm>

#include "gemm_tc.cuh"
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

// ============================================================ GEMV (M <= 8)

template <int M>
struct DenseGemvShape {
  static constexpr int R = M <= 4 ? 4 : 2;  // rows per warp
  static constexpr int U = 2;               // 16-byte chunks per lane in flight per row
  static constexpr int WARPS = 4;
};

// 16-byte chunk of W -> floats. bf16: 8 values, f32: 4 values.
template <typename W>
struct Chunk;
template <>
struct Chunk<Bf16> {
  static constexpr int E = 8;
  __device__ __forceinline__ static void unpack(const uint4& q, float (&f)[8]) {
    f[0] = bf16lo(q.x); f[1] = bf16hi(q.x); f[2] = bf16lo(q.y); f[3] = bf16hi(q.y);
    f[4] = bf16lo(q.z); f[5] = bf16hi(q.z); f[6] = bf16lo(q.w); f[7] = bf16hi(q.w);
  }
};
template <>
struct Chunk<float> {
  static constexpr int E = 4;
  __device__ __forceinline__ static void unpack(const uint4& q, float (&f)[4]) {
    f[0] = __uint_as_float(q.x); f[1] = __uint_as_float(q.y); f[2] = __uint_as_float(q.z); f[3] = __uint_as_float(q.w);
  }
};

// VEC: K % E == 0 and x, w 16-byte aligned: lane l takes 16-byte chunks l, l+32, ... of each of its rows.
// !VEC: lane l takes elements l, l+32, ... (correct for any K; used by odd test shapes only).
template <typename W, int M, bool VEC>
__global__ void __launch_bounds__(DenseGemvShape<M>::WARPS * 32, 1)
    gemv_dense_kernel(const float* __restrict__ x, const W* __restrict__ w, tc::Epilogue ep, int K) {
  constexpr int R = DenseGemvShape<M>::R, U = DenseGemvShape<M>::U, WARPS = DenseGemvShape<M>::WARPS;
  const int N = ep.N;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int row0 = (blockIdx.x * WARPS + warp) * R;
  if (row0 >= N) return;
  const W* rowp[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rowp[r] = w + static_cast<int64_t>(min(row0 + r, N - 1)) * K;

  float acc[R][M];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[r][m] = 0.f;

  if constexpr (VEC) {
    constexpr int E = Chunk<W>::E;
    const int C = K / E;
    const uint64_t pol = l2_evict_first_policy();
    for (int c0 = lane; c0 < C; c0 += 32 * U) {
      uint4 q[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          q[u][r] = c0 + u * 32 < C ? ld_stream16(rowp[r] + (c0 + u * 32) * E, pol) : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int c = c0 + u * 32;
        if (c >= C) break;
#pragma unroll
        for (int h = 0; h < E / 4; ++h) {
          float4 xv[M];
#pragma unroll
          for (int m = 0; m < M; ++m) xv[m] = ldg4(x + static_cast<int64_t>(m) * K + c * E + 4 * h);
#pragma unroll
          for (int r = 0; r < R; ++r) {
            float f[E];
            Chunk<W>::unpack(q[u][r], f);
#pragma unroll
            for (int m = 0; m < M; ++m) {
              float a = acc[r][m];
              a = fmaf(xv[m].x, f[4 * h + 0], a);
              a = fmaf(xv[m].y, f[4 * h + 1], a);
              a = fmaf(xv[m].z, f[4 * h + 2], a);
              a = fmaf(xv[m].w, f[4 * h + 3], a);
              acc[r][m] = a;
            }
          }
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
      float wv[R];
#pragma unroll
      for (int r = 0; r < R; ++r) wv[r] = load_f(rowp[r], k);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        const float xv = __ldg(x + static_cast<int64_t>(m) * K + k);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r][m] = fmaf(xv, wv[r], acc[r][m]);
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

template <typename W, int M>
void launch_gemv(cudaStream_t st, const float* x, const W* w, const tc::Epilogue& ep, int K) {
  constexpr int rows_per_block = DenseGemvShape<M>::R * DenseGemvShape<M>::WARPS;
  const unsigned blocks = static_cast<unsigned>((ep.N + rows_per_block - 1) / rows_per_block);
  const bool vec = K % Chunk<W>::E == 0 && aligned16(x) && aligned16(w);
  if (vec)
    gemv_dense_kernel<W, M, true><<<blocks, DenseGemvShape<M>::WARPS * 32, 0, st>>>(x, w, ep, K);
  else
    gemv_dense_kernel<W, M, false><<<blocks, DenseGemvShape<M>::WARPS * 32, 0, st>>>(x, w, ep, K);
  CUDA_CHECK_LAUNCH("matmul (gemv)");
}

template <typename W>
void gemv_dispatch(cudaStream_t st, int m, const float* x, const W* w, const tc::Epilogue& ep, int K) {
  switch (m) {  // the instantiated batch sizes
    case 1: launch_gemv<W, 1>(st, x, w, ep, K); break;
    case 2: launch_gemv<W, 2>(st, x, w, ep, K); break;
    case 3: launch_gemv<W, 3>(st, x, w, ep, K); break;
    case 4: launch_gemv<W, 4>(st, x, w, ep, K); break;
    case 5: launch_gemv<W, 5>(st, x, w, ep, K); break;
    case 6: launch_gemv<W, 6>(st, x, w, ep, K); break;
    case 7: launch_gemv<W, 7>(st, x, w, ep, K); break;
    case 8: launch_gemv<W, 8>(st, x, w, ep, K); break;
    default: GLM4_FAIL(GLM4_E_INTERNAL, "matmul: gemv called with M=", m);
  }
}

// ============================================================ bf16 W tile for the tensor-core GEMM

// W tile [BN = 128 rows][BK = 32 columns]: 4 x 16 bytes a row, 2 per thread. VEC: K % 8 == 0 and w 16-byte
// aligned (a 16-byte piece is then entirely inside or outside [0, K)); otherwise element loads.
template <bool VEC>
struct Bf16Tile {
  struct Params {
    const uint16_t* w;  // [N, K] bf16
  };
  uint4 v[2];
  __device__ __forceinline__ void load(const Params& p, int N, int K, int n0, int k0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int idx = threadIdx.x + i * tc::THREADS, row = idx >> 2, col = (idx & 3) * 8;
      const int n = n0 + row, k = k0 + col;
      const uint16_t* src = p.w + static_cast<int64_t>(n) * K + k;
      if (VEC) {
        v[i] = (n < N && k < K) ? __ldg(reinterpret_cast<const uint4*>(src)) : make_uint4(0, 0, 0, 0);
      } else {
        uint16_t e[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) e[j] = (n < N && k + j < K) ? __ldg(src + j) : uint16_t(0);
        v[i] = make_uint4(e[0] | (uint32_t(e[1]) << 16), e[2] | (uint32_t(e[3]) << 16), e[4] | (uint32_t(e[5]) << 16),
                          e[6] | (uint32_t(e[7]) << 16));
      }
    }
  }
  __device__ __forceinline__ void store(uint16_t (*s)[tc::LDS]) const {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int idx = threadIdx.x + i * tc::THREADS, row = idx >> 2, col = (idx & 3) * 8;
      *reinterpret_cast<uint4*>(&s[row][col]) = v[i];
    }
  }
};

// ============================================================ fp32 GEMM (f32 weights, M > 8)

// 64 x 64 output tile, K steps of 16, 256 threads with 4 x 4 outputs each; element loads with bounds checks.
constexpr int SG_T = 64, SG_K = 16;
__global__ void __launch_bounds__(256) sgemm_kernel(const float* __restrict__ x, const float* __restrict__ w,
                                                    tc::Epilogue ep, int K) {
  __shared__ float As[SG_K][SG_T + 4];  // [k][m]
  __shared__ float Bs[SG_K][SG_T + 4];  // [k][n]
  const int M = ep.M, N = ep.N;
  const int m0 = blockIdx.x * SG_T, n0 = blockIdx.y * SG_T;
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < K; k0 += SG_K) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int idx = threadIdx.x + i * 256, r = idx >> 4, kk = idx & 15;
      const int m = m0 + r, n = n0 + r, k = k0 + kk;
      As[kk][r] = (m < M && k < K) ? __ldg(x + static_cast<int64_t>(m) * K + k) : 0.f;
      Bs[kk][r] = (n < N && k < K) ? __ldg(w + static_cast<int64_t>(n) * K + k) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < SG_K; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        a[i] = As[kk][ty * 4 + i];
        b[i] = Bs[kk][tx * 4 + i];
      }
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty * 4 + i;
    if (m >= M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx * 4 + j;
      if (n < N) ep.y[static_cast<int64_t>(m) * N + n] = acc[i][j] + ep.bias(n);
    }
  }
}

// ============================================================ add_bias (and out = bias for K = 0)

__global__ void __launch_bounds__(256) fill_bias_kernel(tc::Epilogue ep, int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    ep.y[i] = ep.bias(static_cast<int>(i % ep.N));
}

template <typename B>
__global__ void __launch_bounds__(256) add_bias_kernel(float* __restrict__ x, const B* __restrict__ b, int64_t total,
                                                       int64_t n) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] += load_f(b, i % n);
}

}  // namespace

void matmul(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const int64_t m = x.dim(0), n = w.dim(0), k = w.dim(1);
  if (m == 0 || n == 0) return;
  GLM4_CHECK(m < (int64_t{1} << 31) && n < (int64_t{1} << 31) && k < (int64_t{1} << 31), GLM4_E_UNSUPPORTED,
             "matmul: x ", x.describe(), " and w ", w.describe(), " exceed 32-bit dimensions");
  tc::Epilogue ep{out.data<float>(), nullptr, nullptr, static_cast<int>(m), static_cast<int>(n)};
  if (bias.defined()) {
    if (bias.dtype() == DType::F32)
      ep.bias_f32 = bias.data<float>();
    else
      ep.bias_bf16 = bias.data<uint16_t>();
  }
  cudaStream_t st = stream_of(c);
  const float* xs = x.data<float>();
  const int K = static_cast<int>(k);
  if (k == 0) {  // an empty reduction: out = bias (or 0), like the CPU
    const int64_t total = m * n;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 1 << 16));
    fill_bias_kernel<<<blocks, 256, 0, st>>>(ep, total);
    CUDA_CHECK_LAUNCH("matmul (K=0)");
    return;
  }
  if (m <= 8) {
    if (w.dtype() == DType::BF16)
      gemv_dispatch<Bf16>(st, static_cast<int>(m), xs, w.data<Bf16>(), ep, K);
    else
      gemv_dispatch<float>(st, static_cast<int>(m), xs, w.data<float>(), ep, K);
    return;
  }
  if (w.dtype() == DType::BF16) {
    const bool avec = K % 4 == 0 && aligned16(xs);
    const bool bvec = K % 8 == 0 && aligned16(w.raw());
    if (avec && bvec)
      tc::launch_gemm_tc<Bf16Tile<true>, true>(st, xs, {w.data<uint16_t>()}, ep.M, ep.N, K, ep, "matmul (gemm)");
    else
      tc::launch_gemm_tc<Bf16Tile<false>, false>(st, xs, {w.data<uint16_t>()}, ep.M, ep.N, K, ep, "matmul (gemm)");
  } else {
    const dim3 grid(static_cast<unsigned>((m + SG_T - 1) / SG_T), static_cast<unsigned>((n + SG_T - 1) / SG_T));
    GLM4_CHECK(grid.y <= 65535u, GLM4_E_UNSUPPORTED, "matmul: N=", n, " is too large for the f32 GEMM");
    sgemm_kernel<<<grid, 256, 0, st>>>(xs, w.data<float>(), ep, K);
    CUDA_CHECK_LAUNCH("matmul (sgemm)");
  }
}

void add_bias(Context& c, const Tensor& x, const Tensor& b) {
  const int64_t total = x.numel(), n = x.dim(1);
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 1 << 16));
  if (b.dtype() == DType::F32)
    add_bias_kernel<float><<<blocks, 256, 0, stream_of(c)>>>(x.data<float>(), b.data<float>(), total, n);
  else
    add_bias_kernel<Bf16><<<blocks, 256, 0, stream_of(c)>>>(x.data<float>(), b.data<Bf16>(), total, n);
  CUDA_CHECK_LAUNCH("add_bias");
}

}  // namespace cuda
}  // namespace glm4
