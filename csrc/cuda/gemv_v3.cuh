// gemv v3: the persistent INT4 GEMV of decode (M = 1..8 tokens) on layout 1 (core/int4_layout.h), with every fusion
// of linear_int4 (RMSNorm prologue, bias, store / accumulate / SwiGLU). Same numerics as gemv_int4.cuh (its header
// comment): A = 128 + q exactly in bf16, B = x~ = bf16(x * norm_w), d = mma sum (128 + q) x~ in f32,
// acc += s (d - (128 + z) sum x~) once per 64-k tile (twice for G = 32), r_m = 1/sqrt(mean x^2 + eps) in the epilogue.
//
// Why another kernel: gemv_int4.cuh's blocks each own a few row tiles, re-stage x for them, and end with a block-wide
// reduction, so the per-byte overhead dominated (14-22 % of copy on every H200 shape, gemv2.md). Here:
//   - one block of 512 threads an SM (persistent: grid = SMs rounded to a multiple of C), each block owning ONE
//     K chunk (c = block % C) for its whole life and a contiguous range of row units (a row tile; SwiGLU: a gate tile
//     and its up tile), so x of the chunk is staged once a block and amortized over every row it streams;
//   - the 16 warps of a block split the chunk along K (S warps, a fixed tile range each) and rows (R = 16 / S row
//     streams); a step = R row units; per step each warp streams T = U * KWM tiles (KWM: most tiles a warp owns in a
//     row tile, compile-time, the rest predicated off), from a register ring NS steps deep (NS * T ~ 8 loads of 16 B
//     in flight a thread, 64 KB an SM), refilled as it is consumed; the first NS steps are issued before
//     griddepcontrol.wait (weights do not depend on the previous kernel);
//   - per step, every warp puts its 16 x 8 partial into shared memory, one barrier, and a reducer warp (rotating)
//     sums the S slots in fixed order; C == 1: epilogue; C > 1: the block's partial goes to a global workspace
//     [unit][C][U][128] (a plain store), and once the block's stream is done, one fence, an integer ticket a unit,
//     and the last of the C blocks sums the C partials in fixed order and runs the epilogue (no float atomics),
//     then resets the ticket.
// Determinism: C, S and each warp's tile range depend on K (and on `tall`, see plan_v3) only, never on M, N or the
// row range, so row m of an M = 8 launch equals an M = 1 launch bit for bit and row views equal the whole weight.
// The RMSNorm sum of squares of chunk c is written to the workspace by the blocks of chunk c (identical values) and
// summed over c in fixed order by whoever runs the epilogue.
#pragma once
#include "core/int4_layout.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace gemv3 {

enum Mode : int { kStore = 0, kAccumulate = 1, kSwiGlu = 2 };
constexpr int kThreads = 512, kWarps = 16;

// The decomposition: host-chosen by plan_v3 (below), from K (and `tall`) only, except the grid.
struct Plan {
  int C = 1;      // K chunks across blocks
  int S = 16;     // warps along K inside a block (16 / S row streams)
  int kwm = 4;    // most k tiles a warp owns in a row tile (the kernel's KWM)
  int ns = 2;     // ring depth in steps (the kernel's NS)
  int blocks = 0; // grid
  int kc_max = 0; // most k tiles of a chunk (shared memory is sized for it)
  bool valid = false;
};

struct Params {
  const float* x;            // [M, K] f32
  const uint8_t* codes;      // layout 1, N*K/2 bytes
  const uint16_t* scales;    // layout 1, bf16 [N, K/G]
  const uint16_t* zeros;     // layout 1, bf16 [N, K/G]
  const float* bias_f32;     // [N] or null
  const uint16_t* bias_bf16; // [N] bf16 or null
  const float* norm_f32;     // [K] or null (no norm when both are null)
  const uint16_t* norm_bf16; // [K] bf16 or null
  float* out;                // [M, N] (SwiGLU: [M, N/2])
  float* ws;                 // C > 1: partials [NU][C][U][128] f32, then C * 8 f32 of chunk sums of x^2
  unsigned* tickets;         // C > 1: [NU] arrival tickets, zero at rest (each launch leaves them so)
  float eps;
  int M, N, K;
  int mode;
  int C, S;
};

__host__ __device__ __forceinline__ int lo_of(int t, int n, int i) { return static_cast<int>(static_cast<int64_t>(t) * i / n); }

// Workspace bytes of a plan (0 when C == 1): partials, then the chunk sums of squares; tickets are separate.
__host__ __device__ inline int64_t ws_floats(int64_t nu, int u, int c) { return c > 1 ? nu * c * u * 128 + c * 8 : 0; }

// Shared memory of a block for M tokens and kc_max tiles: x~ fragments, tile sums (and half-tile sums), the slots of
// the per-step partials (2 buffers x 16 warps x U x 128 f32), sums of squares.
struct Smem {
  int xf, xt, xh, slot, ssq, ring, total;
  // ring_tiles: tiles a warp in the shared-memory ring (0: register ring)
  __host__ __device__ static Smem of(int M, int kc, int U, int ring_tiles = 0) {
    Smem s;
    int o = 0;
    auto take = [&](int b) { const int at = o; o += (b + 15) & ~15; return at; };
    s.xf = take(kc * 8 * 128);  // 8 token slots whatever M: tokens past M are zero fragments (no per-tile test)
    (void)M;
    s.xt = take(kc * 8 * 4);
    s.xh = take(kc * 2 * 8 * 4);
    s.slot = take(2 * kWarps * U * 512);
    s.ssq = take((kWarps + 1) * 8 * 4);
    s.ring = take(kWarps * ring_tiles * 512);
    s.total = o;
    return s;
  }
};

// The plan of a shape: `tall` (SwiGLU or N >= 32768 rows: enough row units to balance without splitting K) takes
// C = 1; otherwise C from K alone (K <= 4096: 1, 13696: 8). S warps along K: the largest power of two <= 16 with at
// least 2 tiles a warp. Valid when every warp owns at least one tile of every row tile and at most 4.
// force_c / force_s > 0 pin C / S (the kernel harness's variants; a view must then be planned with the same pins).
inline Plan plan_v3(int64_t n, int64_t k, bool swiglu, int sms, int force_c = 0, int force_s = 0) {
  Plan p;
  if (n % 16 || k % 64 || (swiglu && (n / 2) % 16)) return p;
  const int kt = static_cast<int>(k / 64);
  const bool tall = swiglu || n >= 32768;
  // K = 4096 (kt = 64: qkv, o) takes C = 1: the H200 harness (gemv3_final.log) ran it at 11.2 / 9.2 us against
  // 12.5 / 11.6 us for C = 4 (M = 1; M = 8: 12.7 / 11.0 against 13.7 / 12.7): the split's workspace pass costs
  // more than the 2.2 row units a block it saves. Longer K (down, 13696) keeps C = 8 (C = 4 and 16 were no faster).
  p.C = force_c > 0 ? force_c : tall ? 1 : kt >= 128 ? 8 : kt > 64 ? 4 : 1;
  const int kc_min = kt / p.C;
  p.kc_max = (kt + p.C - 1) / p.C;
  p.S = 16;
  while (p.S > 1 && p.kc_max < 2 * p.S) p.S /= 2;
  if (force_s > 0) p.S = force_s;
  if (kc_min < p.S) return p;
  p.kwm = (p.kc_max + p.S - 1) / p.S;
  if (p.kwm > 4) return p;
  p.kwm = p.kwm <= 1 ? 1 : p.kwm <= 2 ? 2 : 4;  // instantiated: 1, 2, 4
  const int U = swiglu ? 2 : 1;
  p.ns = (p.kwm * U >= 8) ? 1 : 8 / (p.kwm * U);
  const int64_t nu = swiglu ? n / 32 : n / 16;
  int blocks = (sms / p.C) * p.C;
  if (blocks < p.C) blocks = p.C;
  if (static_cast<int64_t>(blocks) > nu * p.C) blocks = static_cast<int>(nu * p.C);
  p.blocks = blocks;
  p.valid = true;
  return p;
}

// Shared memory of a launch of plan p for M tokens (U = 2 for SwiGLU), with the shared-memory ring or without.
inline int smem_bytes(const Plan& p, int M, int U, bool smring = true) {
  return Smem::of(M, p.kc_max, U, smring ? p.ns * p.kwm * U : 0).total;
}

__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
// u16 weight-side load: no L1 allocation, L2 evict-first (read once a token)
__device__ __forceinline__ uint32_t ld_u16_stream(const uint16_t* p, uint64_t pol) {
  uint16_t r;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.u16 %0, [%1], %2;" : "=h"(r) : "l"(p), "l"(pol));
  return r;
}
__device__ __forceinline__ void griddep_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void griddep_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}
// The weight stream's cp.async. Its .L2::cache_hint form (an evict_first createpolicy operand) trapped with
// "illegal instruction" on the H200 (compute-sanitizer, 2026-12-03 run 4: here and in gemv2's ring kernel), so the
// copy goes without the hint; `pol` is kept for the call sites.
__device__ __forceinline__ void cp_async16_pol(void* dst, const void* src, uint64_t /*pol*/) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(dst))), "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ float4 ld_cg4(const float* p) { return __ldcg(reinterpret_cast<const float4*>(p)); }

// One tile's loads: 16 code bytes a lane, and the scale/zero of rows g and g + 8 (SZ groups: 2 for G = 32).
template <int SZ>
struct TileRegs {
  uint4 q;
  uint32_t s[SZ];  // this lane's one of s_g, s_g8, z_g, z_g8 (by t) as bf16 bits; the quad shares them by shuffles
};

// KWM: most tiles a warp owns in a row tile; U: row tiles a unit (2: SwiGLU gate + up); NS: ring depth in steps.
// PROBE: the same loads, no arithmetic (the harness's bandwidth probe; not a GEMV, never validated).
// PLAIN_LD (harness diagnostics): the weight loads without the L2 evict_first hint (and without L1::no_allocate).
// SMRING: the codes go through a per-warp ring in shared memory by cp.async (16 B a lane a tile; each lane reads
// back only its own 16 bytes, so its own wait_group suffices); false: a register ring (the first H200 run: at 8
// tiles a warp it spills, and the spill stores wait for the loads in flight).
template <int G, int KWM, int U, int NS, bool PROBE = false, bool PLAIN_LD = false, bool SMRING = true>
__global__ void __launch_bounds__(kThreads, 1) gemv_v3_kernel(const Params p) {
  static_assert(G == 32 || G == 64 || G == 128, "group size");
  constexpr int SZ = G == 32 ? 2 : 1;
  constexpr int T = KWM * U;  // tiles a warp a step
  constexpr float OFF = 128.f;
  extern __shared__ __align__(16) unsigned char smem[];

  const int M = p.M, K = p.K, KT = K >> 6, NT = p.N >> 4, KG = K / G, C = p.C, S = p.S, R = kWarps / S;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int c = blockIdx.x % C, q = blockIdx.x / C, PC = gridDim.x / C;
  const int NU = U == 2 ? NT / 2 : NT;
  const int u0 = lo_of(NU, PC, q), nu = lo_of(NU, PC, q + 1) - u0;  // the block's row units
  const int kc0 = lo_of(KT, C, c), KC = lo_of(KT, C, c + 1) - kc0;  // the block's k tiles
  const int KCmax = (KT + C - 1) / C;
  const int s_w = warp % S, r_w = warp / S;
  const int kw0 = lo_of(KC, S, s_w), KW = lo_of(KC, S, s_w + 1) - kw0;  // the warp's tiles, chunk-local
  const int nsteps = (nu + R - 1) / R;
  constexpr int D = NS * T;  // ring tiles a warp
  const Smem sm = Smem::of(M, KCmax, U, SMRING ? D : 0);
  const uint4* xf = reinterpret_cast<const uint4*>(smem + sm.xf);
  float* xt = reinterpret_cast<float*>(smem + sm.xt);
  float* xh = reinterpret_cast<float*>(smem + sm.xh);
  float* slot = reinterpret_cast<float*>(smem + sm.slot);
  float* ssq = reinterpret_cast<float*>(smem + sm.ssq);
  griddep_launch();

  const uint64_t pol = l2_evict_first_policy();
  // Row tile of unit-slot u of step st for this warp (-1: past the block's units)
  auto tile_of = [&](int st, int u) -> int {
    const int r = st * R + r_w;
    if (r >= nu) return -1;
    const int un = u0 + r;
    return U == 2 ? (u == 0 ? un : NT / 2 + un) : un;
  };
  // Warp-constant parts of the addresses: codes of tile (nt, kc0 + kw0 + j) = cbase + nt * KT * 512 + j * 512
  const uint8_t* cbase = p.codes + static_cast<int64_t>(kc0 + kw0) * 512 + lane * 16;
  const int ktw = kc0 + kw0;  // the warp's first k tile (global)
  TileRegs<SZ> ring[NS][T];
  // G = 128 and the warp's first tile even: tiles (2i, 2i + 1) of its range are one group, corrected once (d summed
  // over both, then s (d - (128 + z)(sum x~ of both tiles))); a last odd tile alone. A function of K only.
  const bool pairable = G == 128 && (ktw & 1) == 0;
  const uint16_t* szlane = (t < 2 ? p.scales : p.zeros) + g + (t & 1) * 8;
  // the loads of tile slot i (= u * KWM + j) of step st into ring slot b
  unsigned char* ringw = smem + sm.ring + (warp * D) * 512 + lane * 16;  // this lane's 16 bytes of slot 0
  // slot (b, i) of the ring: b * T + i
  auto load_tile = [&](TileRegs<SZ>& r, int nt, int j, int sl) {
    if (nt >= 0 && j < KW) {
      const uint8_t* cp = cbase + static_cast<int64_t>(nt) * KT * 512 + j * 512;
      if constexpr (SMRING) {
        if constexpr (PLAIN_LD) cp_async16(ringw + sl * 512, cp);
        else cp_async16_pol(ringw + sl * 512, cp, pol);
      } else if constexpr (PLAIN_LD) {
        r.q = __ldg(reinterpret_cast<const uint4*>(cp));
      } else {
        r.q = ld_stream16(cp, pol);
      }
      const int64_t srow = static_cast<int64_t>(nt) * KG * 16;
      const bool first_of_pair = pairable && (j & 1) == 0 && j + 1 < KW;  // its group's values come with tile j + 1
#pragma unroll
      for (int h = 0; h < SZ; ++h) {
        if (first_of_pair) break;
        const int gi = G == 32 ? 2 * (ktw + j) + h : (G == 64 ? ktw + j : (ktw + j) >> 1);
        const uint16_t* sp = szlane + srow + static_cast<int64_t>(gi) * 16;
        if constexpr (PLAIN_LD) r.s[h] = __ldg(sp);
        else r.s[h] = ld_u16_stream(sp, pol);
      }
    }
    if constexpr (SMRING) cp_async_commit();  // one group a slot refill, empty or not: wait_group counts stay fixed
  };
  auto load_step = [&](int b, int st) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int nt = tile_of(st, u);
#pragma unroll
      for (int j = 0; j < KWM; ++j) load_tile(ring[b][u * KWM + j], nt, j, b * T + u * KWM + j);
    }
  };
#pragma unroll
  for (int b = 0; b < NS; ++b) load_step(b, b);

  // ---- x, out, the workspace and the tickets only after the previous kernel is complete
  griddep_wait();

  // ---- stage x~ = bf16(x * norm_w) of the chunk as B fragments, tile and half-tile sums of x~, sum of x^2
  const bool norm = p.norm_f32 != nullptr || p.norm_bf16 != nullptr;
  {
    uint4* xfw = reinterpret_cast<uint4*>(smem + sm.xf);
    float ssm[8];  // this lane's sum of x^2 per token
#pragma unroll
    for (int m = 0; m < 8; ++m) ssm[m] = 0.f;
    // item i = (ktl * 2 + h) * 4 + tt: 8 bf16 of a half tile for lane tt of a quad; whole warps iterate (the shuffles
    // need all 32 lanes; a quad's 8 lanes of a tile are inside or outside the range together). x of 4 tokens is
    // loaded before any is used: ceil(M / 4) L2 round trips, not M.
    for (int base = warp * 32; base < KC * 8; base += kThreads) {
      const int i = base + lane;
      const bool ok = i < KC * 8;
      const int ktl = i >> 3, h = (i >> 2) & 1, tt = i & 3;
      const int k = (kc0 + ktl) * 64 + 32 * h + 2 * tt;
      float2 nw[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kk = k + 8 * e;
        nw[e] = make_float2(1.f, 1.f);
        if (ok && p.norm_f32) nw[e] = __ldg(reinterpret_cast<const float2*>(p.norm_f32 + kk));
        if (ok && p.norm_bf16) {
          const uint32_t wv = __ldg(reinterpret_cast<const unsigned int*>(p.norm_bf16 + kk));
          nw[e] = make_float2(bf16lo(wv), bf16hi(wv));
        }
      }
#pragma unroll
      for (int m0 = 0; m0 < 8; m0 += 2) {  // all 8 slots: tokens past M are written as zeros (no loads)
        float2 v[2][4];
#pragma unroll
        for (int mm = 0; mm < 2; ++mm)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            v[mm][e] = ok && m0 + mm < M ? __ldg(reinterpret_cast<const float2*>(p.x + static_cast<int64_t>(m0 + mm) * K + k + 8 * e))
                                         : make_float2(0.f, 0.f);
#pragma unroll
        for (int mm = 0; mm < 2; ++mm) {
          const int m = m0 + mm;
#pragma unroll
          for (int e = 0; e < 4; ++e) ssm[m] = fmaf(v[mm][e].y, v[mm][e].y, fmaf(v[mm][e].x, v[mm][e].x, ssm[m]));
          if (norm) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              v[mm][e].x *= nw[e].x;
              v[mm][e].y *= nw[e].y;
            }
          }
          uint4 f;
          f.x = pack_bf16x2(v[mm][0].x, v[mm][0].y);  // j = 2h:   k0 + 2t, 2t+1
          f.y = pack_bf16x2(v[mm][1].x, v[mm][1].y);  //           k0 + 2t+8, 2t+9
          f.z = pack_bf16x2(v[mm][2].x, v[mm][2].y);  // j = 2h+1
          f.w = pack_bf16x2(v[mm][3].x, v[mm][3].y);
          if (ok) xfw[((ktl * 2 + h) * 8 + m) * 4 + tt] = f;
          // sum of the bf16 values (what the tensor cores multiply), fixed order
          float hs = (bf16lo(f.x) + bf16hi(f.x)) + (bf16lo(f.y) + bf16hi(f.y)) + ((bf16lo(f.z) + bf16hi(f.z)) + (bf16lo(f.w) + bf16hi(f.w)));
          hs += __shfl_xor_sync(0xffffffffu, hs, 1);
          hs += __shfl_xor_sync(0xffffffffu, hs, 2);
          const float other = __shfl_xor_sync(0xffffffffu, hs, 4);  // the tile's other half
          if (ok && tt == 0) {
            xh[(ktl * 2 + h) * 8 + m] = hs;
            if (h == 0) xt[ktl * 8 + m] = hs + other;
          }
        }
      }
    }
#pragma unroll
    for (int m = 0; m < 8; ++m) {
      const float ss = warp_sum(ssm[m]);  // zero for tokens past M
      if (lane == 0) ssq[warp * 8 + m] = ss;
    }
  }
  __syncthreads();
  if (tid < 8) {  // the chunk's sum of x^2 per token, fixed order over warps
    float v = 0.f;
    for (int w = 0; w < kWarps; ++w) v += ssq[w * 8 + tid];
    ssq[kWarps * 8 + tid] = v;
    if (C > 1 && norm) {
      p.ws[static_cast<int64_t>(NU) * C * U * 128 + c * 8 + tid] = v;  // same value from every block of chunk c
      __threadfence();
    }
  }
  __syncthreads();

  // ---- main loop
  const uint4* xfg = xf + g * 4 + t;  // token g's fragments: [ktl][h][8][4] + (ktl * 2 + h) * 32 (zeros past M)
  // tile_compute(r, ktl, d, acc, mode): the tile's 4 mma into d; mode 0: correct with the tile's sums and clear d;
  // 1: leave d for the pair's second tile; 2: the pair's second tile, correct with both tiles' sums and clear d.
  auto tile_compute = [&](const TileRegs<SZ>& r, int ktl, float (&d)[4], float (&acc)[4], int mode) {
    if constexpr (PROBE) {
      acc[0] += __uint_as_float((r.q.x ^ r.q.y ^ r.q.z ^ r.q.w) & 0x007fffffu) + __uint_as_float(r.s[0] & 0x7fffu);
      return;
    } else {
      const uint4 b01 = xfg[(ktl * 2) * 32], b23 = xfg[(ktl * 2 + 1) * 32];
      auto word = [&](uint32_t w, uint32_t b0, uint32_t b1) {
        const uint32_t a0 = (w & 0x000F000Fu) | 0x43004300u;
        const uint32_t a1 = ((w >> 4) & 0x000F000Fu) | 0x43004300u;
        const uint32_t a2 = ((w >> 8) & 0x000F000Fu) | 0x43004300u;
        const uint32_t a3 = ((w >> 12) & 0x000F000Fu) | 0x43004300u;
        mma16816(d, a0, a1, a2, a3, b0, b1);
      };
      auto correct = [&](int h, float2 xs) {
        const float s0 = __uint_as_float(__shfl_sync(0xffffffffu, r.s[h], 0, 4) << 16);
        const float s1 = __uint_as_float(__shfl_sync(0xffffffffu, r.s[h], 1, 4) << 16);
        const float c0 = OFF + __uint_as_float(__shfl_sync(0xffffffffu, r.s[h], 2, 4) << 16);
        const float c1 = OFF + __uint_as_float(__shfl_sync(0xffffffffu, r.s[h], 3, 4) << 16);
        acc[0] = fmaf(s0, fmaf(-c0, xs.x, d[0]), acc[0]);
        acc[1] = fmaf(s0, fmaf(-c0, xs.y, d[1]), acc[1]);
        acc[2] = fmaf(s1, fmaf(-c1, xs.x, d[2]), acc[2]);
        acc[3] = fmaf(s1, fmaf(-c1, xs.y, d[3]), acc[3]);
        d[0] = d[1] = d[2] = d[3] = 0.f;
      };
      word(r.q.x, b01.x, b01.y);
      word(r.q.y, b01.z, b01.w);
      if constexpr (G == 32) correct(0, *reinterpret_cast<const float2*>(&xh[(ktl * 2) * 8 + 2 * t]));
      word(r.q.z, b23.x, b23.y);
      word(r.q.w, b23.z, b23.w);
      if constexpr (G == 32) {
        correct(SZ - 1, *reinterpret_cast<const float2*>(&xh[(ktl * 2 + 1) * 8 + 2 * t]));
      } else {
        if (mode == 1) return;
        float2 xs = *reinterpret_cast<const float2*>(&xt[ktl * 8 + 2 * t]);
        if (mode == 2) {
          const float2 x0 = *reinterpret_cast<const float2*>(&xt[(ktl - 1) * 8 + 2 * t]);
          xs = make_float2(x0.x + xs.x, x0.y + xs.y);
        }
        correct(0, xs);
      }
    }
  };

  const int Nout = U == 2 ? p.N / 2 : p.N;
  // The epilogue of unit un (row tiles of the unit: v[0] gate / the tile, v[1] up), lane's fragment values.
  auto epilogue = [&](int un, const float4 (&v)[U], const float (&rinv)[2]) {
    const int nt = un;  // gate tile or the tile
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int row = g + ((e & 2) ? 8 : 0), m = 2 * t + (e & 1);
      if (m >= M) continue;
      const int n0 = nt * 16 + row;
      const float ri = rinv[e & 1];
      auto bias_at = [&](int n) { return p.bias_f32 ? p.bias_f32[n] : (p.bias_bf16 ? bf16_bits_to_f(p.bias_bf16[n]) : 0.f); };
      const float a0 = e == 0 ? v[0].x : e == 1 ? v[0].y : e == 2 ? v[0].z : v[0].w;
      const float y0 = a0 * ri + bias_at(n0);
      float* o = p.out + static_cast<int64_t>(m) * Nout + n0;
      if constexpr (U == 2) {
        const float a1 = e == 0 ? v[U - 1].x : e == 1 ? v[U - 1].y : e == 2 ? v[U - 1].z : v[U - 1].w;
        const float y1 = a1 * ri + bias_at(n0 + p.N / 2);
        *o = y0 / (1.f + expf(-y0)) * y1;
      } else {
        if (p.mode == kAccumulate) *o = *o + y0;
        else *o = y0;
      }
    }
  };
  // The epilogue of one value: row `row` of unit un, token m (a[0]: the gate / the tile, a[1]: up).
  auto epilogue1 = [&](int un, int row, int m, const float (&a)[U], float ri) {
    const int n0 = un * 16 + row;
    auto bias_at = [&](int n) { return p.bias_f32 ? p.bias_f32[n] : (p.bias_bf16 ? bf16_bits_to_f(p.bias_bf16[n]) : 0.f); };
    const float y0 = a[0] * ri + bias_at(n0);
    float* o = p.out + static_cast<int64_t>(m) * Nout + n0;
    if constexpr (U == 2) {
      const float y1 = a[U - 1] * ri + bias_at(n0 + p.N / 2);
      *o = y0 / (1.f + expf(-y0)) * y1;
    } else {
      if (p.mode == kAccumulate) *o = *o + y0;
      else *o = y0;
    }
  };
  auto rinv_of = [&](float (&ri)[2], bool from_ws) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      ri[e] = 1.f;
      const int m = 2 * t + e;
      if (norm && m < M) {
        float v = 0.f;
        if (from_ws) {
          for (int cc = 0; cc < C; ++cc) v += __ldcg(p.ws + static_cast<int64_t>(NU) * C * U * 128 + cc * 8 + m);
        } else {
          v = ssq[kWarps * 8 + m];
        }
        ri[e] = 1.f / sqrtf(v / static_cast<float>(K) + p.eps);
      }
    }
  };

  for (int st0 = 0; st0 < nsteps; st0 += NS) {
#pragma unroll
    for (int b = 0; b < NS; ++b) {
      const int st = st0 + b;
      if (st >= nsteps) break;  // block-uniform
      float acc[U][4], d[U][4];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        acc[u][0] = acc[u][1] = acc[u][2] = acc[u][3] = 0.f;
        d[u][0] = d[u][1] = d[u][2] = d[u][3] = 0.f;
      }
      const bool live = tile_of(st, 0) >= 0;  // warp-uniform
      int ntn[U];  // row tiles of step st + NS (refills)
#pragma unroll
      for (int u = 0; u < U; ++u) ntn[u] = st + NS < nsteps ? tile_of(st + NS, u) : -1;
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int j = 0; j < KWM; ++j) {
          // consume the slot, refill it with step st + NS at once (T * NS tiles stay in flight), then compute
          TileRegs<SZ> cur = ring[b][u * KWM + j];
          if constexpr (SMRING) {
            cp_async_wait<D - 1>();  // this slot's group (the oldest of the D pending) has landed
            cur.q = *reinterpret_cast<const uint4*>(ringw + (b * T + u * KWM + j) * 512);
          }
          load_tile(ring[b][u * KWM + j], ntn[u], j, b * T + u * KWM + j);
          if (live && j < KW) {
            const int mode = !pairable ? 0 : (j & 1) ? 2 : (j + 1 < KW ? 1 : 0);
            tile_compute(cur, kw0 + j, d[u], acc[u], mode);
          }
        }
      // partials of this step: slot [st & 1][warp][u][128]
      float* sl = slot + ((st & 1) * kWarps + warp) * U * 128;
#pragma unroll
      for (int u = 0; u < U; ++u)
        *reinterpret_cast<float4*>(sl + u * 128 + lane * 4) = make_float4(acc[u][0], acc[u][1], acc[u][2], acc[u][3]);
      __syncthreads();
      // the block's sums of this step, spread over all 512 threads (one fragment value each, few registers: the
      // ring stays in registers across this): value f of row stream r, the S slots summed in fixed order; C == 1:
      // the epilogue of that value; C > 1: a plain store of the block's partial to the workspace
      for (int idx = tid; idx < R * 128; idx += kThreads) {
        const int r = idx >> 7, f = idx & 127, rr = st * R + r;
        const int fl = f >> 2, e = f & 3, m = 2 * (fl & 3) + (e & 1);
        if (rr >= nu || m >= M) continue;
        const int un = u0 + rr;
        float a[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const float* sp = slot + ((st & 1) * kWarps + r * S) * U * 128 + u * 128 + f;
          float v = 0.f;
          for (int s2 = 0; s2 < S; ++s2) v += sp[s2 * U * 128];  // fixed order over the K slices of the block
          a[u] = v;
        }
        if (C == 1) {
          const float ri = norm ? 1.f / sqrtf(ssq[kWarps * 8 + m] / static_cast<float>(K) + p.eps) : 1.f;
          if constexpr (!PROBE) epilogue1(un, (fl >> 2) + ((e & 2) ? 8 : 0), m, a, ri);
          else if (a[0] == 1.2345f) p.out[0] = a[U - 1];  // keep the probe's loads alive
        } else {
          float* wsu = p.ws + (static_cast<int64_t>(un) * C + c) * U * 128 + f;
#pragma unroll
          for (int u = 0; u < U; ++u) wsu[u * 128] = a[u];
        }
      }
    }
  }
  if (C == 1) return;
  // ---- split K: once a block, after its whole stream (the fences and tickets cost L2 round trips; per step they
  // would hold every warp at the next barrier). Unit i of the block by warp i % 16; the last of the C chunks sums
  // them in fixed order and runs the epilogue, then leaves the ticket at rest.
  __threadfence();
  __syncthreads();
  for (int rr = warp; rr < nu; rr += kWarps) {
    const int un = u0 + rr;
    const float* wsu = p.ws + static_cast<int64_t>(un) * C * U * 128;
    unsigned old = 0;
    if (lane == 0) old = atomicAdd(p.tickets + un, 1u);
    old = __shfl_sync(0xffffffffu, old, 0);
    if (old != static_cast<unsigned>(C - 1)) continue;
    __threadfence();
    float4 sum[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
      for (int cc = 0; cc < C; ++cc) {
        const float4 w = ld_cg4(wsu + (cc * U + u) * 128 + lane * 4);
        a.x += w.x;
        a.y += w.y;
        a.z += w.z;
        a.w += w.w;
      }
      sum[u] = a;
    }
    float ri[2];
    rinv_of(ri, true);
    if constexpr (!PROBE) epilogue(un, sum, ri);
    else if (sum[0].x == 1.2345f) p.out[0] = sum[0].y;
    if (lane == 0) p.tickets[un] = 0u;  // at rest for the next launch
  }
}

}  // namespace gemv3
}  // namespace cuda
}  // namespace glm4
