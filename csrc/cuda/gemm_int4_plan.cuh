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

struct Sm90CfgInfo {
  const char* name;
  int rows, tokens;
  // Time of one k-step (64 k) of one tile relative to W5's, from whole-round figures (H200, run 1, gate_up at
  // M = 2048: 13 rounds of r128 t256 in 642.7 us, 26 of r128 t128 in 999.7 us, 13 of r256 t128 in 788.2 us).
  // 0: not measured so (not a candidate of the M > 64 model).
  double kstep;
};
constexpr Sm90CfgInfo kSm90Cfgs[] = {
    {"wgmma r256 t128", W0::BR, W0::TT, 1.23}, {"wgmma r256 t64", W1::BR, W1::TT, 0.0},
    {"wgmma r256 t32", W2::BR, W2::TT, 0.0},   {"wgmma r256 t16", W3::BR, W3::TT, 0.0},
    {"wgmma r128 t128", W4::BR, W4::TT, 0.78}, {"wgmma r128 t256", W5::BR, W5::TT, 1.0},
    {"wgmma r128 t32", W6::BR, W6::TT, 0.0},   {"wgmma r128 t16", W7::BR, W7::TT, 0.0}};
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

// The choice (measurements: H200, scripts/gpu/gemm.sh run 1, 2026-12-02; bench/NOTES.md):
//   M <= 64: the run's winners with the uniform K split it measured: r128 t16/t32 for N <= 8192 (qkv 12.9/14.2 us,
//     o 12.0/13.3 us), r256 t16/t32 above (gate_up 43.5/50.6 us, output 186.6/207.0 us); M 33..64: r128 t128 for
//     N*K <= 4608*4096 (qkv 19.4, o 17.9 us), r256 t64 above (gate_up 64.6, down 33.6, output 246.9 us).
//   M > 64: r128 t256 or r128 t128 (relative k-step cost 1.0 / 0.78), each with the whole-tiles-then-K-pieces
//     schedule of choose_sched (a K piece costs 8 k-steps more: run 1's uniform splits at M = 512 imply ~6-8 us a
//     piece); the cheaper by the model. PREDICTION until the second run (bench/NOTES.md, "second version"): qkv at
//     M = 2048 from 145 us (uniform r128 t256; 186 us with the old plan's r256 t128) to 110-118 us.
inline Sm90Plan plan_sm90(int64_t m, int64_t n, int64_t k, int sms) {
  if (m <= 16) return uniform_plan(n <= 8192 ? 7 : 3, m, n, k, sms);
  if (m <= 32) return uniform_plan(n <= 8192 ? 6 : 2, m, n, k, sms);
  if (m <= 64) return uniform_plan(n * k <= int64_t{4608} * 4096 ? 4 : 1, m, n, k, sms);
  Sm90Plan best;
  double best_cost = 1e300;
  for (int cfg : {5, 4}) {
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
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace gemmk
}  // namespace glm4
