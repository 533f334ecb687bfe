// INT4 (layout 1) x BF16 GEMM on mma.sync.m16n8k16 with a cp.async multistage pipeline: sm_80, 86, 89 (and
// sm_90 where the wgmma kernel does not apply). Dependency-free (see gemm_int4_common.cuh).
//
// Block tile: BR = WW*MW*16 weight rows x BT = WT*NT*8 tokens x 64 k per stage; WW*WT warps, warp (ww, wt) owns
// MW 16-row tiles x NT 8-token columns. A stage in shared memory holds
//   X  bf16 [BT][64]: 128-byte rows of 8 16-byte chunks, chunk c of row r stored at c ^ (r % 8), so that the 8 row
//      addresses of an ldmatrix phase fall in 8 different bank quads;
//   W  the block's RT = BR/16 layout-1 tiles of this k64 step, copied as they are (512 bytes each: lane l reads its
//      16-byte fragment words at 16 l, conflict-free);
//   S, Z  the scales and zeros of the stage's group(s) for the RT row tiles (16 bf16 per tile and group).
// All of it arrives by 16-byte cp.async, STAGES-1 stages ahead of the tensor cores. The W fragments are
// dequantized in registers (dequant_word) and fed to mma.sync as A; X comes through ldmatrix as B.
// K may be split over gridDim.z (small M: more blocks streaming the weights); the splits add into y with atomics.
#pragma once
#include "gemm_int4_common.cuh"

namespace glm4 {
namespace gemmk {

template <int WW_, int WT_, int MW_, int NT_, int STAGES_, int MINB_>
struct MmaCfg {
  static constexpr int WW = WW_, WT = WT_, MW = MW_, NT = NT_, STAGES = STAGES_, MINB = MINB_;
  static constexpr int THREADS = WW * WT * 32;
  static constexpr int BR = WW * MW * 16, BT = WT * NT * 8, RT = BR / 16;
  static constexpr int X_BYTES = BT * 128, W_BYTES = RT * 512, SZ_BYTES = RT * 64;  // SZ: room for 2 groups (G = 32)
  static constexpr int STAGE_BYTES = X_BYTES + W_BYTES + 2 * SZ_BYTES;
  static constexpr int SMEM = STAGES * STAGE_BYTES + kNf4LutBytes;  // the NF4 table after the stages
  static_assert(NT % 2 == 0, "B fragments are loaded two 8-token columns at a time");
};

template <class C>
__global__ void __launch_bounds__(C::THREADS, C::MINB)
    gemm_int4_mma_kernel(const __nv_bfloat16* __restrict__ x, L1Weight w, Out o) {
  extern __shared__ __align__(128) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ww = warp % C::WW, wt = warp / C::WW;
  const int M = o.m, N = w.n, K = w.k, G = w.group;
  const int KT = K >> 6, KG = K / G, NTILES = N >> 4;
  const int gps = G == 32 ? 2 : 1;  // groups per 64-k stage
  const int m0 = blockIdx.x * C::BT, rt0 = blockIdx.y * C::RT;
  const int splits = gridDim.z, split = blockIdx.z;
  const int kb = static_cast<int>(static_cast<int64_t>(KT) * split / splits);
  const int ke = static_cast<int>(static_cast<int64_t>(KT) * (split + 1) / splits);
  const int nk = ke - kb;
  const uint32_t sbase = smem_u32(smem);
  const uint16_t* xs = reinterpret_cast<const uint16_t*>(x);
  const bool nf4 = w.codebook == 1;
  const uint32_t lut = sbase + C::STAGES * C::STAGE_BYTES;
  if (nf4) fill_nf4_lut(reinterpret_cast<uint32_t*>(smem + C::STAGES * C::STAGE_BYTES), tid, C::THREADS);  // visible after the loop's first __syncthreads

  auto load_stage = [&](int slot, int kt) {
    const uint32_t st = sbase + slot * C::STAGE_BYTES;
    // X: BT rows x 8 chunks
    for (int c = tid; c < C::BT * 8; c += C::THREADS) {
      const int r = c >> 3, ch = c & 7, m = m0 + r;
      const bool ok = m < M;
      const uint16_t* src = xs + static_cast<int64_t>(ok ? m : 0) * K + kt * 64 + ch * 8;
      cp_async16(st + r * 128 + ((ch ^ (r & 7)) << 4), src, ok);
    }
    // W: RT tiles x 32 chunks, contiguous per tile
    const uint32_t sw = st + C::X_BYTES;
    for (int c = tid; c < C::RT * 32; c += C::THREADS) {
      const int rt = c >> 5, nt = rt0 + rt;
      const bool ok = nt < NTILES;
      const uint8_t* src = w.codes + (static_cast<int64_t>(ok ? nt : 0) * KT + kt) * 512 + (c & 31) * 16;
      cp_async16(sw + c * 16, src, ok);
    }
    // S, Z: per tile 16 bf16 per group (32 bytes = 2 chunks), gps groups
    const uint32_t ss = sw + C::W_BYTES, sz = ss + C::SZ_BYTES;
    const int gi0 = (kt * 64) / G;
    for (int c = tid; c < C::RT * 2 * gps; c += C::THREADS) {
      const int rt = c / (2 * gps), rem = c % (2 * gps), nt = rt0 + rt;
      const bool ok = nt < NTILES;
      const int64_t e = (static_cast<int64_t>(ok ? nt : 0) * KG + gi0) * 16 + rem * 8;  // rem: (group, half)
      cp_async16(ss + rt * 64 + rem * 16, w.scales + e, ok);
      cp_async16(sz + rt * 64 + rem * 16, w.zeros + e, ok);
    }
  };

  float acc[C::MW][C::NT][4];
#pragma unroll
  for (int i = 0; i < C::MW; ++i)
#pragma unroll
    for (int j = 0; j < C::NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

#pragma unroll
  for (int s = 0; s < C::STAGES - 1; ++s) {
    if (s < nk) load_stage(s, kb + s);
    cp_async_commit();
  }

  const int g = lane >> 2;
  for (int kk = 0; kk < nk; ++kk) {
    cp_async_wait<C::STAGES - 2>();
    __syncthreads();  // stage kk visible to all; slot (kk-1) % STAGES no longer read by anyone
    {
      const int pre = kk + C::STAGES - 1;
      if (pre < nk) load_stage(pre % C::STAGES, kb + pre);
      cp_async_commit();
    }
    const uint32_t st = sbase + (kk % C::STAGES) * C::STAGE_BYTES;
    const uint32_t sw = st + C::X_BYTES, ss = sw + C::W_BYTES, szz = ss + C::SZ_BYTES;
    uint4 raw[C::MW];
    GroupSZ gsz[C::MW];
#pragma unroll
    for (int i = 0; i < C::MW; ++i) raw[i] = lds128(sw + (ww * C::MW + i) * 512 + lane * 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j == 0 || (j == 2 && gps == 2)) {  // the stage's group (G = 32: a second one from sub-step 2)
#pragma unroll
        for (int i = 0; i < C::MW; ++i) {
          const uint32_t o0 = (ww * C::MW + i) * 64 + (j == 2 ? 32 : 0) + g * 2;  // row g + 8 at + 16
          gsz[i] = make_sz(lds16(ss + o0), lds16(szz + o0), lds16(ss + o0 + 16), lds16(szz + o0 + 16), nf4 ? 0.f : 8.f);
        }
      }
      uint32_t a[C::MW][4];
#pragma unroll
      for (int i = 0; i < C::MW; ++i) {
        const uint32_t word = j == 0 ? raw[i].x : j == 1 ? raw[i].y : j == 2 ? raw[i].z : raw[i].w;
        if (nf4)
          dequant_word_nf4(word, gsz[i], lut, a[i]);
        else
          dequant_word(word, gsz[i], a[i]);
      }
#pragma unroll
      for (int p = 0; p < C::NT / 2; ++p) {
        const int r = wt * C::NT * 8 + p * 16 + (lane & 7) + ((lane >> 4) << 3);
        const int ch = 2 * j + ((lane >> 3) & 1);
        uint32_t b[4];
        ldmatrix_x4(b, st + r * 128 + ((ch ^ (r & 7)) << 4));
#pragma unroll
        for (int i = 0; i < C::MW; ++i) {
          mma_16816(acc[i][2 * p], a[i], b[0], b[1]);
          mma_16816(acc[i][2 * p + 1], a[i], b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

  // C fragment: c[2h + e] = D[row g + 8h][col 2t + e]; row = weight row n, col = token m.
  const int mc = m0 + wt * C::NT * 8 + (lane & 3) * 2;
#pragma unroll
  for (int i = 0; i < C::MW; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = (rt0 + ww * C::MW + i) * 16 + g + 8 * h;
      store_column<C::NT>(o, reinterpret_cast<const float(&)[C::NT * 4]>(acc[i]), 2 * h, mc, n, splits > 1, split == 0);
    }
}

// Launch; y must be zeroed beforehand when splits > 1. Returns the launch error.
template <class C>
inline cudaError_t launch_gemm_int4_mma(cudaStream_t st, const __nv_bfloat16* x, const L1Weight& w, const Out& o,
                                        int splits) {
  if (C::SMEM > 48 * 1024) {
    const cudaError_t e = cudaFuncSetAttribute(gemm_int4_mma_kernel<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>((o.m + C::BT - 1) / C::BT), static_cast<unsigned>((w.n / 16 + C::RT - 1) / C::RT),
                  static_cast<unsigned>(splits));
  gemm_int4_mma_kernel<C><<<grid, C::THREADS, C::SMEM, st>>>(x, w, o);
  return cudaGetLastError();
}

}  // namespace gemmk
}  // namespace glm4
