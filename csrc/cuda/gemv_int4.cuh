// The INT4 GEMV of decode (M = 1..8 tokens) on the tensor cores, reading layout 1 (core/int4_layout.h), with the
// fusions of linear_int4 (ops.h): an RMSNorm prologue, bias, and store / accumulate / SwiGLU epilogues. Included by
// gemv_int4.cu (the ops) and by the kernel harness (bench/kernels/gemv_bench.cu), which instantiates variants.
//
// Why tensor cores for a GEMV: layout 1 makes each lane's 16-byte load exactly its A fragments of four
// mma.m16n8k16 (16 rows x 64 k a warp load, 512 contiguous bytes), and the M <= 8 tokens are the mma's 8 columns.
// The per-tile work is then the same for M = 1 and M = 8: 4 mma + ~28 integer ops of dequantization + ~10 for the
// group's scale/zero, about 45 % of the issue slots an SM has for 512 bytes at its share of HBM bandwidth. (The
// CUDA-core GEMV it replaces did 1 FFMA per code and token: compute bound from M = 4.)
//
// Arithmetic (per 16-row tile, token m, one group-or-tile span of k):
//   A = 128 + q exactly in bf16 (0x4300 | q: one LOP3 per pair), B = x~ = bf16(x * norm_w) staged in shared memory,
//   d = mma sum_k (128 + q_k) x~_k in f32; then acc += s * (d - (128 + z) * sum_k x~_k)   [NF4: A = bf16(NF4[q]),
//   offset 0]. sum_k x~_k comes from the staging (f32 over the same bf16 values), so the result is
//   sum_k (q_k - z) s x~_k up to f32 rounding; the 128 offset costs ~5 bits of the tensor core's f32 accumulation
//   (|d| ~ 128 |sum x|), far below the bf16 rounding of x (the matmul tolerance's reason).
// The RMSNorm scale r_m = 1/sqrt(mean(x_m^2) + eps) is a per-token scalar: x * norm_w is staged and the result is
// multiplied by r_m in the epilogue; sum x^2 is accumulated while staging (f32).
//
// Work decomposition (chosen per shape, never per M, so a token's arithmetic is the same for every M: batched rows
// equal solo rows bit for bit): a block owns RT row tiles (SwiGLU: RT/2 gate tiles and their up partners N/32 tiles
// further) and a K range; a cluster of CL blocks (sm_90) splits K further. Inside a block, RT * KS units (row tile,
// K slice) go to W = RT * KS / UPW warps, UPW units each, streamed back to back. A warp keeps DEPTH 16-byte tile
// loads in flight (a register ring; L1::no_allocate + L2 evict_first: weights are read once a token). Partial sums
// meet in shared memory (and through distributed shared memory across the cluster) in a fixed order.
//
// PDL: the weight loads of the first DEPTH tiles are issued before griddepcontrol.wait, so with programmatic
// stream serialization they overlap the previous kernel's tail; x, the residual and the output are touched only
// after it. launch_dependents is signalled early (every block resident at once is the usual case).
#pragma once
#include <cooperative_groups.h>

#include "core/int4_layout.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace gemv {

namespace cg = cooperative_groups;

enum Mode : int { kStore = 0, kAccumulate = 1, kSwiGlu = 2 };

// The decomposition (host-chosen, see pick_config in gemv_int4.cu).
struct Config {
  int rt = 1;   // row tiles per block (SwiGLU: even; gate tiles rt/2 and their up partners)
  int ks = 8;   // K slices per row tile inside a block
  int cl = 1;   // blocks per cluster along K (1 without clusters)
  int upw = 1;  // units (row tile, K slice) per warp
  int ring = 0;   // tiles in flight a warp through a cp.async ring in shared memory (0: the DEPTH register ring)
  int rslot = 0;  // bytes a ring slot: 512 code bytes + scales and zeros (64; 128 for G = 32: two groups a tile)
  int order = 1;  // ring kernel: 1 = interleaved K slices + rotated runs (gemv_int4_kernel), 0 = contiguous (harness)
  __host__ __device__ int warps() const { return rt * ks / upw; }
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
  float eps;
  int M, N, K;
  int mode;
  Config cfg;
};

// Shared memory of one block for M tokens over KTb k-tiles (bytes, 16-aligned pieces):
//   xf    uint4 [KTb][2][M][4]   x~ as mma B fragments (lane 4g+t of token g reads [kt][h][g][t])
//   xh    float [KTb*2][8]       sum of x~ over each 32-k half tile, per token (0 past M)
//   xt    float [KTb][8]         the same over each 64-k tile ((h0 + h1), fixed order)
//   part  float [RT*KS][128]     per-unit partial sums (aliases xf when UPW == 1: written after the main loop)
//   bsum  float [RT][128]        the block's sums (read by the cluster's other blocks)
//   ssq   float [W][8] + [8]     sum of x^2 per warp and the block's, per token
//   ring  [W][RING][rslot]       ring kernel only: a slot = one tile's 512 code bytes + its scales and zeros
//                                (G = 32: 64 + 64 bytes, two groups; else 32 + 32)
__host__ __device__ constexpr int ring_slot_bytes(int group) { return 512 + (group == 32 ? 128 : 64); }
struct Smem {
  int xf, xh, xt, part, bsum, ssq, ring, total;
  __host__ __device__ static Smem of(int M, int KTb, const Config& c) {
    Smem s;
    int o = 0;
    auto take = [&](int bytes) { const int at = o; o += (bytes + 15) & ~15; return at; };
    const int xfb = KTb * M * 128, partb = c.rt * c.ks * 512;
    s.xf = take(c.upw == 1 && partb > xfb ? partb : xfb);
    s.xh = take(KTb * 2 * 8 * 4);
    s.xt = take(KTb * 8 * 4);
    s.part = c.upw == 1 ? s.xf : take(partb);
    s.bsum = c.ring > 0 && c.ks == 1 && c.upw > 1 ? s.part : take(c.rt * 512);  // ks = 1: the block sums are the partials
    s.ssq = take((c.warps() + 1) * 8 * 4);
    s.ring = c.ring > 0 ? take(c.warps() * c.ring * c.rslot) : 0;
    s.total = o;
    return s;
  }
};

// The decomposition of one shape (never of M: a token's arithmetic must not depend on how many tokens run).
// Every block resident at once (one wave: no tail of late blocks), 8 warps a block, shared memory for 8 tokens' x.
// Two families:
//   A "split K" (qkv, o, down, and any row range of them): each row tile's K is cut into 8 slices inside a block
//     (ks = 8, one warp each; rt = upw row tiles a block, a warp streaming its slice of each) and over a cluster of
//     cl blocks, cl chosen from K alone (the smallest whose x slice lets 3 blocks share an SM). A row's arithmetic
//     then depends on K only: row views of one weight (q, k, v of the fused qkv) compute exactly like the whole.
//   B "whole rows" (SwiGLU gate_up, and shapes too tall for A in one wave: the output layer): a warp streams whole
//     K runs (ks = 1, cl = 1), rt = 8 upw row tiles a block, rt as small as one wave allows.
// occ(threads, smem) is the kernel's resident blocks an SM; smem_sm the shared memory of an SM. force_cl / force_rt
// (> 0) pin a choice (the kernel harness's variants; force_rt also picks the family: ks = 1 when rt > 8).
// Expected on an H200 (132 SMs, 3 blocks of 256 threads an SM at <= 80 registers): qkv A rt 1 cl 1 (288 blocks),
// o A rt 1 (256), k/v views A rt 1 (16), down A rt 4 cl 4 (256), gate_up B rt 8 (214), output B rt 32 (296).
struct Plan {
  Config cfg;
  int mc = 8;         // tokens a launch
  int rowgroups = 0;  // grid y (grid x = cl)
  bool one_wave = false;
};

// Tile range [b, e) of part i of n over t tiles (balanced, contiguous).
__host__ __device__ __forceinline__ int split_lo(int t, int n, int i) { return static_cast<int>(static_cast<int64_t>(t) * i / n); }

template <class Occ>
inline bool choose_plan(int64_t n, int64_t k, bool swiglu, int sms, int major, int smem_optin, int smem_sm, Occ occ, Plan* out,
                        int force_cl = 0, int force_rt = 0, int ring = 0, int group = 128) {
  const int nt = static_cast<int>(n / 16), kt = static_cast<int>(k / 64);
  auto try_plan = [&](const Config& c, int mc) -> int {  // 1 one wave, 0 fits (more waves), -1 does not fit
    if ((kt + c.cl - 1) / c.cl < c.ks) return -1;  // every K slice gets a tile
    const int smem = Smem::of(mc, (kt + c.cl - 1) / c.cl, c).total;
    if (smem > smem_optin) return -1;
    const int per_sm = occ(c.warps() * 32, smem);
    if (per_sm <= 0) return -1;
    const int rg = swiglu ? (nt / 2 + c.rt / 2 - 1) / (c.rt / 2) : (nt + c.rt - 1) / c.rt;
    out->cfg = c;
    out->mc = mc;
    out->rowgroups = rg;
    out->one_wave = static_cast<int64_t>(rg) * c.cl <= static_cast<int64_t>(per_sm) * sms;
    return out->one_wave ? 1 : 0;
  };
  for (int mc : {8, 4, 2, 1}) {
    // family A: cl from K alone
    int cl = force_cl;
    if (!cl) {
      for (cl = 1; cl < 8 && (major >= 9 || cl == 1); cl *= 2) {
        Config c;
        c.cl = cl;
        c.ring = ring;
        c.rslot = ring_slot_bytes(group);
        // ring kernel: x of the tokens at most 16 KB a block (the ring takes ~36 KB: 3 blocks an SM with the partials)
        if (ring > 0 ? (kt + cl - 1) / cl * mc * 128 <= 16384 : Smem::of(mc, (kt + cl - 1) / cl, c).total + 1024 <= smem_sm / 3) break;
        if (major < 9) break;
      }
    }
    if (!swiglu && (!force_rt || force_rt <= 8) && (cl == 1 || major >= 9)) {
      int last = -1;
      for (int rt = 1; rt <= 8; rt *= 2) {
        if (force_rt && rt != force_rt) continue;
        Config c;
        c.rt = rt;
        c.ks = 8;
        c.upw = rt;
        c.cl = cl;
        c.ring = ring;
        c.rslot = ring_slot_bytes(group);
        last = try_plan(c, mc);
        if (last == 1 || (force_rt && last == 0)) return true;
      }
    }
    // family B, ring kernel (no force_rt <= 8): the one-wave plan with the most blocks over cl in {cl from K, 2, 1}
    // and rt any multiple of 8 (the output layer: 9472 / 72 = 132 row groups), ties to the smaller cl and rt
    if (ring > 0 && (!force_rt || force_rt > 8) && !force_cl) {
      Config bestc;
      int best_blocks = 0;
      for (int clb : {cl, 2, 1}) {
        if (clb > cl || (clb > 1 && major < 9)) continue;
        for (int rt = 8; rt <= 512; rt += 8) {
          if (force_rt && rt != force_rt) continue;
          Config c;
          c.rt = rt;
          c.ks = 1;
          c.upw = rt / 8;
          c.cl = clb;
          c.ring = ring;
          c.rslot = ring_slot_bytes(group);
          if (try_plan(c, mc) == 1) {
            const int blocks = out->rowgroups * clb;
            if (blocks > best_blocks) {
              best_blocks = blocks;
              bestc = c;
            }
            break;  // larger rt: fewer blocks
          }
        }
      }
      if (best_blocks > 0) return try_plan(bestc, mc) == 1;
    }
    // family B
    int last = -1;
    Config best;
    for (int rt = force_rt > 8 ? force_rt : 8; rt <= (force_rt > 8 ? force_rt : 128); rt *= 2) {
      if (force_rt && rt != force_rt) continue;
      if (rt % 8) continue;
      Config c;
      c.rt = rt;
      c.ks = 1;
      c.upw = rt / 8;
      // the ring kernel splits K over a cluster here too (cl from K, as family A): whole-K x staging for 8 tokens
      // plus the ring would leave one block an SM
      c.cl = force_cl ? force_cl : (ring > 0 && major >= 9 ? cl : 1);
      c.ring = ring;
        c.rslot = ring_slot_bytes(group);
      if (c.cl > 1 && major < 9) continue;
      const int r = try_plan(c, mc);
      if (r == 1) return true;
      if (r == 0) {
        last = 0;
        best = c;
      }
    }
    if (last == 0) return try_plan(best, mc) >= 0;  // no one-wave plan: the tallest blocks that fit
  }
  return false;
}

__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t bf16x2(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ uint16_t ld_stream_u16(const uint16_t* p, uint64_t pol) {
  uint16_t r;
  asm volatile("ld.global.nc.L1::no_allocate.L2::cache_hint.u16 %0, [%1], %2;" : "=h"(r) : "l"(p), "l"(pol));
  return r;
}
// 16 bytes global -> shared without L1 (the ring kernel's weight stream). Without the L2 evict_first hint: the
// .L2::cache_hint form of cp.async trapped with "illegal instruction" on the H200 (compute-sanitizer on gemv_v3, run 4
// of 2026-12-03; the same form is what stopped this ring kernel in the runs of 2026-12-03).
__device__ __forceinline__ void cp_async16_hint(void* smem_dst, const void* src, uint64_t /*pol*/) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(smem_dst))),
               "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// NF4 value of code i (once a block; a local table is fine there).
__device__ __forceinline__ float d_nf4(int i) { return int4_code_value(kInt4CodebookNf4, i); }
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// The A registers of one k16 sub-tile (word w of a lane's 16 bytes): pair s = (w >> 4s) & 0x000F000F.
template <int CB>
__device__ __forceinline__ void dequant_word(uint32_t w, const uint32_t* nf4, uint32_t (&a)[4]) {
  if constexpr (CB == 0) {
    // bf16 0x4300 | q = 128 + q exactly (q in the low 4 mantissa bits)
    a[0] = (w & 0x000F000Fu) | 0x43004300u;
    a[1] = ((w >> 4) & 0x000F000Fu) | 0x43004300u;
    a[2] = ((w >> 8) & 0x000F000Fu) | 0x43004300u;
    a[3] = ((w >> 12) & 0x000F000Fu) | 0x43004300u;
  } else {
    // NF4: a 16-entry table of bf16 values in shared memory (16 words: one bank each, no conflicts)
#pragma unroll
    for (int s = 0; s < 4; ++s) a[s] = __byte_perm(nf4[(w >> (4 * s)) & 15u], nf4[(w >> (16 + 4 * s)) & 15u], 0x5410);
  }
}

// RING > 0: the ring kernel (gemv2): each warp streams its tiles (codes, scales, zeros) through RING slots of shared
// memory by cp.async, all RING issued before griddepcontrol.wait (a small shape's whole share is then in flight
// while the previous kernel drains), launch_dependents first thing (the next GEMV's blocks may take free slots and
// start their own stream), and x staged with its loads batched (2 items a round trip instead of one). The
// arithmetic is the DEPTH kernel's, tile for tile. RING == 0: the DEPTH register ring (the plan GLM4_GEMV_PLAN=old).
// PROBE (kernel harness only, never a GEMV): the ring streams the tiles exactly as the ring kernel does but the
// per-tile arithmetic is skipped: its time is what the memory side alone costs (a bandwidth probe, not validated).
template <int DEPTH, int CB, int G, int RING = 0, bool PROBE = false>
__global__ void __launch_bounds__(256) gemv_int4_kernel(const Params p) {
  static_assert(G == 32 || G == 64 || G == 128, "group size");
  constexpr int SZN = G == 32 ? 2 : 1;  // scale/zero loads a tile (a 64-k tile spans two groups of 32)
  constexpr float OFF = CB == 0 ? 128.f : 0.f;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ uint32_t nf4s[16];

  const Config cfg = p.cfg;
  const int M = p.M, K = p.K, KT = K >> 6, NT = p.N >> 4, KG = K / G;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, W = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int crank = blockIdx.x;  // rank in the cluster (the cluster spans grid x)
  const int rg = blockIdx.y;     // row group
  const bool swiglu = p.mode == kSwiGlu;
  const int kb_blk = split_lo(KT, cfg.cl, crank), KTb = split_lo(KT, cfg.cl, crank + 1) - kb_blk;
  const Smem sm = Smem::of(M, (KT + cfg.cl - 1) / cfg.cl, cfg);  // the same offsets in every block of a cluster
  uint4* xf = reinterpret_cast<uint4*>(smem + sm.xf);
  float* xh = reinterpret_cast<float*>(smem + sm.xh);
  float* xt = reinterpret_cast<float*>(smem + sm.xt);
  float* part = reinterpret_cast<float*>(smem + sm.part);
  float* bsum = reinterpret_cast<float*>(smem + sm.bsum);
  float* ssq = reinterpret_cast<float*>(smem + sm.ssq);
  // the next kernel may start its blocks (and their weight streams) in free slots; it reads what this one writes
  // only after its own griddepcontrol.wait (completion of this grid)
  if constexpr (RING > 0) pdl_launch_dependents();

  // Row tile of unit row r of this block (-1: past N).
  auto tile_of = [&](int r) -> int {
    if (!swiglu) {
      const int nt = rg * cfg.rt + r;
      return nt < NT ? nt : -1;
    }
    const int P = cfg.rt >> 1, half = NT >> 1, i = rg * P + (r < P ? r : r - P);
    return i < half ? (r < P ? i : half + i) : -1;
  };

  // ---- the warp's stream of tiles. Units u = warp + i * W (i < UPW) = (row r = u / KS, slice s = u % KS); as W is
  // a multiple of KS, every unit of a warp has the same slice s, hence the same tiles [kb, kb + L): the stream is
  // UPW runs of L tiles, row r0 + i * W/KS. Units past N load nothing (their rows are never stored).
  const uint64_t pol = l2_evict_first_policy();
  const int s_w = warp % cfg.ks, r0 = warp / cfg.ks, rstep = W / cfg.ks;
  // Ring kernel, ks > 1: slice s takes the block's tiles s, s + ks, s + 2 ks, ... (interleaved), so that the warps of
  // a block read ks adjacent tiles (4 KB) at a time instead of ks streams 512 B x L apart; and every unit starts its
  // run at a rotation given by its row tile (nt & 15, so 256-row views rotate like the whole weight): the warps of
  // the grid then read different offsets of their row tiles at once instead of the same offset 32 KB apart (run 3:
  // every shape at 14-22 % of copy with 3.5 MB in flight, i.e. ~4 us of effective latency: DRAM channel camping).
  // The order of a unit's tiles depends on K, cl, ks and nt & 15 only: batched == solo, views == whole.
  const bool il = RING > 0 && cfg.ks > 1 && cfg.order;
  const int kb = il ? kb_blk + s_w : kb_blk + split_lo(KTb, cfg.ks, s_w);
  const int L = il ? (KTb > s_w ? (KTb - s_w + cfg.ks - 1) / cfg.ks : 0) : kb_blk + split_lo(KTb, cfg.ks, s_w + 1) - kb;
  const int kstride = il ? cfg.ks : 1;
  // this lane loads one of s_g, s_g8, z_g, z_g8 (by t); the quad shares them by shuffles
  const uint16_t* szlane = (t < 2 ? p.scales : p.zeros) + g + (t & 1) * 8;
  struct Cursor {
    int i, j;  // unit, tile within the unit's run
    int nt;    // the unit's row tile (-1: past N)
    int rot;   // ring kernel: the run's first tile (j = 0 reads tile rot of the run)
  };
  auto open = [&](Cursor& c, int i) {
    c.i = i;
    c.j = 0;
    c.nt = i < cfg.upw ? tile_of(r0 + i * rstep) : -1;
    c.rot = RING > 0 && cfg.order && c.nt >= 0 && L > 0 ? ((c.nt & 15) * ((L + 15) / 16)) % L : 0;
  };
  // k tile of the cursor's position
  auto kt_of = [&](const Cursor& c) -> int {
    if constexpr (RING > 0) {
      const int jj = c.j + c.rot < L ? c.j + c.rot : c.j + c.rot - L;
      return kb + kstride * jj;
    } else {
      return kb + c.j;
    }
  };
  auto step = [&](Cursor& c) {
    if (++c.j >= L) open(c, c.i + 1);
  };
  const int total = L > 0 ? cfg.upw * L : 0;

  constexpr int QD = RING > 0 ? 1 : DEPTH;  // the register ring (unused by the ring kernel)
  uint4 q[QD];
  uint16_t sz[QD][SZN];
  // ring kernel: a slot holds the tile's 512 code bytes (lane l: bytes 16 l..) then SC 16-byte chunks of scales and
  // SC of zeros (G = 32: groups 2 kt and 2 kt + 1; else the tile's group): lanes 0..2 SC - 1 copy those.
  constexpr int SC = G == 32 ? 4 : 2;
  constexpr int SLOT = ring_slot_bytes(G);
  unsigned char* ringw = smem + sm.ring + warp * (RING > 0 ? RING : 1) * SLOT;
  auto issue = [&](int slot, const Cursor& c) {
    if (c.nt < 0) return;
    const int kt = kt_of(c);
    unsigned char* sl = ringw + slot * SLOT;
    cp_async16_hint(sl + lane * 16, p.codes + (static_cast<int64_t>(c.nt) * KT + kt) * 512 + lane * 16, pol);
    if (lane < 2 * SC) {
      const int gi0 = G == 32 ? 2 * kt : (G == 64 ? kt : kt >> 1);
      const uint16_t* src = (lane < SC ? p.scales : p.zeros) + (static_cast<int64_t>(c.nt) * KG + gi0) * 16 + (lane % SC) * 8;
      cp_async16_hint(sl + 512 + lane * 16, src, pol);
    }
  };
  auto load = [&](int d, const Cursor& c) {
    if (c.nt < 0) return;
    const int kt = kb + c.j;
    q[d] = ld_stream16(p.codes + (static_cast<int64_t>(c.nt) * KT + kt) * 512 + lane * 16, pol);
#pragma unroll
    for (int h = 0; h < SZN; ++h) {
      const int gi = G == 32 ? 2 * kt + h : (G == 64 ? kt : kt >> 1);
      sz[d][h] = ld_stream_u16(szlane + (static_cast<int64_t>(c.nt) * KG + gi) * 16, pol);
    }
  };

  Cursor ld;
  open(ld, 0);
  int nld = 0;  // positions loaded
  if constexpr (RING > 0) {
#pragma unroll
    for (int d = 0; d < RING; ++d) {  // one commit group a slot, empty past the stream's end
      if (nld < total) {
        issue(d, ld);
        step(ld);
        ++nld;
      }
      cp_async_commit_group();
    }
  } else {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d)
      if (nld < total) {
        load(d, ld);
        step(ld);
        ++nld;
      }
  }

  if (CB == 1 && tid < 16) nf4s[tid] = f_to_bf16_bits(d_nf4(tid));

  // ---- after this point x, out (accumulate) and everything the previous kernel writes may be read
  pdl_wait();
  if constexpr (RING == 0) pdl_launch_dependents();

  // ---- stage x~ = bf16(x * norm_w) as B fragments, half-tile and tile sums of x~, sum of x^2
  const bool norm = p.norm_f32 != nullptr || p.norm_bf16 != nullptr;
  if (cfg.upw > 1)  // units without tiles leave their partial sums at zero
    for (int i = tid; i < cfg.rt * cfg.ks * 128; i += blockDim.x) part[i] = 0.f;
  if constexpr (RING > 0) {
    // items (token m, round it) of this warp, round-major; round it covers i = warp * 32 + it * blockDim.x + lane
    // (i = (ktl * 2 + h) * 4 + tt as below). x of SB items is loaded before any is used: one L2 round trip a chunk.
    const int rounds = warp * 32 < KTb * 8 ? (KTb * 8 - warp * 32 + static_cast<int>(blockDim.x) - 1) / static_cast<int>(blockDim.x) : 0;
    const int nit = rounds * M;
    float ssm[8];
#pragma unroll
    for (int mm = 0; mm < 8; ++mm) ssm[mm] = 0.f;
    constexpr int SB = 2;  // items a round trip (4: 128 registers, 2 blocks an SM)
    for (int c0 = 0; c0 < nit; c0 += SB) {
      float2 v[SB][4];
      uint32_t nw[SB][4];  // bf16 norm weight pairs (an f32 norm is read when used)
#pragma unroll
      for (int b = 0; b < SB; ++b) {
        const int idx = c0 + b, it = idx / M, m = idx - it * M;
        const int i = warp * 32 + it * static_cast<int>(blockDim.x) + lane;
        const bool ok = idx < nit && i < KTb * 8;
        const int ktl = i >> 3, h = (i >> 2) & 1, tt = i & 3;
        const int k = (kb_blk + ktl) * 64 + 32 * h + 2 * tt;
        const float* xr = p.x + static_cast<int64_t>(m) * K + k;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          v[b][e] = ok ? __ldg(reinterpret_cast<const float2*>(xr + 8 * e)) : make_float2(0.f, 0.f);
          nw[b][e] = ok && p.norm_bf16 ? __ldg(reinterpret_cast<const unsigned int*>(p.norm_bf16 + k + 8 * e)) : 0u;
        }
      }
#pragma unroll
      for (int b = 0; b < SB; ++b) {
        const int idx = c0 + b;
        if (idx >= nit) break;  // warp-uniform
        const int it = idx / M, m = idx - it * M;
        const int i = warp * 32 + it * static_cast<int>(blockDim.x) + lane;
        const bool ok = i < KTb * 8;
        const int ktl = i >> 3, h = (i >> 2) & 1, tt = i & 3;
        const int k = (kb_blk + ktl) * 64 + 32 * h + 2 * tt;
        float ss = 0.f;
#pragma unroll
        for (int e = 0; e < 4; ++e) ss = fmaf(v[b][e].y, v[b][e].y, fmaf(v[b][e].x, v[b][e].x, ss));
#pragma unroll
        for (int mm = 0; mm < 8; ++mm)
          if (mm == m) ssm[mm] += ss;
        if (norm && ok) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int kk = k + 8 * e;
            const float w0 = p.norm_f32 ? p.norm_f32[kk] : bf16lo(nw[b][e]);
            const float w1 = p.norm_f32 ? p.norm_f32[kk + 1] : bf16hi(nw[b][e]);
            v[b][e].x *= w0;
            v[b][e].y *= w1;
          }
        }
        uint4 f;
        f.x = bf16x2(v[b][0].x, v[b][0].y);
        f.y = bf16x2(v[b][1].x, v[b][1].y);
        f.z = bf16x2(v[b][2].x, v[b][2].y);
        f.w = bf16x2(v[b][3].x, v[b][3].y);
        if (ok) xf[((ktl * 2 + h) * M + m) * 4 + tt] = f;
        float hs = (bf16lo(f.x) + bf16hi(f.x)) + (bf16lo(f.y) + bf16hi(f.y)) + ((bf16lo(f.z) + bf16hi(f.z)) + (bf16lo(f.w) + bf16hi(f.w)));
        hs += __shfl_xor_sync(0xffffffffu, hs, 1);
        hs += __shfl_xor_sync(0xffffffffu, hs, 2);
        const float other = __shfl_xor_sync(0xffffffffu, hs, 4);
        if (ok && tt == 0) {
          xh[(ktl * 2 + h) * 8 + m] = hs;
          if (h == 0) xt[ktl * 8 + m] = hs + other;
        }
      }
    }
#pragma unroll
    for (int mm = 0; mm < 8; ++mm) {
      if (mm >= M) break;
      const float ss = warp_sum(ssm[mm]);
      if (lane == 0) ssq[warp * 8 + mm] = ss;
    }
  } else
  for (int m = 0; m < M; ++m) {
    const float* xr = p.x + static_cast<int64_t>(m) * K;
    float ss = 0.f;
    // i = (ktl * 2 + h) * 4 + tt; whole warps iterate (the shuffles below need all 32 lanes; groups of 8 lanes,
    // one 64-k tile, are entirely inside or outside the range)
    for (int base = warp * 32; base < KTb * 8; base += blockDim.x) {
      const int i = base + lane;
      const bool ok = i < KTb * 8;
      const int ktl = i >> 3, h = (i >> 2) & 1, tt = i & 3;
      const int k = (kb_blk + ktl) * 64 + 32 * h + 2 * tt;
      float2 v[4];
#pragma unroll
      for (int e = 0; e < 4; ++e)  // k + 0, + 8, + 16, + 24
        v[e] = ok ? __ldg(reinterpret_cast<const float2*>(xr + k + 8 * e)) : make_float2(0.f, 0.f);
#pragma unroll
      for (int e = 0; e < 4; ++e) ss = fmaf(v[e].y, v[e].y, fmaf(v[e].x, v[e].x, ss));
      if (norm && ok) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int kk = k + 8 * e;
          const float w0 = p.norm_f32 ? p.norm_f32[kk] : bf16_bits_to_f(p.norm_bf16[kk]);
          const float w1 = p.norm_f32 ? p.norm_f32[kk + 1] : bf16_bits_to_f(p.norm_bf16[kk + 1]);
          v[e].x *= w0;
          v[e].y *= w1;
        }
      }
      uint4 f;
      f.x = bf16x2(v[0].x, v[0].y);  // j = 2h:   k0 + 2t, 2t+1
      f.y = bf16x2(v[1].x, v[1].y);  //           k0 + 2t+8, 2t+9
      f.z = bf16x2(v[2].x, v[2].y);  // j = 2h+1
      f.w = bf16x2(v[3].x, v[3].y);
      if (ok) xf[((ktl * 2 + h) * M + m) * 4 + tt] = f;
      // sum of the bf16 values (what the tensor cores multiply), fixed order
      float hs = (bf16lo(f.x) + bf16hi(f.x)) + (bf16lo(f.y) + bf16hi(f.y)) + ((bf16lo(f.z) + bf16hi(f.z)) + (bf16lo(f.w) + bf16hi(f.w)));
      hs += __shfl_xor_sync(0xffffffffu, hs, 1);
      hs += __shfl_xor_sync(0xffffffffu, hs, 2);
      const float other = __shfl_xor_sync(0xffffffffu, hs, 4);  // the tile's other half (i ^ 4 is lane ^ 4)
      if (ok && tt == 0) {
        xh[(ktl * 2 + h) * 8 + m] = hs;
        if (h == 0) xt[ktl * 8 + m] = hs + other;
      }
    }
    ss = warp_sum(ss);
    if (lane == 0) ssq[warp * 8 + m] = ss;
  }
  for (int i = tid; i < KTb * 8; i += blockDim.x) {  // tokens M..7: zero sums (their fragments are never read)
    const int ktl = i >> 3, m = i & 7;
    if (m >= M) {
      xt[ktl * 8 + m] = 0.f;
      xh[(ktl * 2) * 8 + m] = 0.f;
      xh[(ktl * 2 + 1) * 8 + m] = 0.f;
    }
  }
  __syncthreads();

  // ---- main loop
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  const bool has_tok = g < M;  // B columns past M are zero
  auto correct_v = [&](float (&d)[4], float s0, float s1, float c0, float c1, float2 xs) {
    acc[0] = fmaf(s0, fmaf(-c0, xs.x, d[0]), acc[0]);
    acc[1] = fmaf(s0, fmaf(-c0, xs.y, d[1]), acc[1]);
    acc[2] = fmaf(s1, fmaf(-c1, xs.x, d[2]), acc[2]);
    acc[3] = fmaf(s1, fmaf(-c1, xs.y, d[3]), acc[3]);
  };
  auto correct = [&](float (&d)[4], uint16_t v, float2 xs) {
    // v: this lane's s_g | s_g8 | z_g | z_g8 (by t); the quad shares them
    const float s0 = bf16_bits_to_f(__shfl_sync(0xffffffffu, v, 0, 4));
    const float s1 = bf16_bits_to_f(__shfl_sync(0xffffffffu, v, 1, 4));
    const float c0 = OFF + bf16_bits_to_f(__shfl_sync(0xffffffffu, v, 2, 4));
    const float c1 = OFF + bf16_bits_to_f(__shfl_sync(0xffffffffu, v, 3, 4));
    correct_v(d, s0, s1, c0, c1, xs);
  };
  // corr(h, d, xs): the scale/zero correction of group h of the tile (h = 1 only for G = 32)
  auto compute_with = [&](const uint4& qq, int kt, auto&& corr) {
    const int ktl = kt - kb_blk;
    uint4 b01 = make_uint4(0, 0, 0, 0), b23 = make_uint4(0, 0, 0, 0);
    if (has_tok) {
      b01 = xf[((ktl * 2) * M + g) * 4 + t];
      b23 = xf[((ktl * 2 + 1) * M + g) * 4 + t];
    }
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    uint32_t a[4];
    dequant_word<CB>(qq.x, nf4s, a);
    mma_16816(d, a[0], a[1], a[2], a[3], b01.x, b01.y);
    dequant_word<CB>(qq.y, nf4s, a);
    mma_16816(d, a[0], a[1], a[2], a[3], b01.z, b01.w);
    if constexpr (G == 32) {
      corr(0, d, *reinterpret_cast<const float2*>(&xh[(ktl * 2) * 8 + 2 * t]));
      d[0] = d[1] = d[2] = d[3] = 0.f;
    }
    dequant_word<CB>(qq.z, nf4s, a);
    mma_16816(d, a[0], a[1], a[2], a[3], b23.x, b23.y);
    dequant_word<CB>(qq.w, nf4s, a);
    mma_16816(d, a[0], a[1], a[2], a[3], b23.z, b23.w);
    if constexpr (G == 32)
      corr(1, d, *reinterpret_cast<const float2*>(&xh[(ktl * 2 + 1) * 8 + 2 * t]));
    else
      corr(0, d, *reinterpret_cast<const float2*>(&xt[ktl * 8 + 2 * t]));
  };
  auto compute = [&](const uint4& qq, const uint16_t (&v)[SZN], int kt) {
    compute_with(qq, kt, [&](int h, float (&d)[4], float2 xs) { correct(d, v[h], xs); });
  };

  Cursor cp;
  open(cp, 0);
  if constexpr (RING > 0) {
    for (int pos = 0; pos < total; ++pos) {
      const int slot = pos % RING;
      cp_async_wait_group<RING - 1>();  // the group of position pos (one group a position) has landed
      __syncwarp();                     // ... for every lane (the scales were copied by lanes 0..2 SC - 1)
      const unsigned char* sl = ringw + slot * SLOT;
      const uint4 cur = *reinterpret_cast<const uint4*>(sl + lane * 16);
      const uint16_t* szs = reinterpret_cast<const uint16_t*>(sl + 512);
      float sv[SZN][4];  // s_g, s_g8, OFF + z_g, OFF + z_g8 of each group of the tile
#pragma unroll
      for (int h = 0; h < SZN; ++h) {
        sv[h][0] = bf16_bits_to_f(szs[h * 16 + g]);
        sv[h][1] = bf16_bits_to_f(szs[h * 16 + g + 8]);
        sv[h][2] = OFF + bf16_bits_to_f(szs[SC * 8 + h * 16 + g]);
        sv[h][3] = OFF + bf16_bits_to_f(szs[SC * 8 + h * 16 + g + 8]);
      }
      __syncwarp();  // every lane holds its codes and scales: the slot may be refilled
      if (nld < total) {
        issue(slot, ld);
        step(ld);
        ++nld;
      }
      cp_async_commit_group();
      if constexpr (PROBE)
        acc[0] += __uint_as_float((cur.x ^ cur.y ^ cur.z ^ cur.w) & 0x00ffffffu) + sv[0][0];
      else
        compute_with(cur, kt_of(cp), [&](int h, float (&d)[4], float2 xs) { correct_v(d, sv[h][0], sv[h][1], sv[h][2], sv[h][3], xs); });
      const int ci = cp.i;
      step(cp);
      if (cfg.upw > 1 && cp.i != ci) {
        *reinterpret_cast<float4*>(&part[(warp + ci * W) * 128 + lane * 4]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
      }
    }
    cp_async_wait_group<0>();
  } else
  for (int pos = 0; pos < total; pos += DEPTH) {
#pragma unroll
    for (int d = 0; d < DEPTH; ++d) {
      if (pos + d >= total) break;
      const uint4 cur = q[d];
      uint16_t v[SZN];
#pragma unroll
      for (int h = 0; h < SZN; ++h) v[h] = sz[d][h];
      if (nld < total) {  // refill the slot: DEPTH tiles stay in flight
        load(d, ld);
        step(ld);
        ++nld;
      }
      compute(cur, v, kb + cp.j);
      const int ci = cp.i;
      step(cp);
      if (cfg.upw > 1 && cp.i != ci) {  // the unit ended: its partial sums to shared memory
        *reinterpret_cast<float4*>(&part[(warp + ci * W) * 128 + lane * 4]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
      }
    }
  }
  // With UPW == 1 a warp has one unit: its sums go to `part` (which aliases xf) after every warp is done with x.
  __syncthreads();
  if (cfg.upw == 1)  // unit u = warp = r * KS + s
    *reinterpret_cast<float4*>(&part[warp * 128 + lane * 4]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  __syncthreads();

  // ---- block sums (fixed order over the K slices), then the cluster's (fixed order over ranks)
  for (int o = tid; o < cfg.rt * 128; o += blockDim.x) {
    const int r = o >> 7, idx = o & 127;
    float v = 0.f;
    for (int s = 0; s < cfg.ks; ++s) v += part[(r * cfg.ks + s) * 128 + idx];
    bsum[o] = v;
  }
  if (tid < 8) {
    float v = 0.f;
    for (int w = 0; w < W; ++w) v += ssq[w * 8 + tid];
    ssq[W * 8 + tid] = v;
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  if (cfg.cl > 1) cluster.sync(); else __syncthreads();
#else
  __syncthreads();
#endif
  auto remote = [&](float* local, int rank) -> const float* {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (cfg.cl > 1) return cluster.map_shared_rank(local, rank);
#endif
    return local;
  };

  const int FI = (swiglu ? cfg.rt / 2 : cfg.rt) * 128, Nout = swiglu ? p.N / 2 : p.N;
  for (int o = tid; o < FI; o += blockDim.x) {
    if (o % cfg.cl != crank) continue;
    const int r = o >> 7, idx = o & 127;
    const int ln = idx >> 2, e = idx & 3;                       // lane and accumulator of the fragment
    const int row = (ln >> 2) + ((e & 2) ? 8 : 0), m = 2 * (ln & 3) + (e & 1);
    if (m >= M) continue;
    const int nt = tile_of(r);
    if (nt < 0) continue;
    float rinv = 1.f;  // the token's RMSNorm scale: sum of x^2 over the cluster's blocks, fixed order
    if (norm) {
      float v = 0.f;
      for (int c = 0; c < cfg.cl; ++c) v += remote(ssq, c)[W * 8 + m];
      rinv = 1.f / sqrtf(v / static_cast<float>(K) + p.eps);
    }
    float y0 = 0.f, y1 = 0.f;
    for (int c = 0; c < cfg.cl; ++c) y0 += remote(bsum, c)[o];
    const int n0 = nt * 16 + row;
    y0 = y0 * rinv + (p.bias_f32 ? p.bias_f32[n0] : (p.bias_bf16 ? bf16_bits_to_f(p.bias_bf16[n0]) : 0.f));
    if (swiglu) {
      const int ou = (r + cfg.rt / 2) * 128 + idx, n1 = n0 + p.N / 2;
      for (int c = 0; c < cfg.cl; ++c) y1 += remote(bsum, c)[ou];
      y1 = y1 * rinv + (p.bias_f32 ? p.bias_f32[n1] : (p.bias_bf16 ? bf16_bits_to_f(p.bias_bf16[n1]) : 0.f));
      p.out[static_cast<int64_t>(m) * Nout + n0] = y0 / (1.f + expf(-y0)) * y1;
    } else if (p.mode == kAccumulate) {
      float* o_ = p.out + static_cast<int64_t>(m) * Nout + n0;
      *o_ = *o_ + y0;
    } else {
      p.out[static_cast<int64_t>(m) * Nout + n0] = y0;
    }
  }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (cfg.cl > 1) cluster.sync();  // the other blocks' shared memory was read above
#endif
}

}  // namespace gemv
}  // namespace cuda
}  // namespace glm4
