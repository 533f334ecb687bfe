// INT4 x BF16 tensor-core GEMMs over the kernel layout 1 (core/int4_layout.h), and the one function that picks
// the INT4 linear's kernel per shape (linear_plan). The kernels live in dependency-free headers shared with the
// standalone harness (bench/kernels/gemm_int4_bench.cu, run by scripts/gpu/gemm.sh):
//   gemm_int4_sm90.cuh  sm_90a: wgmma, A = dequantized weights from registers, B = activations by TMA, persistent
//   gemm_int4_mma.cuh   sm_80+: mma.sync m16n8k16, cp.async multistage pipeline
// Activations: the kernels read x as bf16 [M, K] (TMA copies bytes; the tensor cores take bf16). matmul_int4 with
// an f32 x on this path converts it first (ops::matmul_int4 records a convert into a bf16 buffer it owns), so
// producers that can write bf16 directly save that pass (bench/NOTES.md: the conversion's cost per shape).
#include "gemm_int4.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "core/backend_cuda.h"
#include "gemm_int4_mma.cuh"
#include "gemm_int4_plan.cuh"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

// The configurations instantiated, in one place: wgmma (sm_90a) in gemm_int4_plan.cuh (W0..W7, shared with the
// harness); mma.sync below.
//   mma.sync: MmaCfg<WW, WT, MW, NT, STAGES, min blocks an SM>: block = WW*MW*16 rows x WT*NT*8 tokens.
using M0 = gemmk::MmaCfg<4, 2, 2, 8, 4, 2>;  // large M: 128 x 128, 2 blocks an SM
using M1 = gemmk::MmaCfg<4, 1, 2, 8, 6, 1>;  // 128 x 64
using M2 = gemmk::MmaCfg<4, 1, 2, 4, 6, 1>;  // 128 x 32
using M3 = gemmk::MmaCfg<4, 1, 2, 2, 8, 1>;  // 128 x 16

struct CfgInfo {
  const char* name;
  int rows, tokens;
};
constexpr CfgInfo kMma[] = {{"mma r128 t128", M0::BR, M0::BT}, {"mma r128 t64", M1::BR, M1::BT},
                            {"mma r128 t32", M2::BR, M2::BT}, {"mma r128 t16", M3::BR, M3::BT}};

struct Dev {
  int sms = 0, major = 0, minor = 0;
  bool sm90a = false;  // an H100/H200 and this build carries sm_90a code
};
Dev device_info() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  Dev d;
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.minor, cudaDevAttrComputeCapabilityMinor, dev));
  d.sm90a = d.major == 9 && d.minor == 0 && cudart::architectures().find("90a") != std::string::npos;
  return d;
}

int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::string LinearPlan::label() const {
  switch (kind) {
    case LinearKind::Gemv: return "gemv";
    case LinearKind::Canonical: return "gemm_tc (layout 0)";
    case LinearKind::Wgmma:
      return dp > 0 && dp < tiles && splits > 1 ? str(gemmk::kSm90Cfgs[cfg].name, " whole=", dp, "/", tiles, " splits=", splits)
                                                : str(gemmk::kSm90Cfgs[cfg].name, " splits=", splits);
    case LinearKind::Mma: return str(kMma[cfg].name, " splits=", splits);
  }
  return "?";
}

// The choice:
//   M <= 8: the GEMV (bench/NOTES.md: at M = 8 it beat one 128-row tensor-core tile 2-3x on the H100).
//   layout 0: the canonical gemm_tc path (the only tensor-core kernel that reads layout 0).
//   sm_90a, layout 1: gemmk::plan_sm90 (gemm_int4_plan.cuh: the H200 measurements behind it are written there; the
//     harness validates and times the same function as its variant "plan_new").
//   other archs, layout 1: mma.sync 128 x 16/32/64 for M <= 64, 128 x 128 above (not measured yet).
// GLM4_INT4_GEMM=mma forces the mma.sync kernels on sm_90a too (a way around a wgmma problem without a rebuild);
// GLM4_INT4_GEMM_PLAN=old takes the first version's wgmma choice (gemmk::plan_sm90_old: r256 t128 tiles above
// M = 64, uniform K split), the way back if the new plan measures worse; GLM4_INT4_GEMM_PLAN=v3 keeps today's plan
// above 64 rows and the third version's at M <= 64 (before smallm's configurations); GLM4_INT4_GEMM_SMALL=<i> runs
// configuration i of gemmk::kSm90Cfgs at M = 17..64 (smallm's candidates: 10..19). All read once a process.
static bool env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e != nullptr && std::string(e) == value;
}
static bool force_mma() {
  static const bool v = env_is("GLM4_INT4_GEMM", "mma");
  return v;
}
static bool old_plan() {
  static const bool v = env_is("GLM4_INT4_GEMM_PLAN", "old");
  return v;
}
// GLM4_DETERMINISTIC=1: whole tiles only (no K pieces meeting in arrival order through red.global), so that two runs
// of the same inputs give the same bits (the GEMV, attention and sampling kernels are deterministic already). Read
// at each plan (an op recorded or a step captured after setting it takes it). Costs the K pieces' balance: small M
// and the last round of large M.
static bool deterministic() { return env_is("GLM4_DETERMINISTIC", "1"); }
static bool v3_plan() {  // the third version's M <= 64 choice (before smallm; gemmk::plan_small_v3)
  static const bool v = env_is("GLM4_INT4_GEMM_PLAN", "v3");
  return v;
}
static int forced_small_cfg() {  // GLM4_INT4_GEMM_SMALL=<index into gemmk::kSm90Cfgs>: that config at M = 17..64
  static const int v = [] {
    const char* e = std::getenv("GLM4_INT4_GEMM_SMALL");
    if (e == nullptr || *e == 0) return -1;
    char* end = nullptr;
    const long i = std::strtol(e, &end, 10);
    return end != nullptr && *end == 0 && i >= 0 && i < gemmk::kSm90CfgCount ? static_cast<int>(i) : -1;
  }();
  return v;
}

// The cheapest whole-tile plan (no K pieces): the configuration p chose at M <= 64; above, r128 t256 / t192 /
// t128 w8 by the same k-step costs as plan_sm90, in whole rounds (qkv at M = 2048: r128 t192, 396 tiles = 3 rounds).
static gemmk::Sm90Plan whole_tiles(const gemmk::Sm90Plan& p, int64_t m, int64_t n, int64_t k, int sms) {
  if (p.sched.splits <= 1 || p.sched.dp >= p.sched.tiles) return p;
  gemmk::Sm90Plan best;
  double best_cost = 1e300;
  auto consider = [&](int cfg) {
    const int tiles = gemmk::sm90_tiles_of(cfg, m, n);
    const double ks = gemmk::kSm90Cfgs[cfg].kstep > 0 ? gemmk::kSm90Cfgs[cfg].kstep : 1.0;
    const double cost = static_cast<double>(gemmk::plan_cdiv(tiles, sms)) * static_cast<double>(k / 64 + 1) * ks;
    if (cost < best_cost) {
      best_cost = cost;
      best.cfg = cfg;
      best.sched = gemmk::Sched{tiles, tiles, 1};
      best.grid = std::min(tiles, sms);
    }
  };
  if (m > 64)
    for (int cfg : {5, 8, 9}) consider(cfg);
  else
    consider(p.cfg);
  return best;
}

LinearPlan linear_plan(int64_t m, int64_t n, int64_t k, int group, int layout, bool whole) {
  LinearPlan p;
  if (m <= kInt4GemvMaxM) return p;
  if (layout != 1) {
    p.kind = LinearKind::Canonical;
    return p;
  }
  const Dev d = device_info();
  const int64_t ktiles = k / 64;
  if (d.sm90a && !force_mma()) {
    p.kind = LinearKind::Wgmma;
    GLM4_CHECK(m < (int64_t{1} << 30) && n < (int64_t{1} << 30) && k < (int64_t{1} << 30), GLM4_E_UNSUPPORTED,
               "matmul_int4: [", m, ",", k, "] x [", n, ",", k, "] exceeds the GEMM's 32-bit tile counts");
    gemmk::Sm90Plan sp = old_plan() ? gemmk::plan_sm90_old(m, n, k, d.sms)
                                    : gemmk::plan_sm90(m, n, k, d.sms, v3_plan(), forced_small_cfg());
    if (whole || deterministic()) sp = whole_tiles(sp, m, n, k, d.sms);
    p.cfg = sp.cfg;
    p.splits = sp.sched.splits;
    p.tiles = sp.sched.tiles;
    p.dp = sp.sched.dp;
    p.grid = sp.grid;
    return p;
  }
  p.kind = LinearKind::Mma;
  p.cfg = m <= 16 ? 3 : m <= 32 ? 2 : m <= 64 ? 1 : 0;
  const CfgInfo& ci = kMma[p.cfg];
  const int64_t tiles = cdiv(m, ci.tokens) * cdiv(n, ci.rows);
  p.splits = whole || deterministic() ? 1 : gemmk::choose_splits_uniform(tiles, ktiles, 2 * static_cast<int64_t>(d.sms));
  p.grid = static_cast<int>(tiles * p.splits);
  return p;
}

void gemm_int4_layout1(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias,
                       const LinearPlan& plan, bool accumulate) {
  const int64_t m = x.dim(0);
  GLM4_CHECK(x.dtype() == DType::BF16, GLM4_E_DTYPE, "matmul_int4 (tensor cores): x must be bf16 here, got ", x.describe());
  GLM4_CHECK(w.n % 16 == 0 && w.k % 64 == 0, GLM4_E_SHAPE, "matmul_int4: layout 1 needs N % 16 == 0 and K % 64 == 0, got [",
             w.n, ",", w.k, "]");
  GLM4_CHECK(m < (int64_t{1} << 31) && w.n < (int64_t{1} << 31) && w.k < (int64_t{1} << 31), GLM4_E_UNSUPPORTED,
             "matmul_int4: [", m, ",", w.k, "] x [", w.n, ",", w.k, "] exceeds 32-bit dimensions");
  GLM4_CHECK(aligned16(x.raw()) && aligned16(w.codes.raw()) && aligned16(w.scales.raw()) && aligned16(w.zeros.raw()),
             GLM4_E_INVALID_ARG, "matmul_int4: x, codes, scales and zeros must be 16-byte aligned (x ", x.describe(), ")");
  if (m == 0 || w.n == 0) return;
  gemmk::L1Weight lw{w.codes.data<uint8_t>(), w.scales.data<uint16_t>(), w.zeros.data<uint16_t>(), static_cast<int>(w.n),
                     static_cast<int>(w.k), w.group, w.codebook};
  const bool obf = out.dtype() == DType::BF16;
  GLM4_CHECK(!(obf && accumulate), GLM4_E_DTYPE, "matmul_int4 (tensor cores): accumulate needs an f32 out, got ", out.describe());
  GLM4_CHECK(!obf || plan.splits <= 1 || (plan.kind == LinearKind::Wgmma && plan.dp >= plan.tiles), GLM4_E_INVALID_ARG,
             "matmul_int4 (tensor cores): a bf16 out needs a whole-tile plan (linear_plan with whole), got ", plan.label());
  gemmk::Out o{obf ? nullptr : out.data<float>(), nullptr, nullptr, static_cast<int>(m), static_cast<int>(w.n)};
  if (obf) o.ybf = out.data<uint16_t>();
  o.acc = accumulate;
  if (bias.defined()) {
    if (bias.dtype() == DType::F32)
      o.bias_f32 = bias.data<float>();
    else
      o.bias_bf16 = bias.data<uint16_t>();
  }
  cudaStream_t st = stream_of(c);
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x.raw());
  cudaError_t e = cudaSuccess;
  LinearKind kind = plan.kind;
  if (kind == LinearKind::Wgmma) {
    gemmk::Sm90Plan sp;
    sp.cfg = plan.cfg;
    sp.sched = gemmk::Sched{plan.tiles, plan.dp, plan.splits};
    sp.grid = plan.grid;
    e = gemmk::launch_plan_sm90(st, xb, lw, o, sp);  // zeroes what the K pieces add into
    if (e == cudaErrorNotSupported) {  // the driver cannot encode tensor maps: the mma.sync path serves
      (void)cudaGetLastError();
      kind = LinearKind::Mma;
    }
  }
  // the mma path's K splits (none for a bf16 out: checked above); with accumulate they add into out as it is
  const int msplits = plan.splits;
  if (kind == LinearKind::Mma && msplits > 1 && !accumulate)
    CUDA_CHECK(cudaMemsetAsync(o.y, 0, sizeof(float) * static_cast<size_t>(m) * w.n, st));
  if (kind == LinearKind::Mma) {
    const int cfg = kind == plan.kind ? plan.cfg : (m <= 16 ? 3 : m <= 32 ? 2 : m <= 64 ? 1 : 0);
    switch (cfg) {
      case 0: e = gemmk::launch_gemm_int4_mma<M0>(st, xb, lw, o, msplits); break;
      case 1: e = gemmk::launch_gemm_int4_mma<M1>(st, xb, lw, o, msplits); break;
      case 2: e = gemmk::launch_gemm_int4_mma<M2>(st, xb, lw, o, msplits); break;
      default: e = gemmk::launch_gemm_int4_mma<M3>(st, xb, lw, o, msplits); break;
    }
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    GLM4_FAIL(GLM4_E_CUDA, "matmul_int4 (", plan.label(), ", M=", m, " N=", w.n, " K=", w.k, "): launch failed: ",
              cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

void linear_int4_gemm(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, int64_t mode, const Tensor& bias) {
  const int64_t m = x.dim(0);
  const LinearPlan plan = linear_plan(m, w.n, w.k, w.group, w.layout);
  GLM4_CHECK(plan.kind == LinearKind::Wgmma || plan.kind == LinearKind::Mma, GLM4_E_UNSUPPORTED,
             "linear_int4: a bf16 x needs the tensor-core GEMM (layout 1, M > ", kInt4GemvMaxM, "), got M=", m);
  gemm_int4_layout1(c, out, x, w, bias, plan, mode == static_cast<int64_t>(LinearMode::Accumulate));
}

}  // namespace cuda

namespace cudart {
std::string linear_path(int device, int64_t m, int64_t n, int64_t k, int group, int layout) {
  int prev = -1;
  CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != device) CUDA_CHECK(cudaSetDevice(device));
  std::string s;
  try {
    s = cuda::linear_plan(m, n, k, group, layout).label();
  } catch (...) {
    if (prev != device) (void)cudaSetDevice(prev);
    throw;
  }
  if (prev != device) (void)cudaSetDevice(prev);
  return s;
}
}  // namespace cudart
}  // namespace glm4
