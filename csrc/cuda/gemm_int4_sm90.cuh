// INT4 (layout 1) x BF16 GEMM on Hopper's wgmma (sm_90a). Dependency-free (see gemm_int4_common.cuh); the
// tensor maps are encoded on the host through the driver entry point that the CUDA runtime hands out, so neither
// the addon nor the harness links libcuda.
//
// D = W X^T per block tile: BR = 2 * WR * 64 weight rows x TT tokens, 64 k per pipeline stage.
// - 3 warpgroups (384 threads), persistent (one block an SM, tiles in gemmk::tile_coord order):
//   warpgroup 0 = producer: one thread issues the TMA copies of each stage (X box [TT][64] bf16 with the 128-byte
//   swizzle, the RT = BR/16 layout-1 weight tiles, their scales and zeros) onto the stage's `full` mbarrier;
//   it keeps 40 registers (setmaxnreg) so that the consumers can have 232.
//   warpgroups 1, 2 = consumers: each owns WR x 64 weight rows. Warp w of a consumer reads its lane's 16 fragment
//   bytes of each of its 16-row tiles from shared memory (one ld.shared.v4: the 4 k16 words), dequantizes them in
//   registers (dequant_word: mask-and-shift, bf16 magic number, scale/zero FMA on bf16x2) and issues
//   wgmma.m64nTTk16 with A from registers and B = the X tile through a 128B-swizzle K-major descriptor.
// - A registers are read asynchronously by wgmma: the 4 k16 sub-steps use 4 register sets, and before set j is
//   rewritten, wgmma.wait_group 3 guarantees that the group which read it (4 commits earlier) is complete; the
//   previous stage's buffers are released (`empty` mbarrier) at sub-step 3 of the next stage, when all its groups
//   are complete. So the tensor cores always have up to 3 groups of each warpgroup queued while the next
//   fragments are dequantized.
// - Epilogue: the accumulators hold D[n][m]; each lane writes Y[m][n] (+ bias) directly (32-byte segments), or
//   adds into y with red.global when K is split across tiles (small M: more tiles streaming the weights).
#pragma once
#include <algorithm>
#include <type_traits>
#include <cuda.h>  // CUtensorMap and the encode function's types (the function itself comes from the runtime)

#include "gemm_int4_common.cuh"
#include "wgmma_bf16.cuh"

namespace glm4 {
namespace gemmk {

// ROLL: the rolling window of 3 wgmma groups in flight (the design above); false drains each stage's groups
// before the next stage (simpler, the tensor cores idle while a warpgroup dequantizes: kept as the reference
// variant that the harness times beside the rolling one).
// WIN: A register sets of the rolling window (4: up to 3 groups in flight; 8: up to 7, over two stages, the
// stage buffers released one stage later: for small tiles whose wgmma is short next to its latency; ROLL only).
// NC: consumer warpgroups a block (2: the first version's; 4: 640 threads, more independent wgmma chains an SM).
// MINB: blocks an SM (2: two persistent blocks of ~100 KB each share an SM: twice the consumer warpgroups and
// accumulator chains, half the stages each). ACCS: accumulator sets a row tile (2: consecutive k16 wgmmas of a
// warpgroup alternate between two accumulators, summed in the epilogue, so that no wgmma waits on the one before
// it for its C operand). Registers: the launch gives each thread R0 = 64K / (THREADS * MINB) (rounded down to 8);
// the producer keeps PREG = 40 and the consumers share the rest (setmaxnreg): 232 for 384 x 1 (as before), 96 for
// 384 x 2, 104 for 640 x 1.
// PROBE (harness diagnosis only, never planned: the output is wrong by design): 1 = no wgmma (the dequantization,
// barriers and loads of the real kernel, no tensor work), 2 = no dequantization (the raw words go to wgmma as A;
// no scale/zero loads), 3 = the same wgmmas with A from shared memory (SS) instead of registers (the dequantization
// still runs), 4 = swapped operands: per k16 one m64n128k16 SS a warpgroup (A = the 64-token X tile, B = 128 rows
// of the stage), the tile's work in a quarter of the instructions (no store of dequantized weights: a lower bound
// of a weights-as-B kernel). What each saves against PROBE 0 says which part of the consumer's k-step bounds it.
// LA: look-ahead dequantization (rolling WIN 4 only): sub-step j+1's A registers are dequantized before sub-step
// j's wgmma is issued, so that no wgmma waits on registers written just before it (2-3 groups in flight instead of 3).
template <int WR_, int TT_, int STAGES_, bool ROLL_ = true, int WIN_ = 4, int NC_ = 2, int MINB_ = 1, int ACCS_ = 1,
          int PROBE_ = 0, bool LA_ = false>
struct Sm90Cfg {
  static constexpr int WR = WR_, TT = TT_, STAGES = STAGES_;
  static constexpr bool ROLL = ROLL_;
  static constexpr int WIN = WIN_;
  static constexpr int NC = NC_, MINB = MINB_, ACCS = ACCS_, PROBE = PROBE_;
  static constexpr bool LA = LA_;
  static_assert(!LA || (WIN == 4 && ROLL_ && PROBE_ == 0), "look-ahead: the rolling WIN 4 loop");
  static_assert(PROBE == 0 || (WIN == 4 && ROLL_), "probes: the rolling WIN 4 loop only");
  static_assert(PROBE != 4 || (WR_ == 2 && TT_ == 64 && NC_ == 2 && ACCS_ == 1), "probe 4: r256 t64 only");
  static_assert(WIN == 4 || (WIN == 8 && ROLL_ && STAGES_ >= 6), "WIN 8: rolling, and stages for 3 held + loads");
  static_assert(NC == 2 || NC == 4, "2 or 4 consumer warpgroups");
  static_assert(MINB == 1 || MINB == 2, "1 or 2 blocks an SM");
  static_assert(ACCS == 1 || ACCS == 2, "1 or 2 accumulator sets");
  static constexpr int THREADS = 128 * (NC + 1);
  static constexpr int R0 = (65536 / (THREADS * MINB) > 255 ? 255 : 65536 / (THREADS * MINB)) & ~7;
  static constexpr int PREG = 40;
  static constexpr int CREG_RAW = ((R0 * THREADS - 128 * PREG) / (128 * NC)) & ~7;
  static constexpr int CREG = CREG_RAW > 232 ? 232 : CREG_RAW;
  static constexpr int RT = NC * WR * 4;  // 16-row tiles per block
  static constexpr int BR = RT * 16;
  static constexpr int X_BYTES = TT * 128;            // multiple of 1024 for TT % 8 == 0: keeps the swizzle atoms aligned
  static constexpr int W_BYTES = RT * 512;
  static constexpr int SZ_BYTES = RT * 64;            // room for 2 groups (G = 32) of 16 bf16 per tile
  static constexpr int STAGE_BYTES = X_BYTES + W_BYTES + 2 * SZ_BYTES;
  static constexpr int SMEM = STAGES * STAGE_BYTES + 1024 /* alignment */ + 2 * STAGES * 8 /* mbarriers */ + kNf4LutBytes;
  static_assert(STAGE_BYTES % 1024 == 0, "stages must keep X 1024-byte aligned (128B swizzle)");
  static_assert(TT % 16 == 0 && TT <= 256, "wgmma N");
  static_assert(SMEM <= 232448 && (SMEM + 1024) * MINB <= 233472, "shared memory of MINB blocks must fit an SM (228 KB, 1 KB a block reserved)");
};

// ---------------------------------------------------------------- PTX: mbarrier, TMA, wgmma bookkeeping
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred p;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
      "@!p bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Shared-memory A (SS) wgmma: d += A(desc) B(desc). The probes (PROBE 3 and 4: what the tensor cores cost when A comes
// from shared memory instead of registers, and with the operands swapped so that N = weight rows) and the swapped
// kernels (gemm_int4_sm90_swap_kernel: A = the X tile, B = dequantized weights).
template <int N>
struct WgmmaSS;
template <>
struct WgmmaSS<32> {
  __device__ __forceinline__ static void mma(float (&d)[16], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(desc_a), "l"(desc_b));
  }
};
template <>
struct WgmmaSS<64> {
  __device__ __forceinline__ static void mma(float (&d)[32], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(desc_a), "l"(desc_b));
  }
};
template <>
struct WgmmaSS<128> {
  __device__ __forceinline__ static void mma(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b));
  }
};
template <>
struct WgmmaSS<256> {
  __device__ __forceinline__ static void mma(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(desc_a), "l"(desc_b));
  }
};
// Keeps a register value alive (and in place) up to this point: A fragments read by in-flight wgmma.
__device__ __forceinline__ void keep(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ void keep(float& r) { asm volatile("" : "+f"(r)::"memory"); }
#endif

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) |
         (uint64_t{1} << 62);
}

struct Sm90Maps {
  CUtensorMap x, w, s, z;
};

// Work schedule of the persistent kernel over `tiles` output tiles (in tile_coord order): the first `dp` tiles
// whole (direct stores), then each of the other tiles in `splits` K pieces that add into y with red.global (y
// zeroed first over those tiles; bias added by piece 0). Units are handed out round robin (unit u -> block
// u % grid), whole tiles first: the K pieces fill the last, partial round of SMs that whole tiles would leave
// idle (stream-K's aim with plain split-K pieces: qkv at M = 2048 has 288 tiles of 128 x 256 = 2.18 rounds on 132
// SMs; the third round ran 24 tiles on 24 SMs). dp = 0 is the uniform K split (every tile in `splits` pieces).
struct Sched {
  int tiles, dp, splits;
};
struct Unit {
  int tile, split, nsplit;
};
__host__ __device__ __forceinline__ int sched_units(const Sched& s) { return s.dp + (s.tiles - s.dp) * s.splits; }
__host__ __device__ __forceinline__ Unit sched_unit(const Sched& s, int u) {
  if (u < s.dp) return Unit{u, 0, 1};
  const int v = u - s.dp, tail = s.tiles - s.dp;
  return Unit{s.dp + v % tail, v / tail, s.splits};  // pieces of one tile on different blocks (split slowest)
}

template <class C>
__global__ void __launch_bounds__(C::THREADS, C::MINB)
    gemm_int4_sm90_kernel(const __grid_constant__ CUtensorMap tmx, const __grid_constant__ CUtensorMap tmw,
                          const __grid_constant__ CUtensorMap tms, const __grid_constant__ CUtensorMap tmz, Out o,
                          int group, int ktiles, Sched sched, int codebook) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smem_raw[];
  const uint32_t sraw = smem_u32(smem_raw);
  const uint32_t sbase = (sraw + 1023) & ~1023u;
  const uint32_t bars = sbase + C::STAGES * C::STAGE_BYTES;  // full[s] at bars + 8 s, empty[s] at bars + 8 (STAGES + s)
  const uint32_t lut = bars + 16 * C::STAGES;                // NF4 pair table (codebook 1)
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int n_mb = (o.m + C::TT - 1) / C::TT, n_nb = (o.n / 16 + C::RT - 1) / C::RT;
  const int total = sched_units(sched);
  const int gps = group == 32 ? 2 : 1;

  if (tid == 0) {
    for (int s = 0; s < C::STAGES; ++s) {
      mbar_init(bars + 8 * s, 1);                   // full: the producer's expect_tx arrival + the bytes
      mbar_init(bars + 8 * (C::STAGES + s), 4 * C::NC);  // empty: one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if (codebook == 1) fill_nf4_lut(reinterpret_cast<uint32_t*>(smem_raw + (lut - sraw)), tid, C::THREADS);
  const float zc = codebook == 1 ? 0.f : 8.f;  // the code offset dequant_word subtracts exactly (make_sz)
  __syncthreads();

  if (wg == 0) {
    // ------------------------------------------------ producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(C::PREG));
    if (warp == 0 && lane == 0) {
      const uint32_t tx = C::X_BYTES + C::W_BYTES + 2 * (C::RT * 32 * gps);
      int stage = 0;
      uint32_t phase = 0;
      for (int t = blockIdx.x; t < total; t += gridDim.x) {
        const Unit un = sched_unit(sched, t);
        const TileCoord tc = tile_coord(un.tile, n_mb, n_nb);
        const int kb = static_cast<int>(static_cast<int64_t>(ktiles) * un.split / un.nsplit);
        const int ke = static_cast<int>(static_cast<int64_t>(ktiles) * (un.split + 1) / un.nsplit);
        const int m0 = tc.mb * C::TT, rt0 = tc.nb * C::RT;
        for (int kt = kb; kt < ke; ++kt) {
          mbar_wait(bars + 8 * (C::STAGES + stage), phase ^ 1);
          const uint32_t full = bars + 8 * stage;
          mbar_expect_tx(full, tx);
          const uint32_t st = sbase + stage * C::STAGE_BYTES;
          tma_load_2d(st, &tmx, kt * 64, m0, full);
          tma_load_2d(st + C::X_BYTES, &tmw, kt * 128, rt0, full);
          const int gi0 = (kt * 64) / group;
          tma_load_2d(st + C::X_BYTES + C::W_BYTES, &tms, gi0 * 16, rt0, full);
          tma_load_2d(st + C::X_BYTES + C::W_BYTES + C::SZ_BYTES, &tmz, gi0 * 16, rt0, full);
          if (++stage == C::STAGES) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    // ------------------------------------------------ consumers
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(C::CREG));
    using MMA = Wgmma<C::TT>;
    const int c = wg - 1, g = lane >> 2;
    float acc[C::ACCS][C::WR][MMA::kAcc];  // set j % ACCS takes k16 sub-step j
    float accs[C::PROBE == 4 ? 64 : 1];     // PROBE 4's m64n128 accumulator
    uint32_t A[C::WIN][C::WR][4];
#pragma unroll
    for (int j = 0; j < C::WIN; ++j)
#pragma unroll
      for (int r = 0; r < C::WR; ++r)
#pragma unroll
        for (int e = 0; e < 4; ++e) A[j][r][e] = 0u;
    int stage = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x) {
      const Unit un = sched_unit(sched, t);
      const TileCoord tc = tile_coord(un.tile, n_mb, n_nb);
      const int kb = static_cast<int>(static_cast<int64_t>(ktiles) * un.split / un.nsplit);
      const int ke = static_cast<int>(static_cast<int64_t>(ktiles) * (un.split + 1) / un.nsplit);
#pragma unroll
      for (int a = 0; a < C::ACCS; ++a)
#pragma unroll
        for (int r = 0; r < C::WR; ++r)
#pragma unroll
          for (int i = 0; i < MMA::kAcc; ++i) acc[a][r][i] = 0.f;
#pragma unroll
      for (int i = 0; i < (C::PROBE == 4 ? 64 : 1); ++i) accs[i] = 0.f;
      int prev = -1;
      if constexpr (C::WIN == 8) {
        // Stages in pairs: stage parity P picks register sets 4P..4P+3 (compile-time indices: no local memory).
        // wgmma_wait<7> before rewriting a set: the group that read it 8 commits ago is complete; at sub-step 3
        // that also completes every group of the stage two back, whose buffers are then released.
        int prev2 = -1;
        auto step = [&](auto P) {
          mbar_wait(bars + 8 * stage, phase);
          const uint32_t st = sbase + stage * C::STAGE_BYTES;
          const uint32_t sw = st + C::X_BYTES, ss = sw + C::W_BYTES, sz = ss + C::SZ_BYTES;
          uint4 raw[C::WR];
          GroupSZ gsz[C::WR][2];
#pragma unroll
          for (int r = 0; r < C::WR; ++r) {
            const int rt = (c * C::WR + r) * 4 + warp;
            raw[r] = lds128(sw + rt * 512 + lane * 16);
            const uint32_t o0 = rt * 32 * gps + g * 2;
            gsz[r][0] = make_sz(lds16(ss + o0), lds16(sz + o0), lds16(ss + o0 + 16), lds16(sz + o0 + 16), zc);
            gsz[r][1] = gps == 2 ? make_sz(lds16(ss + o0 + 32), lds16(sz + o0 + 32), lds16(ss + o0 + 48), lds16(sz + o0 + 48), zc)
                                 : gsz[r][0];
          }
          const uint64_t desc = desc_sw128(st);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            constexpr int p4 = decltype(P)::value * 4;
            wgmma_wait<7>();
            if (j == 3 && prev2 >= 0) {
              if (lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));  // all groups of the stage two back done
              prev2 = -1;
            }
#pragma unroll
            for (int r = 0; r < C::WR; ++r) {
#pragma unroll
              for (int e = 0; e < 4; ++e) keep(A[p4 + j][r][e]);
              const uint32_t word = j == 0 ? raw[r].x : j == 1 ? raw[r].y : j == 2 ? raw[r].z : raw[r].w;
              if (codebook == 1)
                dequant_word_nf4(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), lut, A[p4 + j][r]);
              else
                dequant_word(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), A[p4 + j][r]);
            }
            wgmma_fence();
#pragma unroll
            for (int r = 0; r < C::WR; ++r)
              MMA::mma(acc[j % C::ACCS][r], A[p4 + j][r][0], A[p4 + j][r][1], A[p4 + j][r][2], A[p4 + j][r][3], desc + 2 * j);
            wgmma_commit();
          }
          prev2 = prev;
          prev = stage;
          if (++stage == C::STAGES) {
            stage = 0;
            phase ^= 1;
          }
        };
        int kt = kb;
        for (; kt + 1 < ke; kt += 2) {
          step(std::integral_constant<int, 0>{});
          step(std::integral_constant<int, 1>{});
        }
        if (kt < ke) step(std::integral_constant<int, 0>{});
        wgmma_wait<0>();
        if (prev2 >= 0 && lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));
      } else
      for (int kt = kb; kt < ke; ++kt) {
        mbar_wait(bars + 8 * stage, phase);
        const uint32_t st = sbase + stage * C::STAGE_BYTES;
        const uint32_t sw = st + C::X_BYTES, ss = sw + C::W_BYTES, sz = ss + C::SZ_BYTES;
        uint4 raw[C::WR];
        GroupSZ gsz[C::WR][2];
#pragma unroll
        for (int r = 0; r < C::WR; ++r) {
          const int rt = (c * C::WR + r) * 4 + warp;
          raw[r] = lds128(sw + rt * 512 + lane * 16);
          if constexpr (C::PROBE == 2) continue;
          const uint32_t o0 = rt * 32 * gps + g * 2;  // TMA box: [RT][16 * gps] bf16; row g + 8 is 16 bytes on
          gsz[r][0] = make_sz(lds16(ss + o0), lds16(sz + o0), lds16(ss + o0 + 16), lds16(sz + o0 + 16), zc);
          gsz[r][1] = gps == 2 ? make_sz(lds16(ss + o0 + 32), lds16(sz + o0 + 32), lds16(ss + o0 + 48), lds16(sz + o0 + 48), zc)
                               : gsz[r][0];
        }
        const uint64_t desc = desc_sw128(st);
        if constexpr (C::LA) {
          auto deq = [&](auto J) {
            constexpr int j = decltype(J)::value;
#pragma unroll
            for (int r = 0; r < C::WR; ++r) {
#pragma unroll
              for (int e = 0; e < 4; ++e) keep(A[j][r][e]);
              const uint32_t word = j == 0 ? raw[r].x : j == 1 ? raw[r].y : j == 2 ? raw[r].z : raw[r].w;
              if (codebook == 1)
                dequant_word_nf4(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), lut, A[j][r]);
              else
                dequant_word(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), A[j][r]);
            }
          };
          auto issue = [&](auto J) {
            constexpr int j = decltype(J)::value;
            wgmma_fence();
#pragma unroll
            for (int r = 0; r < C::WR; ++r)
              MMA::mma(acc[j % C::ACCS][r], A[j][r][0], A[j][r][1], A[j][r][2], A[j][r][3], desc + 2 * j);
            wgmma_commit();
          };
          // Commits since the previous stage's group j: 3 - j of that stage + j of this one before group j is issued.
          wgmma_wait<3>();  // the group that read A[0] is complete
          deq(std::integral_constant<int, 0>{});
          wgmma_wait<2>();  // A[1]'s reader (the previous stage's group 1) is complete
          deq(std::integral_constant<int, 1>{});
          issue(std::integral_constant<int, 0>{});
          wgmma_wait<2>();  // A[2]'s reader
          deq(std::integral_constant<int, 2>{});
          issue(std::integral_constant<int, 1>{});
          wgmma_wait<2>();  // A[3]'s reader, the previous stage's last group: all of its groups are complete
          if (prev >= 0 && lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev));
          prev = -1;
          deq(std::integral_constant<int, 3>{});
          issue(std::integral_constant<int, 2>{});
          issue(std::integral_constant<int, 3>{});
        } else
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if constexpr (C::ROLL) {
            wgmma_wait<3>();  // the group that read A[j] (4 commits ago) is complete
            if (j == 3 && prev >= 0) {
              if (lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev));  // all groups of the previous stage done
              prev = -1;
            }
          }
#pragma unroll
          for (int r = 0; r < C::WR; ++r) {
#pragma unroll
            for (int e = 0; e < 4; ++e) keep(A[j][r][e]);
            const uint32_t word = j == 0 ? raw[r].x : j == 1 ? raw[r].y : j == 2 ? raw[r].z : raw[r].w;
            if constexpr (C::PROBE == 2) {
#pragma unroll
              for (int e = 0; e < 4; ++e) A[j][r][e] = word >> e;
            } else if (codebook == 1)
              dequant_word_nf4(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), lut, A[j][r]);
            else
              dequant_word(word, pick(gps == 2 && j >= 2, gsz[r][0], gsz[r][1]), A[j][r]);
          }
          wgmma_fence();
          if constexpr (C::PROBE == 3) {  // A from shared memory (any in-bounds tile: timing only)
#pragma unroll
            for (int r = 0; r < C::WR; ++r) WgmmaSS<C::TT>::mma(acc[j % C::ACCS][r], desc_sw128(sw) + 2 * j, desc + 2 * j);
          } else if constexpr (C::PROBE == 4) {  // swapped: A = the X tile (64 tokens), B = 128 "weight rows" of smem
            WgmmaSS<128>::mma(accs, desc + 2 * j, desc + 2 * j);
          } else if constexpr (C::PROBE != 1) {
#pragma unroll
            for (int r = 0; r < C::WR; ++r)
              MMA::mma(acc[j % C::ACCS][r], A[j][r][0], A[j][r][1], A[j][r][2], A[j][r][3], desc + 2 * j);  // +32 bytes per k16
          }
          wgmma_commit();
        }
        if constexpr (!C::ROLL) {  // drain: this stage's groups are complete, its buffers free at once
          wgmma_wait<0>();
          if (lane == 0) mbar_arrive(bars + 8 * (C::STAGES + stage));
        }
        prev = C::ROLL ? stage : -1;
        if (++stage == C::STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
      wgmma_wait<0>();
#pragma unroll
      for (int a = 0; a < C::ACCS; ++a)
#pragma unroll
        for (int r = 0; r < C::WR; ++r)
#pragma unroll
          for (int i = 0; i < MMA::kAcc; ++i) keep(acc[a][r][i]);
      if constexpr (C::PROBE == 4) {
#pragma unroll
        for (int i = 0; i < 64; ++i) {
          keep(accs[i]);
          acc[0][0][i % MMA::kAcc] += accs[i];
        }
      }
      if constexpr (C::ACCS == 2) {
#pragma unroll
        for (int r = 0; r < C::WR; ++r)
#pragma unroll
          for (int i = 0; i < MMA::kAcc; ++i) acc[0][r][i] += acc[1][r][i];
      }
      if (prev >= 0 && lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev));

      // acc[r][4i + 2h + e] = D[row 16 warp + g + 8h][col 8i + 2t + e]
      const int m0 = tc.mb * C::TT + (lane & 3) * 2;
#pragma unroll
      for (int r = 0; r < C::WR; ++r)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int n = tc.nb * C::BR + (c * C::WR + r) * 64 + warp * 16 + g + 8 * h;
          store_column<MMA::kAcc / 4>(o, acc[0][r], 2 * h, m0, n, un.nsplit > 1, un.split == 0);
        }
    }
  }
#endif
}

// ---------------------------------------------------------------- swapped operands (smallm, M <= 64)
// The same tiles (256 weight rows x 64 tokens, the same TMA stages and producer) with the operands swapped: per k16
// a consumer warpgroup issues ONE wgmma.m64n128k16 (A = the 64-token X tile from shared memory, B = its 128 weight
// rows, dequantized by its 4 warps into a 128B-swizzled K-major buffer in shared memory) instead of two
// m64n64k16 with A in registers: half the wgmma instructions an SM for the same work, since at M <= 64 the k-step
// cost follows the instruction count, not the tensor time (bench/NOTES.md "smallm"). Tokens past M are zero rows of
// the X box (TMA fills out-of-bounds rows with zeros) and are not stored. B buffers: 2 a warpgroup (16 KB each),
// buffer b of k-step kt rewritten at kt + 2 after wgmma.wait_group 1 (the group that read it is complete).
// FULL 1: both warpgroups dequantize into one 256-row buffer (3 of them) and warpgroup 1 alone issues ONE
// wgmma.m64n256k16 per k16 (a quarter of today's instruction count). FULL 2: warpgroup 2 alone dequantizes and
// stores all 256 rows; warpgroup 1 only issues the wgmmas (no ALU work, no generic stores or proxy fence while its
// wgmmas are in flight: run14 measured the store + fence path of the swap kernel at ~1.7x its probe).
template <class C, int FULL = 0>
struct SwapSmem {
  static_assert(C::WR == 2 && C::NC == 2 && C::TT == 64 && C::MINB == 1 && C::ACCS == 1 && C::PROBE == 0, "swap: r256 t64");
  static constexpr int NBUF = FULL ? 3 : 2;                   // B buffers (FULL: of both warpgroups' 256 rows)
  static constexpr int B_BYTES = NBUF * 2 * 128 * 128;  // 2 warpgroups' 128 rows x 128 bytes a buffer
  static constexpr int SMEM = C::STAGES * C::STAGE_BYTES + B_BYTES + 1024 + 2 * C::STAGES * 8 + kNf4LutBytes;
  static_assert(SMEM <= 232448, "swap: shared memory");
};

// SPROBE (harness diagnosis of the non-FULL path; output wrong by design): 1 = no fence.proxy.async, 2 = no named
// barrier, 3 = no stores of the dequantized weights (the wgmma reads whatever the buffer holds).
template <class C, int FULL = 0, int SPROBE = 0>
__global__ void __launch_bounds__(384, 1)
    gemm_int4_sm90_swap_kernel(const __grid_constant__ CUtensorMap tmx, const __grid_constant__ CUtensorMap tmw,
                               const __grid_constant__ CUtensorMap tms, const __grid_constant__ CUtensorMap tmz, Out o,
                               int group, int ktiles, Sched sched, int codebook) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ uint8_t smem_raw[];
  const uint32_t sraw = smem_u32(smem_raw);
  const uint32_t sbase = (sraw + 1023) & ~1023u;
  const uint32_t bbuf = sbase + C::STAGES * C::STAGE_BYTES;  // 1024-aligned: STAGE_BYTES % 1024 == 0
  const uint32_t bars = bbuf + SwapSmem<C, FULL>::B_BYTES;
  const uint32_t lut = bars + 16 * C::STAGES;
  const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
  const int n_mb = (o.m + C::TT - 1) / C::TT, n_nb = (o.n / 16 + C::RT - 1) / C::RT;
  const int total = sched_units(sched);
  const int gps = group == 32 ? 2 : 1;

  if (tid == 0) {
    for (int s = 0; s < C::STAGES; ++s) {
      mbar_init(bars + 8 * s, 1);
      mbar_init(bars + 8 * (C::STAGES + s), FULL ? 4 : 8);  // FULL: warpgroup 1's warps release (see below)
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if (codebook == 1) fill_nf4_lut(reinterpret_cast<uint32_t*>(smem_raw + (lut - sraw)), tid, C::THREADS);
  const float zc = codebook == 1 ? 0.f : 8.f;
  __syncthreads();

  if (wg == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (warp == 0 && lane == 0) {  // the producer of gemm_int4_sm90_kernel, unchanged
      const uint32_t tx = C::X_BYTES + C::W_BYTES + 2 * (C::RT * 32 * gps);
      int stage = 0;
      uint32_t phase = 0;
      for (int t = blockIdx.x; t < total; t += gridDim.x) {
        const Unit un = sched_unit(sched, t);
        const TileCoord tc = tile_coord(un.tile, n_mb, n_nb);
        const int kb = static_cast<int>(static_cast<int64_t>(ktiles) * un.split / un.nsplit);
        const int ke = static_cast<int>(static_cast<int64_t>(ktiles) * (un.split + 1) / un.nsplit);
        const int m0 = tc.mb * C::TT, rt0 = tc.nb * C::RT;
        for (int kt = kb; kt < ke; ++kt) {
          mbar_wait(bars + 8 * (C::STAGES + stage), phase ^ 1);
          const uint32_t full = bars + 8 * stage;
          mbar_expect_tx(full, tx);
          const uint32_t st = sbase + stage * C::STAGE_BYTES;
          tma_load_2d(st, &tmx, kt * 64, m0, full);
          tma_load_2d(st + C::X_BYTES, &tmw, kt * 128, rt0, full);
          const int gi0 = (kt * 64) / group;
          tma_load_2d(st + C::X_BYTES + C::W_BYTES, &tms, gi0 * 16, rt0, full);
          tma_load_2d(st + C::X_BYTES + C::W_BYTES + C::SZ_BYTES, &tmz, gi0 * 16, rt0, full);
          if (++stage == C::STAGES) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
    if constexpr (FULL) {
      // Both warpgroups: load + dequantize their 128 rows of the stage, store them into B buffer kq % 3 (256 rows),
      // then meet at a 256-thread barrier; warpgroup 1 (c = 0) issues the k-step's 4 wgmma.m64n256k16 and, before
      // the NEXT barrier, waits until at most one group is in flight: buffer kq % 3 is rewritten at kq + 3 only after
      // the group that read it (kq) is complete, and a stage is released two k-steps later (count 4: c = 0's warps).
      const int g = lane >> 2, t4 = lane & 3;
      // The loop is instantiated once for each warpgroup role (MMA = c == 0) so that no wgmma sits in a branch that
      // ptxas must treat as divergent (C7518: it would serialize them).
      auto run = [&](auto mma_role) {
      constexpr bool MMA = decltype(mma_role)::value;
      constexpr int c = MMA ? 0 : 1;
      float acc[MMA ? 128 : 1];  // c = 0: D[token 16 warp + g + 8h][row 8i + 2t + e] at acc[4i + 2h + e], i < 32
      int stage = 0;
      uint32_t phase = 0, kq = 0;
      int prev = -1, prev2 = -1;
      for (int t = blockIdx.x; t < total; t += gridDim.x) {
        const Unit un = sched_unit(sched, t);
        const TileCoord tc = tile_coord(un.tile, n_mb, n_nb);
        const int kb = static_cast<int>(static_cast<int64_t>(ktiles) * un.split / un.nsplit);
        const int ke = static_cast<int>(static_cast<int64_t>(ktiles) * (un.split + 1) / un.nsplit);
#pragma unroll
        for (int i = 0; i < (MMA ? 128 : 1); ++i) acc[i] = 0.f;
        for (int kt = kb; kt < ke; ++kt) {
          mbar_wait(bars + 8 * stage, phase);
          const uint32_t st = sbase + stage * C::STAGE_BYTES;
          const uint32_t sw = st + C::X_BYTES, ss = sw + C::W_BYTES, sz = ss + C::SZ_BYTES;
          const uint32_t bb = bbuf + (kq % 3u) * 32768u;
          constexpr int NR = FULL == 2 ? (MMA ? 0 : 4) : 2;  // row tiles a warp dequantizes
#pragma unroll
          for (int r = 0; r < NR; ++r) {
            const int rt = FULL == 2 ? r * 4 + warp : (c * 2 + r) * 4 + warp;
            const uint4 raw = lds128(sw + rt * 512 + lane * 16);
            const uint32_t o0 = rt * 32 * gps + g * 2;
            const GroupSZ s0 = make_sz(lds16(ss + o0), lds16(sz + o0), lds16(ss + o0 + 16), lds16(sz + o0 + 16), zc);
            const GroupSZ s1 = gps == 2 ? make_sz(lds16(ss + o0 + 32), lds16(sz + o0 + 32), lds16(ss + o0 + 48), lds16(sz + o0 + 48), zc) : s0;
            const uint32_t row0 = bb + (rt * 16 + g) * 128, row1 = row0 + 8 * 128;  // tile rt's rows g, g + 8
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const uint32_t word = j == 0 ? raw.x : j == 1 ? raw.y : j == 2 ? raw.z : raw.w;
              uint32_t a[4];
              if (codebook == 1)
                dequant_word_nf4(word, pick(gps == 2 && j >= 2, s0, s1), lut, a);
              else
                dequant_word(word, pick(gps == 2 && j >= 2, s0, s1), a);
              const uint32_t c0 = ((2 * j) ^ g) * 16 + 4 * t4, c1 = ((2 * j + 1) ^ g) * 16 + 4 * t4;
              asm volatile("st.shared.b32 [%0], %1;" ::"r"(row0 + c0), "r"(a[0]) : "memory");
              asm volatile("st.shared.b32 [%0], %1;" ::"r"(row1 + c0), "r"(a[1]) : "memory");
              asm volatile("st.shared.b32 [%0], %1;" ::"r"(row0 + c1), "r"(a[2]) : "memory");
              asm volatile("st.shared.b32 [%0], %1;" ::"r"(row1 + c1), "r"(a[3]) : "memory");
            }
          }
          if constexpr (NR > 0) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
          if constexpr (MMA) {
            wgmma_wait<1>();  // groups up to kt - 2 complete: stage prev2 free; buffer (kq + 1) % 3 free for the next step
            if (prev2 >= 0 && lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));
          }
          asm volatile("bar.sync 1, 256;" ::: "memory");  // both warpgroups' rows are in buffer kq % 3
          if constexpr (MMA) {
            wgmma_fence();
            const uint64_t da = desc_sw128(st), db = desc_sw128(bb);
#pragma unroll
            for (int j = 0; j < 4; ++j) WgmmaSS<256>::mma(acc, da + 2 * j, db + 2 * j);
            wgmma_commit();
            prev2 = prev;
            prev = stage;
          }
          ++kq;
          if (++stage == C::STAGES) {
            stage = 0;
            phase ^= 1;
          }
        }
        if constexpr (MMA) {
          wgmma_wait<0>();
#pragma unroll
          for (int i = 0; i < 128; ++i) keep(acc[i]);
          if (lane == 0) {
            if (prev2 >= 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));
            if (prev >= 0) mbar_arrive(bars + 8 * (C::STAGES + prev));
          }
          prev = prev2 = -1;
          const bool split = un.nsplit > 1, add_bias = un.split == 0;
          const int nbase = tc.nb * C::BR + 2 * t4;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int m = tc.mb * C::TT + 16 * warp + g + 8 * h;
            if (m >= o.m) continue;
            store_row<32>(o, m, nbase, split, [&](int i, int e, int n) {
              return acc[4 * i + 2 * h + e] + (add_bias ? bias_at(o, n) : 0.f);
            });
          }
        }
      }
      };
      if (wg == 1)
        run(std::true_type{});
      else
        run(std::false_type{});
    } else {
    const int c = wg - 1, g = lane >> 2, t4 = lane & 3;
    const uint32_t bwg = bbuf + c * 32768;  // this warpgroup's two B buffers
    float acc[64];                          // D[token 16 warp + g + 8h][row 8i + 2t + e] at acc[4i + 2h + e]
    int stage = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x) {
      const Unit un = sched_unit(sched, t);
      const TileCoord tc = tile_coord(un.tile, n_mb, n_nb);
      const int kb = static_cast<int>(static_cast<int64_t>(ktiles) * un.split / un.nsplit);
      const int ke = static_cast<int>(static_cast<int64_t>(ktiles) * (un.split + 1) / un.nsplit);
#pragma unroll
      for (int i = 0; i < 64; ++i) acc[i] = 0.f;
      int prev = -1, prev2 = -1;  // stages whose wgmma group may still be in flight (newest first)
      uint32_t buf = 0;
      for (int kt = kb; kt < ke; ++kt) {
        mbar_wait(bars + 8 * stage, phase);
        const uint32_t st = sbase + stage * C::STAGE_BYTES;
        const uint32_t sw = st + C::X_BYTES, ss = sw + C::W_BYTES, sz = ss + C::SZ_BYTES;
        uint32_t a[2][4][4];  // [row tile][k16 word][fragment register]
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int rt = (c * 2 + r) * 4 + warp;
          const uint4 raw = lds128(sw + rt * 512 + lane * 16);
          const uint32_t o0 = rt * 32 * gps + g * 2;
          const GroupSZ s0 = make_sz(lds16(ss + o0), lds16(sz + o0), lds16(ss + o0 + 16), lds16(sz + o0 + 16), zc);
          const GroupSZ s1 = gps == 2 ? make_sz(lds16(ss + o0 + 32), lds16(sz + o0 + 32), lds16(ss + o0 + 48), lds16(sz + o0 + 48), zc) : s0;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const uint32_t word = j == 0 ? raw.x : j == 1 ? raw.y : j == 2 ? raw.z : raw.w;
            if (codebook == 1)
              dequant_word_nf4(word, pick(gps == 2 && j >= 2, s0, s1), lut, a[r][j]);
            else
              dequant_word(word, pick(gps == 2 && j >= 2, s0, s1), a[r][j]);
          }
        }
        wgmma_wait<1>();  // the group of k-step kt - 2 (reader of buffer `buf` and of stage prev2) is complete
        if (prev2 >= 0 && lane == 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));
        const uint32_t bb = bwg + buf * 16384;
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const uint32_t row0 = bb + ((r * 4 + warp) * 16 + g) * 128, row1 = row0 + 8 * 128;  // rows g, g + 8: both % 8 == g
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const uint32_t c0 = ((2 * j) ^ g) * 16 + 4 * t4, c1 = ((2 * j + 1) ^ g) * 16 + 4 * t4;  // k 16j + 2t, 16j + 8 + 2t
            if constexpr (SPROBE == 3) {
#pragma unroll
              for (int e = 0; e < 4; ++e) keep(a[r][j][e]);
              continue;
            }
            asm volatile("st.shared.b32 [%0], %1;" ::"r"(row0 + c0), "r"(a[r][j][0]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;" ::"r"(row1 + c0), "r"(a[r][j][1]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;" ::"r"(row0 + c1), "r"(a[r][j][2]) : "memory");
            asm volatile("st.shared.b32 [%0], %1;" ::"r"(row1 + c1), "r"(a[r][j][3]) : "memory");
          }
        }
        if constexpr (SPROBE != 1) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // generic-proxy stores -> visible to wgmma
        if constexpr (SPROBE != 2) asm volatile("bar.sync %0, 128;" ::"r"(1 + c) : "memory");     // the warpgroup's 4 warps have stored
        wgmma_fence();
        const uint64_t da = desc_sw128(st), db = desc_sw128(bb);
#pragma unroll
        for (int j = 0; j < 4; ++j) WgmmaSS<128>::mma(acc, da + 2 * j, db + 2 * j);
        wgmma_commit();
        prev2 = prev;
        prev = stage;
        buf ^= 1u;
        if (++stage == C::STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) keep(acc[i]);
      if (lane == 0) {
        if (prev2 >= 0) mbar_arrive(bars + 8 * (C::STAGES + prev2));
        if (prev >= 0) mbar_arrive(bars + 8 * (C::STAGES + prev));
      }
      // The next unit's first B store must not overtake this unit's last wgmma reads: wait<0> above covers it.
      const bool split = un.nsplit > 1, add_bias = un.split == 0;
      const int nbase = tc.nb * C::BR + c * 128 + 2 * t4;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int m = tc.mb * C::TT + 16 * warp + g + 8 * h;
        if (m >= o.m) continue;
        store_row<16>(o, m, nbase, split, [&](int i, int e, int n) {
          return acc[4 * i + 2 * h + e] + (add_bias ? bias_at(o, n) : 0.f);
        });
      }
    }
    }  // !FULL
  }
#endif
}

// ---------------------------------------------------------------- host side
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver (through the runtime: no libcuda link). Null when the driver lacks it.
inline EncodeTiledFn encode_tiled_fn() {
  static EncodeTiledFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    (void)cudaGetLastError();
    return reinterpret_cast<EncodeTiledFn>(p);
  }();
  return fn;
}

// 2-D tensor map: inner dimension d0 (contiguous), outer d1 with a row stride of `stride` bytes.
inline bool make_map_2d(CUtensorMap* map, CUtensorMapDataType dt, const void* base, uint64_t d0, uint64_t d1,
                        uint64_t stride, uint32_t b0, uint32_t b1, CUtensorMapSwizzle sw) {
  const EncodeTiledFn fn = encode_tiled_fn();
  if (!fn) return false;
  const cuuint64_t dims[2] = {d0, d1};
  const cuuint64_t strides[1] = {stride};
  const cuuint32_t box[2] = {b0, b1};
  const cuuint32_t es[2] = {1, 1};
  return fn(map, dt, 2, const_cast<void*>(base), dims, strides, box, es, CU_TENSOR_MAP_INTERLEAVE_NONE, sw,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Zeroes the tail tiles [dp, tiles) of a schedule (the tiles whose K pieces add into y): one block a tile.
template <class C>
__global__ void __launch_bounds__(256) gemm_zero_tiles_kernel(float* y, int m, int n, Sched sched) {
  constexpr int tt = C::TT, br = C::BR;
  const int n_mb = (m + tt - 1) / tt, n_nb = (n / 16 + br / 16 - 1) / (br / 16);
  const TileCoord tc = tile_coord(sched.dp + static_cast<int>(blockIdx.x), n_mb, n_nb);
  const int m0 = tc.mb * tt, n0 = tc.nb * br;
  const int rows = min(tt, m - m0), cols = min(br, n - n0);
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x)
    y[static_cast<int64_t>(m0 + i / cols) * n + n0 + i % cols] = 0.f;
}

// Before a launch whose schedule has K pieces: a bf16 out cannot take them (whole tiles only); an f32 out is zeroed
// where they add (all of y when dp = 0, else the tail tiles), unless o.acc (they add into y as it is).
template <class C>
inline cudaError_t prepare_pieces(cudaStream_t st, const Out& o, const Sched& sched) {
  if (sched.splits <= 1 || sched.dp >= sched.tiles) return cudaSuccess;
  if (o.ybf) return cudaErrorInvalidValue;
  if (o.acc) return cudaSuccess;
  if (sched.dp == 0) return cudaMemsetAsync(o.y, 0, sizeof(float) * static_cast<size_t>(o.m) * o.n, st);
  gemm_zero_tiles_kernel<C><<<sched.tiles - sched.dp, 256, 0, st>>>(o.y, o.m, o.n, sched);
  return cudaGetLastError();
}

// Launch on `st` with `grid` persistent blocks (<= sched_units; typically the SM count). Zeroes what the schedule's
// K pieces add into first (all of y when dp = 0, else the tail tiles), unless o.acc (they add into y as it is); a
// bf16 out (o.ybf) takes whole tiles only. x: bf16 [M, K] with K % 64 == 0 and a
// 16-byte aligned base. Returns cudaErrorNotSupported when the driver cannot encode tensor maps.
template <class C>
inline cudaError_t launch_gemm_int4_sm90_sched(cudaStream_t st, const __nv_bfloat16* x, const L1Weight& w, const Out& o,
                                               const Sched& sched, int grid) {
  Sm90Maps m;
  const int gps = w.group == 32 ? 2 : 1;
  const uint64_t K = static_cast<uint64_t>(w.k), N = static_cast<uint64_t>(w.n), KG = K / w.group;
  bool ok = make_map_2d(&m.x, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, K, static_cast<uint64_t>(o.m), K * 2, 64, C::TT,
                        CU_TENSOR_MAP_SWIZZLE_128B);
  ok = ok && make_map_2d(&m.w, CU_TENSOR_MAP_DATA_TYPE_UINT32, w.codes, (K / 64) * 128, N / 16, (K / 64) * 512, 128,
                         C::RT, CU_TENSOR_MAP_SWIZZLE_NONE);
  ok = ok && make_map_2d(&m.s, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, w.scales, KG * 16, N / 16, KG * 32, 16 * gps, C::RT,
                         CU_TENSOR_MAP_SWIZZLE_NONE);
  ok = ok && make_map_2d(&m.z, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, w.zeros, KG * 16, N / 16, KG * 32, 16 * gps, C::RT,
                         CU_TENSOR_MAP_SWIZZLE_NONE);
  if (!ok) return cudaErrorNotSupported;
  if (const cudaError_t ez = prepare_pieces<C>(st, o, sched); ez != cudaSuccess) return ez;
  const cudaError_t e = cudaFuncSetAttribute(gemm_int4_sm90_kernel<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
  if (e != cudaSuccess) return e;
  if constexpr (C::MINB > 1) {  // all of the unified L1 as shared memory, so that MINB blocks fit an SM
    const cudaError_t ec = cudaFuncSetAttribute(gemm_int4_sm90_kernel<C>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                                cudaSharedmemCarveoutMaxShared);
    if (ec != cudaSuccess) return ec;
  }
  gemm_int4_sm90_kernel<C><<<grid, C::THREADS, C::SMEM, st>>>(m.x, m.w, m.s, m.z, o, w.group, w.k / 64, sched, w.codebook);
  return cudaGetLastError();
}

// The swapped-operand kernel (gemm_int4_sm90_swap_kernel<C>, C = r256 t64): the same maps, zeroing and schedule.
template <class C, int FULL = 0, int SPROBE = 0>
inline cudaError_t launch_gemm_int4_sm90_swap(cudaStream_t st, const __nv_bfloat16* x, const L1Weight& w, const Out& o,
                                              const Sched& sched, int grid) {
  Sm90Maps m;
  const int gps = w.group == 32 ? 2 : 1;
  const uint64_t K = static_cast<uint64_t>(w.k), N = static_cast<uint64_t>(w.n), KG = K / w.group;
  bool ok = make_map_2d(&m.x, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x, K, static_cast<uint64_t>(o.m), K * 2, 64, C::TT,
                        CU_TENSOR_MAP_SWIZZLE_128B);
  ok = ok && make_map_2d(&m.w, CU_TENSOR_MAP_DATA_TYPE_UINT32, w.codes, (K / 64) * 128, N / 16, (K / 64) * 512, 128,
                         C::RT, CU_TENSOR_MAP_SWIZZLE_NONE);
  ok = ok && make_map_2d(&m.s, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, w.scales, KG * 16, N / 16, KG * 32, 16 * gps, C::RT,
                         CU_TENSOR_MAP_SWIZZLE_NONE);
  ok = ok && make_map_2d(&m.z, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, w.zeros, KG * 16, N / 16, KG * 32, 16 * gps, C::RT,
                         CU_TENSOR_MAP_SWIZZLE_NONE);
  if (!ok) return cudaErrorNotSupported;
  if (const cudaError_t ez = prepare_pieces<C>(st, o, sched); ez != cudaSuccess) return ez;
  constexpr int smem = SwapSmem<C, FULL>::SMEM;
  const cudaError_t e = cudaFuncSetAttribute(gemm_int4_sm90_swap_kernel<C, FULL, SPROBE>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  gemm_int4_sm90_swap_kernel<C, FULL, SPROBE><<<grid, C::THREADS, smem, st>>>(m.x, m.w, m.s, m.z, o, w.group, w.k / 64, sched, w.codebook);
  return cudaGetLastError();
}

// The uniform K split of the first version: every tile in `splits` pieces (all tiles whole when splits = 1).
template <class C>
inline Sched uniform_sched(int m, int n, int splits) {
  const int tiles = ((m + C::TT - 1) / C::TT) * ((n / 16 + C::RT - 1) / C::RT);
  return Sched{tiles, splits > 1 ? 0 : tiles, splits};
}

// The schedule for `tiles` tiles of `ktiles` k-steps on `slots` persistent blocks: the cheapest by a model of the
// round-robin assignment in k-steps, with a fixed cost per unit (pipeline fill, epilogue: `eps_dp` for a whole
// tile, whose epilogue overlaps the next tile's loads; `eps_piece` for a K piece, whose epilogue is atomic adds:
// H200 run 1's uniform splits at M = 512 took ~6-8 us more a piece than their k-steps, ~8 k-steps of r128 t256).
// Candidates: all tiles whole; whole tiles for the full rounds (or one round fewer) and the rest in 2..16 pieces of
// >= 4 k-steps each. Ties keep the fewer units. Returns the modelled time (k-steps of the slowest block) in *cost.
inline Sched choose_sched(int tiles, int ktiles, int slots, double eps_dp = 1.0, double eps_piece = 8.0,
                          double* cost = nullptr) {
  auto count = [](int64_t lo, int64_t hi, int64_t b, int64_t grid) {  // units u in [lo, hi) with u % grid == b
    auto f = [&](int64_t x) { return x > b ? (x - b + grid - 1) / grid : int64_t{0}; };
    return f(hi) - f(lo);
  };
  auto model = [&](const Sched& s) {
    const int64_t units = sched_units(s), grid = std::min<int64_t>(units, slots);
    const double piece = static_cast<double>((ktiles + s.splits - 1) / s.splits) + eps_piece;
    double worst = 0.0;
    for (int64_t b = 0; b < grid; ++b) {
      const double t = count(0, s.dp, b, grid) * (ktiles + eps_dp) + count(s.dp, units, b, grid) * (s.splits > 1 ? piece : ktiles + eps_dp);
      worst = std::max(worst, t);
    }
    return worst;
  };
  Sched best{tiles, tiles, 1};
  double best_cost = model(best);
  const int full = tiles / slots;
  const int maxs = std::max(1, std::min(16, ktiles / 4));
  for (int r = full; r >= std::max(0, full - 1); --r) {
    const int dp = r * slots;
    if (dp >= tiles) continue;
    for (int s = 2; s <= maxs; ++s) {
      const Sched c{tiles, dp, s};
      const double t = model(c);
      if (t < best_cost - 1e-9) {
        best = c;
        best_cost = t;
      }
    }
  }
  if (cost) *cost = best_cost;
  return best;
}

template <class C>
inline int sm90_tiles(int m, int n) {
  return ((m + C::TT - 1) / C::TT) * ((n / 16 + C::RT - 1) / C::RT);
}

}  // namespace gemmk
}  // namespace glm4
