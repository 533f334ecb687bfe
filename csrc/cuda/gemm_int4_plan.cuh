// The wgmma (sm_90a) INT4 GEMM configurations that are instantiated, and the choice among them per shape: shared by
// the addon (gemm_int4.cu: linear_plan) and the kernel harness (bench/kernels/gemm_int4_bench.cu: variants
// "plan_new" and "plan_old"), so that the harness validates and times exactly what the addon runs.
// Dependency-free like the kernels (CUDA headers only).
#pragma once
#include <algorithm>
#include <cstdint>

#include "gemm_int4_sm90.cuh"

namespace glm4 {
namespace gemmk {

// Sm90Cfg<WR, TT, STAGES>: block = 2 * WR * 64 weight rows x TT tokens; stages fill ~200 KB of shared memory.
using W0 = Sm90Cfg<2, 128, 8>;   // r256 t128: the first version's large-M tile
using W1 = Sm90Cfg<2, 64, 12>;   // r256 t64
using W2 = Sm90Cfg<2, 32, 14>;   // r256 t32
using W3 = Sm90Cfg<2, 16, 16>;   // r256 t16
using W4 = Sm90Cfg<1, 128, 10>;  // r128 t128
using W5 = Sm90Cfg<1, 256, 5>;   // r128 t256: the fastest tile at M >= 512 on every shape (H200, run 1)
using W6 = Sm90Cfg<1, 32, 16>;   // r128 t32
using W7 = Sm90Cfg<1, 16, 16>;   // r128 t16
using W8 = Sm90Cfg<1, 192, 7>;            // r128 t192: qkv at M = 512 (108 tiles: one round)
using W9 = Sm90Cfg<1, 128, 10, true, 8>;  // r128 t128 with 7 wgmma groups in flight (WIN 8): M 65..~256
// smallm candidates for M = 17..64 (bench/NOTES.md "smallm"): more independent wgmma chains an SM.
//   Sm90Cfg<WR, TT, STAGES, ROLL, WIN, NC (consumer warpgroups), MINB (blocks an SM), ACCS (accumulator sets)>
using W10 = Sm90Cfg<1, 64, 8, true, 4, 2, 2, 1>;   // r128 t64, 2 blocks an SM (8 stages of 13 KB each)
using W11 = Sm90Cfg<1, 32, 12, true, 4, 2, 2, 1>;  // r128 t32, 2 blocks an SM (12 stages of 9 KB)
using W12 = Sm90Cfg<2, 64, 12, true, 4, 2, 1, 2>;  // r256 t64, 2 accumulator sets
using W13 = Sm90Cfg<2, 32, 14, true, 4, 2, 1, 2>;  // r256 t32, 2 accumulator sets
using W14 = Sm90Cfg<1, 32, 16, true, 4, 2, 1, 2>;  // r128 t32, 2 accumulator sets
using W15 = Sm90Cfg<1, 64, 11, true, 4, 4, 1, 1>;  // r256 t64 as 4 consumer warpgroups of 64 rows (640 threads)
using W16 = Sm90Cfg<1, 32, 15, true, 4, 4, 1, 1>;  // r256 t32 as 4 consumer warpgroups
using W17 = Sm90Cfg<1, 32, 15, true, 4, 4, 1, 2>;  // r256 t32, 4 consumer warpgroups, 2 accumulator sets (t64: ptxas
                                                   // serializes the wgmmas at 104 registers, C7512)
using W18 = Sm90Cfg<1, 32, 12, true, 4, 2, 2, 2>;  // r128 t32, 2 blocks an SM, 2 accumulator sets
using W19 = Sm90Cfg<2, 64, 8>;                     // r256 t64 with swapped operands (gemm_int4_sm90_swap_kernel)
using W20 = Sm90Cfg<2, 64, 7>;                     // the same, FULL: one m64n256k16 a k16 (3 B buffers: 7 stages)

struct Sm90CfgInfo {
  const char* name;
  int rows, tokens;
  // Time of one k-step (64 k) of one tile relative to W5's, from whole-round figures (H200, run 1, gate_up at
  // M = 2048: 13 rounds of r128 t256 in 642.7 us, 26 of r128 t128 in 999.7 us, 13 of r256 t128 in 788.2 us).
  // 0: not measured so (not a candidate of the M > 64 model).
  double kstep;
  int ctas = 1;  // persistent blocks an SM
};
constexpr Sm90CfgInfo kSm90Cfgs[] = {
    {"wgmma r256 t128", W0::BR, W0::TT, 1.23}, {"wgmma r256 t64", W1::BR, W1::TT, 0.0},
    {"wgmma r256 t32", W2::BR, W2::TT, 0.0},   {"wgmma r256 t16", W3::BR, W3::TT, 0.0},
    {"wgmma r128 t128", W4::BR, W4::TT, 0.78}, {"wgmma r128 t256", W5::BR, W5::TT, 1.0},
    {"wgmma r128 t32", W6::BR, W6::TT, 0.0},   {"wgmma r128 t16", W7::BR, W7::TT, 0.0},
    // run 2 (gate_up at M = 2048: 18 rounds of r128 t192 in 735.8 us vs 13 of r128 t256 in 640.0 us)
    {"wgmma r128 t192", W8::BR, W8::TT, 0.83},
    {"wgmma r128 t128 w8", W9::BR, W9::TT, 0.78},
    {"wgmma r128 t64 2cta", W10::BR, W10::TT, 0.0, 2},
    {"wgmma r128 t32 2cta", W11::BR, W11::TT, 0.0, 2},
    {"wgmma r256 t64 acc2", W12::BR, W12::TT, 0.0},
    {"wgmma r256 t32 acc2", W13::BR, W13::TT, 0.0},
    {"wgmma r128 t32 acc2", W14::BR, W14::TT, 0.0},
    {"wgmma r256 t64 4wg", W15::BR, W15::TT, 0.0},
    {"wgmma r256 t32 4wg", W16::BR, W16::TT, 0.0},
    {"wgmma r256 t32 4wg acc2", W17::BR, W17::TT, 0.0},
    {"wgmma r128 t32 2cta acc2", W18::BR, W18::TT, 0.0, 2},
    {"wgmma swap r256 t64", W19::BR, W19::TT, 0.0},
    {"wgmma swap256 r256 t64", W20::BR, W20::TT, 0.0},
    {"wgmma swapdq r256 t64", W20::BR, W20::TT, 0.0}};  // W20, FULL 2: one warpgroup dequantizes, one issues
constexpr int kSm90CfgCount = static_cast<int>(sizeof(kSm90Cfgs) / sizeof(kSm90Cfgs[0]));

inline int64_t plan_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The first version's K split (uniform: every tile in the same number of pieces): the smallest count whose rounds
// are >= 90 % full, each split keeping >= 4 k-steps of 64; otherwise the fullest found.
inline int choose_splits_uniform(int64_t tiles, int64_t ktiles, int64_t slots) {
  if (tiles >= slots) return 1;
  int best = 1;
  double best_eff = 0.0;
  const int64_t maxs = std::max<int64_t>(1, std::min<int64_t>(16, ktiles / 4));
  for (int s = 1; s <= maxs; ++s) {
    const int64_t work = tiles * s;
    const double eff = static_cast<double>(work) / (static_cast<double>(plan_cdiv(work, slots)) * slots);
    if (work >= slots && eff >= 0.9) return s;
    if (eff > best_eff + 1e-9) {
      best_eff = eff;
      best = s;
    }
  }
  return best;
}

struct Sm90Plan {
  int cfg = 0;          // index into kSm90Cfgs
  Sched sched{0, 0, 1};
  int grid = 0;         // persistent blocks
};

inline int sm90_tiles_of(int cfg, int64_t m, int64_t n) {
  return static_cast<int>(plan_cdiv(m, kSm90Cfgs[cfg].tokens) * plan_cdiv(n, kSm90Cfgs[cfg].rows));
}
inline Sm90Plan uniform_plan(int cfg, int64_t m, int64_t n, int64_t k, int sms) {
  Sm90Plan p;
  p.cfg = cfg;
  const int tiles = sm90_tiles_of(cfg, m, n);
  const int s = choose_splits_uniform(tiles, k / 64, sms);
  p.sched = Sched{tiles, s > 1 ? 0 : tiles, s};
  p.grid = static_cast<int>(std::min<int64_t>(sched_units(p.sched), sms));
  return p;
}

// The first version's choice (GLM4_INT4_GEMM_PLAN=old): one token tile of 16/32/64 when M <= 64, r256 t128 above
// (r128 t128 when that fills the last round better), uniform K split.
inline Sm90Plan plan_sm90_old(int64_t m, int64_t n, int64_t k, int sms) {
  int cfg;
  if (m <= 16)
    cfg = 3;
  else if (m <= 32)
    cfg = 2;
  else if (m <= 64)
    cfg = 1;
  else {
    auto fill = [&](int c) {
      const int64_t t = sm90_tiles_of(c, m, n);
      return static_cast<double>(t) / (plan_cdiv(t, sms) * sms);
    };
    cfg = fill(4) > fill(0) + 0.15 ? 4 : 0;
  }
  return uniform_plan(cfg, m, n, k, sms);
}

// The choice (measurements: H200, scripts/gpu/gemm.sh run 1 and gemm2.sh run 2, 2026-12-03; bench/NOTES.md):
//   every M: choose_sched (whole tiles for the full rounds, K pieces of >= 8 k-steps' overhead for the rest). Run 2
//     at M = 64 with r256 t64: qkv 16.1 us vs 19.6 (uniform split of run 1's plan), o 15.8 vs 19.8, gate_up 52.2 vs
//     66.7, down 31.4 vs 41.2, output 241.9 vs 262.5: fewer, longer pieces win wherever measured.
//   M <= 32: run 1's tiles (r128 t16/t32 for N <= 8192, r256 above); M 33..64: r256 t64 (run 2's fastest at M = 64
//     on all five shapes).
//   M > 64: r128 t256, r128 t192 or r128 t128 (WIN 8), relative k-step cost 1.0 / 0.83 / 0.78, the cheapest by
//     the model. Run 2 (us, new plan vs the first version's, cuBLAS BF16): qkv M=2048 125.8 vs 186.9 (99.8), o 98.0
//     vs 123.6 (88.2), gate_up 645 vs 935 (579), down 300 vs 411 (285), output 3890 vs 4882 (3652); M=512 qkv 47.1
//     (r128 t192: 40.8), o 34.1, gate_up 174.7, down 83.3, output 880; M=128 qkv 18.6 (WIN 8: 18.2), o 18.0 (16.7),
//     gate_up 70.5 (68.2), down 35.5 (32.6), output 318.
// Config cfg with choose_sched over its persistent slots (blocks an SM x SMs).
inline Sm90Plan plan_with_sched(int cfg, int64_t m, int64_t n, int64_t k, int sms) {
  Sm90Plan p;
  p.cfg = cfg;
  const int slots = sms * kSm90Cfgs[cfg].ctas;
  p.sched = choose_sched(sm90_tiles_of(cfg, m, n), static_cast<int>(k / 64), slots, 1.0, 8.0);
  p.grid = static_cast<int>(std::min<int64_t>(sched_units(p.sched), slots));
  return p;
}

// The third version's choice at M <= 64 (main before smallm; GLM4_INT4_GEMM_PLAN=v3): run 1's token tiles, one
// block an SM, choose_sched.
inline int plan_small_v3(int64_t m, int64_t n) {
  if (m <= 16) return n <= 8192 ? 7 : 3;
  if (m <= 32) return n <= 8192 ? 6 : 2;
  return 1;
}
// smallm's choice at M = 17..64 (bench/NOTES.md "smallm"; M <= 16 keeps v3's): more independent wgmma chains an SM,
// as 2 blocks of r128 (2 x 2 consumer warpgroups) on the small matrices and 4 consumer warpgroups of 64 rows in one
// r256 block on the wide ones. H200 run14 (scripts/gpu/smallm.sh, 2026-12-03), us, v3's plan -> this one (best of
// the 16 validated variants in brackets where another won):
//   M = 32: qkv 13.6 -> 12.1 (2cta r128 t32), o 11.8 -> 11.3 (same), gate_up 43.3 -> 41.4 (4wg r256 t32),
//           down 25.3 -> 22.4 (same), output 195.6 -> 182.3 (same)
//   M = 48: qkv 15.1 -> 13.8 (2cta r128 t64), o 13.9 -> 13.0 (same), down 27.2 -> 25.6 (same; 4wg 25.7),
//           gate_up 51.3 -> 46.9 (4wg r256 t64), output 249.8 -> 207.5 (same)
//   M = 64: qkv 16.1 -> 14.4, o 14.8 -> 13.9, down 27.7 -> 26.0 (2cta r128 t64); gate_up 51.4 -> 47.3, output 243.6 ->
//           212.4 (4wg r256 t64)
//   the decode step graph (context 128) with 4wg r256 t64 / 2cta r128 t64 forced at every shape: B = 64 5.514 -> 5.274
//   / 5.281 ms; the 2 accumulator sets (a2_*), WIN 8 (w8_*) and the swapped-operand kernel (swap, 68-70 us on
//   gate_up) lost everywhere. Run16 (same script, this plan): <= v3 on every shape and M (M = 64: qkv 14.4 vs 16.0,
//   o 13.8 vs 14.9, gate_up 47.3 vs 51.5, down 26.5 vs 27.9, output 233 vs 253); look-ahead dequantization within 2 %,
//   swap256 / swapdq (cfgs 20, 21) 74 / 89 us on gate_up: forced-only (GLM4_INT4_GEMM_SMALL).
inline int plan_small(int64_t m, int64_t n, int64_t k) {
  if (m <= 16) return plan_small_v3(m, n);
  if (m <= 32) return n <= 8192 && k <= 4096 ? 11 : 16;
  return n <= 8192 ? 10 : 15;
}

// v3: the third version's M <= 64 choice (above 64 the same as plan_sm90). force_small in [0, kSm90CfgCount): that
// configuration for M = 17..64 (GLM4_INT4_GEMM_SMALL: A/B of the candidates in the engine without a rebuild).
inline Sm90Plan plan_sm90(int64_t m, int64_t n, int64_t k, int sms, bool v3 = false, int force_small = -1) {
  if (m > 16 && m <= 64 && force_small >= 0 && force_small < kSm90CfgCount) return plan_with_sched(force_small, m, n, k, sms);
  if (m <= 64) return plan_with_sched(v3 ? plan_small_v3(m, n) : plan_small(m, n, k), m, n, k, sms);
  Sm90Plan best;
  double best_cost = 1e300;
  for (int cfg : {5, 8, 9}) {
    const int tiles = sm90_tiles_of(cfg, m, n);
    double cost = 0.0;
    const Sched s = choose_sched(tiles, static_cast<int>(k / 64), sms, 1.0, 8.0, &cost);
    cost *= kSm90Cfgs[cfg].kstep;
    if (cost < best_cost) {
      best_cost = cost;
      best.cfg = cfg;
      best.sched = s;
      best.grid = static_cast<int>(std::min<int64_t>(sched_units(s), sms));
    }
  }
  return best;
}

// Launches plan p (zeroing what its K pieces add into first).
inline cudaError_t launch_plan_sm90(cudaStream_t st, const __nv_bfloat16* x, const L1Weight& w, const Out& o,
                                    const Sm90Plan& p) {
  switch (p.cfg) {
    case 0: return launch_gemm_int4_sm90_sched<W0>(st, x, w, o, p.sched, p.grid);
    case 1: return launch_gemm_int4_sm90_sched<W1>(st, x, w, o, p.sched, p.grid);
    case 2: return launch_gemm_int4_sm90_sched<W2>(st, x, w, o, p.sched, p.grid);
    case 3: return launch_gemm_int4_sm90_sched<W3>(st, x, w, o, p.sched, p.grid);
    case 4: return launch_gemm_int4_sm90_sched<W4>(st, x, w, o, p.sched, p.grid);
    case 5: return launch_gemm_int4_sm90_sched<W5>(st, x, w, o, p.sched, p.grid);
    case 6: return launch_gemm_int4_sm90_sched<W6>(st, x, w, o, p.sched, p.grid);
    case 7: return launch_gemm_int4_sm90_sched<W7>(st, x, w, o, p.sched, p.grid);
    case 8: return launch_gemm_int4_sm90_sched<W8>(st, x, w, o, p.sched, p.grid);
    case 9: return launch_gemm_int4_sm90_sched<W9>(st, x, w, o, p.sched, p.grid);
    case 10: return launch_gemm_int4_sm90_sched<W10>(st, x, w, o, p.sched, p.grid);
    case 11: return launch_gemm_int4_sm90_sched<W11>(st, x, w, o, p.sched, p.grid);
    case 12: return launch_gemm_int4_sm90_sched<W12>(st, x, w, o, p.sched, p.grid);
    case 13: return launch_gemm_int4_sm90_sched<W13>(st, x, w, o, p.sched, p.grid);
    case 14: return launch_gemm_int4_sm90_sched<W14>(st, x, w, o, p.sched, p.grid);
    case 15: return launch_gemm_int4_sm90_sched<W15>(st, x, w, o, p.sched, p.grid);
    case 16: return launch_gemm_int4_sm90_sched<W16>(st, x, w, o, p.sched, p.grid);
    case 17: return launch_gemm_int4_sm90_sched<W17>(st, x, w, o, p.sched, p.grid);
    case 18: return launch_gemm_int4_sm90_sched<W18>(st, x, w, o, p.sched, p.grid);
    case 19: return launch_gemm_int4_sm90_swap<W19>(st, x, w, o, p.sched, p.grid);
    case 20: return launch_gemm_int4_sm90_swap<W20, 1>(st, x, w, o, p.sched, p.grid);
    case 21: return launch_gemm_int4_sm90_swap<W20, 2>(st, x, w, o, p.sched, p.grid);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gemmk
}  // namespace glm4
