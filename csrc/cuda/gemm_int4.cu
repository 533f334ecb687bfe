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
#include "gemm_int4_sm90.cuh"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

// The configurations instantiated, in one place (index = LinearPlan::cfg).
//   wgmma: Sm90Cfg<WR, TT, STAGES>: block = 2 * WR * 64 weight rows x TT tokens; stages fill ~200 KB of smem.
using W0 = gemmk::Sm90Cfg<2, 128, 8>;   // large M
using W1 = gemmk::Sm90Cfg<2, 64, 12>;   // M 33..64 (and 65..128 in two token tiles)
using W2 = gemmk::Sm90Cfg<2, 32, 14>;   // M 17..32
using W3 = gemmk::Sm90Cfg<2, 16, 16>;   // M 9..16
using W4 = gemmk::Sm90Cfg<1, 128, 10>;  // large M when W0 leaves too many SMs idle in the last round
//   mma.sync: MmaCfg<WW, WT, MW, NT, STAGES, min blocks an SM>: block = WW*MW*16 rows x WT*NT*8 tokens.
using M0 = gemmk::MmaCfg<4, 2, 2, 8, 4, 2>;  // large M: 128 x 128, 2 blocks an SM
using M1 = gemmk::MmaCfg<4, 1, 2, 8, 6, 1>;  // 128 x 64
using M2 = gemmk::MmaCfg<4, 1, 2, 4, 6, 1>;  // 128 x 32
using M3 = gemmk::MmaCfg<4, 1, 2, 2, 8, 1>;  // 128 x 16

struct CfgInfo {
  const char* name;
  int rows, tokens;
};
constexpr CfgInfo kWgmma[] = {{"wgmma r256 t128", W0::BR, W0::TT}, {"wgmma r256 t64", W1::BR, W1::TT},
                              {"wgmma r256 t32", W2::BR, W2::TT}, {"wgmma r256 t16", W3::BR, W3::TT},
                              {"wgmma r128 t128", W4::BR, W4::TT}};
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

// K splits for a grid of `tiles` output tiles on `slots` resident blocks: the smallest count whose rounds are
// >= 90 % full, each split keeping >= 4 k-steps of 64; otherwise the fullest found.
int choose_splits(int64_t tiles, int64_t ktiles, int64_t slots) {
  if (tiles >= slots) return 1;
  int best = 1;
  double best_eff = 0.0;
  const int64_t maxs = std::max<int64_t>(1, std::min<int64_t>(16, ktiles / 4));
  for (int s = 1; s <= maxs; ++s) {
    const int64_t work = tiles * s;
    const double eff = static_cast<double>(work) / (static_cast<double>(cdiv(work, slots)) * slots);
    if (work >= slots && eff >= 0.9) return s;
    if (eff > best_eff + 1e-9) {
      best_eff = eff;
      best = s;
    }
  }
  return best;
}

// Share of the SM rounds that a grid of `tiles` keeps busy.
double round_fill(int64_t tiles, int64_t slots) { return static_cast<double>(tiles) / (cdiv(tiles, slots) * slots); }

}  // namespace

std::string LinearPlan::label() const {
  switch (kind) {
    case LinearKind::Gemv: return "gemv";
    case LinearKind::Canonical: return "gemm_tc (layout 0)";
    case LinearKind::Wgmma: return str(kWgmma[cfg].name, " splits=", splits);
    case LinearKind::Mma: return str(kMma[cfg].name, " splits=", splits);
  }
  return "?";
}

// The choice. PREDICTIONS until scripts/gpu/gemm.sh has run on the H200 (bench/NOTES.md, "INT4 GEMM"): replace
// them by the measured winners, with the figures here.
//   M <= 8: the GEMV (bench/NOTES.md: at M = 8 it beat one 128-row tensor-core tile 2-3x on the H100).
//   layout 0: the canonical gemm_tc path (the only tensor-core kernel that reads layout 0).
//   sm_90a, layout 1: one token tile when M <= 64 (TT = 16/32/64 >= M), K split until the tiles fill the SMs
//     (small M streams the weights: the time should stay near one read of them); M > 64: 256 x 128 tiles, or
//     128 x 128 when those fill the last round of SMs better (qkv at M = 2048: 288 tiles = 2.2 rounds of 132).
//   other archs, layout 1: mma.sync 128 x 16/32/64 for M <= 64, 128 x 128 above.
// GLM4_INT4_GEMM=mma forces the mma.sync kernels on sm_90a too (a way around a wgmma problem without a rebuild;
// read once a process).
static bool force_mma() {
  static const bool v = [] {
    const char* e = std::getenv("GLM4_INT4_GEMM");
    return e != nullptr && std::string(e) == "mma";
  }();
  return v;
}

LinearPlan linear_plan(int64_t m, int64_t n, int64_t k, int group, int layout) {
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
    if (m <= 16)
      p.cfg = 3;
    else if (m <= 32)
      p.cfg = 2;
    else if (m <= 64)
      p.cfg = 1;
    else {
      const int64_t t0 = cdiv(m, W0::TT) * cdiv(n / 16, W0::RT), t4 = cdiv(m, W4::TT) * cdiv(n / 16, W4::RT);
      p.cfg = round_fill(t4, d.sms) > round_fill(t0, d.sms) + 0.15 ? 4 : 0;
    }
    const CfgInfo& ci = kWgmma[p.cfg];
    const int64_t tiles = cdiv(m, ci.tokens) * cdiv(n, ci.rows);
    p.splits = choose_splits(tiles, ktiles, d.sms);
    p.grid = static_cast<int>(std::min<int64_t>(tiles * p.splits, d.sms));
    return p;
  }
  p.kind = LinearKind::Mma;
  p.cfg = m <= 16 ? 3 : m <= 32 ? 2 : m <= 64 ? 1 : 0;
  const CfgInfo& ci = kMma[p.cfg];
  const int64_t tiles = cdiv(m, ci.tokens) * cdiv(n, ci.rows);
  p.splits = choose_splits(tiles, ktiles, 2 * static_cast<int64_t>(d.sms));
  p.grid = static_cast<int>(tiles * p.splits);
  return p;
}

void gemm_int4_layout1(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias,
                       const LinearPlan& plan) {
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
  gemmk::Out o{out.data<float>(), nullptr, nullptr, static_cast<int>(m), static_cast<int>(w.n)};
  if (bias.defined()) {
    if (bias.dtype() == DType::F32)
      o.bias_f32 = bias.data<float>();
    else
      o.bias_bf16 = bias.data<uint16_t>();
  }
  cudaStream_t st = stream_of(c);
  if (plan.splits > 1) CUDA_CHECK(cudaMemsetAsync(o.y, 0, sizeof(float) * static_cast<size_t>(m) * w.n, st));
  const auto* xb = reinterpret_cast<const __nv_bfloat16*>(x.raw());
  cudaError_t e = cudaSuccess;
  LinearKind kind = plan.kind;
  if (kind == LinearKind::Wgmma) {
    switch (plan.cfg) {
      case 0: e = gemmk::launch_gemm_int4_sm90<W0>(st, xb, lw, o, plan.splits, plan.grid); break;
      case 1: e = gemmk::launch_gemm_int4_sm90<W1>(st, xb, lw, o, plan.splits, plan.grid); break;
      case 2: e = gemmk::launch_gemm_int4_sm90<W2>(st, xb, lw, o, plan.splits, plan.grid); break;
      case 3: e = gemmk::launch_gemm_int4_sm90<W3>(st, xb, lw, o, plan.splits, plan.grid); break;
      default: e = gemmk::launch_gemm_int4_sm90<W4>(st, xb, lw, o, plan.splits, plan.grid); break;
    }
    if (e == cudaErrorNotSupported) {  // the driver cannot encode tensor maps: the mma.sync path serves
      (void)cudaGetLastError();
      kind = LinearKind::Mma;
    }
  }
  if (kind == LinearKind::Mma) {
    const int cfg = kind == plan.kind ? plan.cfg : (m <= 16 ? 3 : m <= 32 ? 2 : m <= 64 ? 1 : 0);
    switch (cfg) {
      case 0: e = gemmk::launch_gemm_int4_mma<M0>(st, xb, lw, o, plan.splits); break;
      case 1: e = gemmk::launch_gemm_int4_mma<M1>(st, xb, lw, o, plan.splits); break;
      case 2: e = gemmk::launch_gemm_int4_mma<M2>(st, xb, lw, o, plan.splits); break;
      default: e = gemmk::launch_gemm_int4_mma<M3>(st, xb, lw, o, plan.splits); break;
    }
  }
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    GLM4_FAIL(GLM4_E_CUDA, "matmul_int4 (", plan.label(), ", M=", m, " N=", w.n, " K=", w.k, "): launch failed: ",
              cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
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
