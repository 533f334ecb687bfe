// Layout 1 on CUDA (core/int4_layout.h): repack_int4 (both directions), dequantize_int4 of layout 1, and the fused
// INT4 linear of decode, linear_int4 (the tensor-core GEMV of gemv_int4.cuh); matmul_int4 of a layout-1 weight
// comes here too (int4.cu).
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "gemv_int4.cuh"
#include "gemv_v3.cuh"
#include "ops.h"

namespace glm4 {
namespace cuda {

// Used by int4.cu's matmul_int4 and dequantize_int4 for layout-1 weights.
void matmul_int4_tiled(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias);
void dequantize_int4_tiled(Context& c, const Tensor& out, const QWeight& q);

namespace {

// ============================================================ repack (load time)

// One thread per 16-byte lane chunk of layout 1 (tile (nt, kt), lane l = 4g + t): word j takes the canonical bytes
// holding (row g, k0+2t..2t+1), (row g+8, ...), (row g, k0+2t+8..9), (row g+8, ...) = a0 a1 | a2 a3 | a4 a5 | a6 a7.
__global__ void repack_to_tiled_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t n, int64_t k) {
  const int64_t kt64 = k >> 6, chunks = (n >> 4) * kt64 * 32, rb = k >> 1;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int l = static_cast<int>(i & 31);
    const int64_t tile = i >> 5, nt = tile / kt64, kt = tile - nt * kt64;
    const int g = l >> 2, t = l & 3;
    const uint8_t* r0 = src + (nt * 16 + g) * rb;
    const uint8_t* r8 = r0 + 8 * rb;
    uint32_t words[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t b = (kt * 64 + 16 * j + 2 * t) >> 1;
      const uint32_t lo0 = r0[b], lo8 = r8[b], hi0 = r0[b + 4], hi8 = r8[b + 4];  // k+8 is 4 bytes on
      // nibble p of the word: [a0, a2, a4, a6, a1, a3, a5, a7]
      words[j] = (lo0 & 15) | (lo8 & 15) << 4 | (hi0 & 15) << 8 | (hi8 & 15) << 12 | (lo0 >> 4) << 16 | (lo8 >> 4) << 20 |
                 (hi0 >> 4) << 24 | (hi8 >> 4) << 28;
    }
    *reinterpret_cast<uint4*>(dst + i * 16) = make_uint4(words[0], words[1], words[2], words[3]);
  }
}
// The inverse: each canonical byte is rebuilt from one (lane, word, pair) of layout 1.
__global__ void repack_to_canonical_kernel(const uint8_t* __restrict__ src, uint8_t* __restrict__ dst, int64_t n, int64_t k) {
  const int64_t kt64 = k >> 6, chunks = (n >> 4) * kt64 * 32, rb = k >> 1;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int l = static_cast<int>(i & 31);
    const int64_t tile = i >> 5, nt = tile / kt64, kt = tile - nt * kt64;
    const int g = l >> 2, t = l & 3;
    uint8_t* r0 = dst + (nt * 16 + g) * rb;
    uint8_t* r8 = r0 + 8 * rb;
    const uint4 v = *reinterpret_cast<const uint4*>(src + i * 16);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t w = words[j];
      const int64_t b = (kt * 64 + 16 * j + 2 * t) >> 1;
      r0[b] = static_cast<uint8_t>((w & 15) | ((w >> 16) & 15) << 4);
      r8[b] = static_cast<uint8_t>(((w >> 4) & 15) | ((w >> 20) & 15) << 4);
      r0[b + 4] = static_cast<uint8_t>(((w >> 8) & 15) | ((w >> 24) & 15) << 4);
      r8[b + 4] = static_cast<uint8_t>(((w >> 12) & 15) | ((w >> 28) & 15) << 4);
    }
  }
}
// Scales / zeros: element (n, gi) <-> ((n/16) * KG + gi) * 16 + n % 16.
__global__ void repack_groups_kernel(const uint16_t* __restrict__ s_src, const uint16_t* __restrict__ z_src,
                                     uint16_t* __restrict__ s_dst, uint16_t* __restrict__ z_dst, int64_t n, int64_t kg,
                                     bool to_tiled) {
  const int64_t total = n * kg;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / kg, gi = i - r * kg, ti = ((r >> 4) * kg + gi) * 16 + (r & 15);
    const int64_t from = to_tiled ? i : ti, to = to_tiled ? ti : i;
    s_dst[to] = s_src[from];
    z_dst[to] = z_src[from];
  }
}

// ============================================================ dequantize of layout 1

// One thread per lane chunk: its 32 codes go to their (row, k) places; (value - zero) * scale in f32 like the CPU.
template <typename TO>
__global__ void dequantize_tiled_kernel(const uint8_t* __restrict__ codes, const uint16_t* __restrict__ scales,
                                        const uint16_t* __restrict__ zeros, TO* __restrict__ out, int64_t n, int64_t k,
                                        int g, int codebook) {
  const int64_t kt64 = k >> 6, chunks = (n >> 4) * kt64 * 32, kg = k / g;
  const float nf4[16] = {GLM4_NF4_VALUES};
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < chunks;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int l = static_cast<int>(i & 31);
    const int64_t tile = i >> 5, nt = tile / kt64, kt = tile - nt * kt64;
    const int gg = l >> 2, t = l & 3;
    const uint4 v = *reinterpret_cast<const uint4*>(codes + i * 16);
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#pragma unroll
      for (int e = 0; e < 8; ++e) {  // entry a_e: row g + 8 * bit1, k + bit0 + 8 * bit2; nibble (e & 1) * 4 + e / 2
        const int64_t row = nt * 16 + gg + ((e & 2) ? 8 : 0);
        const int64_t col = kt * 64 + 16 * j + 2 * t + (e & 1) + ((e & 4) ? 8 : 0);
        const int q = static_cast<int>((words[j] >> (4 * ((e & 1) * 4 + (e >> 1)))) & 15u);
        const int64_t si = ((row >> 4) * kg + col / g) * 16 + (row & 15);
        const float s = bf16_bits_to_f(scales[si]), z = bf16_bits_to_f(zeros[si]);
        const float val = codebook == kInt4CodebookNf4 ? nf4[q] : static_cast<float>(q);
        store_f(out, row * k + col, __fmul_rn(__fsub_rn(val, z), s));
      }
    }
  }
}

unsigned grid_of(int64_t items) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((items + 255) / 256, 1 << 20)));
}

// ============================================================ the GEMV: configuration and launch

constexpr int kDepth = 4;  // old plan: tile loads in flight per warp: 79 registers, 3 blocks of 256 an SM
// The ring kernel (default): tiles in flight a warp through shared memory (gemv_int4.cuh). bench/NOTES.md "gemv2"
// has the prediction; gemv_bench.cu measures ring 4/8/16 and the old kernel side by side.
constexpr int kRing = 8;

// Which kernel a shape gets. Default (kDefaultPlan = 3): the persistent GEMV of gemv_v3.cuh wherever it has a plan
// (codebook 0, layout-1 shapes whose K chunk gives every warp 1..4 tiles); NF4 and the rest keep the DEPTH
// register-ring kernel ("old"). Measured on the H200 (2026-12-03, scripts/gpu/gemv3.sh, M = 1 / M = 8, us, v3 vs
// old): qkv 12.5/13.7 vs 12.4/27.6, o 11.6/12.7 vs 11.3/21.3, gate_up 29.3/30.7 vs 66.6/81.6, down 20.3/22.0 vs
// 32.2/55.7, output 135/137 vs 566/573; the bench's decode at batch 1 225.6 tok/s vs 158.4, batch 8 1,450 vs 761.
// GLM4_GEMV_PLAN=old (the old kernel everywhere), =ring (gemv2's cp.async ring everywhere), =mixed (ring except
// K > 8192 without SwiGLU), =v3 (the default). Read once a process. Both rings copy without the L2 cache hint: the
// hinted cp.async trapped with "illegal instruction" on the H200 (compute-sanitizer, run 4 of 2026-12-03).
constexpr int kDefaultPlan = 3;
int gemv_plan_env() {  // 0 mixed, 1 old, 2 ring, 3 v3
  static const int v = [] {
    const char* e = std::getenv("GLM4_GEMV_PLAN");
    if (e == nullptr) return kDefaultPlan;
    const std::string s(e);
    return s == "mixed" ? 0 : s == "ring" ? 2 : s == "v3" ? 3 : s == "old" ? 1 : kDefaultPlan;
  }();
  return v;
}
bool use_ring(int64_t k, bool swiglu) {
  const int e = gemv_plan_env();
  if (e == 3) return false;
  if (e != 0) return e == 2;
  return swiglu || k <= 8192;
}

template <int CB, int G, int RING>
const void* kernel_ptr() {
  return reinterpret_cast<const void*>(&gemv::gemv_int4_kernel<kDepth, CB, G, RING>);
}
template <int RING>
const void* kernel_for_ring(int codebook, int group) {
  if (codebook == kInt4CodebookNf4)
    return group == 32 ? kernel_ptr<1, 32, RING>() : group == 64 ? kernel_ptr<1, 64, RING>() : kernel_ptr<1, 128, RING>();
  return group == 32 ? kernel_ptr<0, 32, RING>() : group == 64 ? kernel_ptr<0, 64, RING>() : kernel_ptr<0, 128, RING>();
}
const void* kernel_for(int codebook, int group, int ring) {
  return ring > 0 ? kernel_for_ring<kRing>(codebook, group) : kernel_for_ring<0>(codebook, group);
}

struct DevLimits {
  int sms = 0, major = 0, smem_optin = 0, smem_sm = 0;
};
DevLimits dev_limits() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  DevLimits d;
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  return d;
}

struct Plan {
  gemv::Plan g;
  bool pdl = false;
};

// The decomposition of a shape: gemv::choose_plan's rule (gemv_int4.cuh), cached per device and shape.
Plan plan_for(int64_t n, int64_t k, int group, int codebook, bool swiglu, int ring) {
  static std::mutex mu;
  static std::map<std::tuple<int, int64_t, int64_t, int, int, bool, int>, Plan> cache;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(dev, n, k, group, codebook, swiglu, ring);
  std::lock_guard<std::mutex> lk(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  const DevLimits d = dev_limits();
  const void* kern = kernel_for(codebook, group, ring);
  const int smem_cap = allow_dynamic_smem(kern, d.smem_optin);  // the NF4 kernels hold a static table
  auto occ = [&](int threads, int smem) {
    int per_sm = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kern, threads, smem));
    return per_sm;
  };
  Plan pl;
  GLM4_CHECK(gemv::choose_plan(n, k, swiglu, d.sms, d.major, smem_cap, d.smem_sm, occ, &pl.g, 0, 0, ring, group), GLM4_E_UNSUPPORTED,
             "linear_int4: no GEMV configuration fits [", n, ",", k, "] in this device's shared memory");
  pl.pdl = d.major >= 9;
  cache.emplace(key, pl);
  return pl;
}

template <int CB, int G, int RING>
void launch_gemv(cudaStream_t st, const gemv::Params& p, const Plan& pl, int smem) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(static_cast<unsigned>(pl.g.cfg.cl), static_cast<unsigned>(pl.g.rowgroups), 1);
  lc.blockDim = dim3(static_cast<unsigned>(pl.g.cfg.warps() * 32), 1, 1);
  lc.dynamicSmemBytes = static_cast<size_t>(smem);
  lc.stream = st;
  cudaLaunchAttribute at[2];
  int na = 0;
  if (pl.g.cfg.cl > 1) {
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = static_cast<unsigned>(pl.g.cfg.cl);
    at[na].val.clusterDim.y = 1;
    at[na].val.clusterDim.z = 1;
    ++na;
  }
  if (pl.pdl) {  // the weight loads of this GEMV may start while the previous kernel finishes (gemv_int4.cuh)
    at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  lc.attrs = at;
  lc.numAttrs = static_cast<unsigned>(na);
  CUDA_CHECK(cudaLaunchKernelEx(&lc, gemv::gemv_int4_kernel<kDepth, CB, G, RING>, p));
  CUDA_CHECK_LAUNCH("linear_int4 (gemv)");
}

// ---------------------------------------------------------------- v3 (gemv_v3.cuh)
// The workspace "gemv3": tickets first (a fixed region, so that every shape finds them at rest), then the partials.
constexpr int64_t kV3Tickets = 1 << 16;  // row units of the tallest split-K weight

using V3Fn = void (*)(const gemv3::Params);
template <int G>
V3Fn v3_kernel_g(int kwm, int u, int ns) {
  if (u == 2) {
    if (kwm == 4 && ns == 1) return &gemv3::gemv_v3_kernel<G, 4, 2, 1>;
    if (kwm == 2 && ns == 2) return &gemv3::gemv_v3_kernel<G, 2, 2, 2>;
    if (kwm == 1 && ns == 4) return &gemv3::gemv_v3_kernel<G, 1, 2, 4>;
    return nullptr;
  }
  if (kwm == 4 && ns == 2) return &gemv3::gemv_v3_kernel<G, 4, 1, 2>;
  if (kwm == 2 && ns == 4) return &gemv3::gemv_v3_kernel<G, 2, 1, 4>;
  if (kwm == 1 && ns == 8) return &gemv3::gemv_v3_kernel<G, 1, 1, 8>;
  return nullptr;
}
V3Fn v3_kernel(int group, int kwm, int u, int ns) {
  return group == 32 ? v3_kernel_g<32>(kwm, u, ns) : group == 64 ? v3_kernel_g<64>(kwm, u, ns) : v3_kernel_g<128>(kwm, u, ns);
}
struct V3Plan {
  gemv3::Plan p;
  V3Fn fn = nullptr;
  int smem8 = 0;  // shared memory at 8 tokens
  bool pdl = false;
  int64_t ws_bytes = 0;  // workspace: tickets + partials (0: C == 1)
};
// v3's plan of a weight (p.valid false: the old kernel), cached per device and shape.
V3Plan v3_plan_for(int64_t n, int64_t k, int group, int codebook, bool swiglu) {
  static std::mutex mu;
  static std::map<std::tuple<int, int64_t, int64_t, int, int, bool>, V3Plan> cache;
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  const auto key = std::make_tuple(dev, n, k, group, codebook, swiglu);
  std::lock_guard<std::mutex> lk(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  V3Plan v;
  const DevLimits d = dev_limits();
  if (codebook == kInt4CodebookInt) v.p = gemv3::plan_v3(n, k, swiglu, d.sms);
  const int u = swiglu ? 2 : 1;
  const int64_t nu = swiglu ? n / 32 : n / 16;
  if (v.p.valid) v.fn = v3_kernel(group, v.p.kwm, u, v.p.ns);
  if (v.fn && v.p.C > 1 && nu > kV3Tickets) v.fn = nullptr;
  if (v.fn) {
    v.smem8 = gemv3::smem_bytes(v.p, 8, u);
    const int cap = allow_dynamic_smem(reinterpret_cast<const void*>(v.fn), d.smem_optin);
    if (v.smem8 > cap) v.fn = nullptr;
  }
  if (!v.fn) v.p.valid = false;
  v.pdl = d.major >= 9;
  v.ws_bytes = v.p.valid && v.p.C > 1 ? kV3Tickets * 4 + gemv3::ws_floats(nu, u, v.p.C) * 4 : 0;
  cache.emplace(key, v);
  return v;
}

void run_linear(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias, const Tensor& norm_w,
                float eps, LinearMode mode, const Tensor& work = Tensor()) {
  const int64_t m = x.dim(0);
  if (m == 0 || w.n == 0) return;
  GLM4_CHECK(w.n < (int64_t{1} << 31) && w.k < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "linear_int4: [", w.n, ",", w.k,
             "] exceeds 32-bit dimensions");
  GLM4_CHECK(aligned16(x.raw()) && aligned16(w.codes.raw()), GLM4_E_INVALID_ARG, "linear_int4: x ", x.describe(),
             " and codes ", w.codes.describe(), " must be 16-byte aligned");
  const bool swiglu = mode == LinearMode::SwiGlu;
  GLM4_CHECK(!swiglu || (w.n / 2) % 16 == 0, GLM4_E_SHAPE, "linear_int4: swiglu on CUDA needs N/2 a multiple of 16, got N=",
             w.n);
  if (gemv_plan_env() == 3) {
    const V3Plan v = v3_plan_for(w.n, w.k, w.group, w.codebook, swiglu);
    if (v.p.valid && (v.ws_bytes == 0 || (work.defined() && work.nbytes() >= v.ws_bytes))) {
      gemv3::Params p{};
      p.codes = w.codes.data<uint8_t>();
      p.scales = w.scales.data<uint16_t>();
      p.zeros = w.zeros.data<uint16_t>();
      if (bias.defined()) {
        if (bias.dtype() == DType::F32) p.bias_f32 = bias.data<float>();
        else p.bias_bf16 = bias.data<uint16_t>();
      }
      if (norm_w.defined()) {
        if (norm_w.dtype() == DType::F32) p.norm_f32 = norm_w.data<float>();
        else p.norm_bf16 = norm_w.data<uint16_t>();
      }
      if (v.ws_bytes > 0) {
        p.tickets = reinterpret_cast<unsigned*>(work.raw());
        p.ws = reinterpret_cast<float*>(static_cast<uint8_t*>(work.raw()) + kV3Tickets * 4);
      }
      p.eps = eps;
      p.N = static_cast<int>(w.n);
      p.K = static_cast<int>(w.k);
      p.mode = static_cast<int>(mode);
      p.C = v.p.C;
      p.S = v.p.S;
      const int64_t nout = swiglu ? w.n / 2 : w.n;
      cudaStream_t st = stream_of(c);
      for (int64_t m0 = 0; m0 < m; m0 += 8) {  // tokens in launches of 8: each token's arithmetic is the same
        p.M = static_cast<int>(std::min<int64_t>(8, m - m0));
        p.x = x.data<float>() + m0 * w.k;
        p.out = out.data<float>() + m0 * nout;
        cudaLaunchConfig_t lc = {};
        lc.gridDim = dim3(static_cast<unsigned>(v.p.blocks), 1, 1);
        lc.blockDim = dim3(gemv3::kThreads, 1, 1);
        lc.dynamicSmemBytes = static_cast<size_t>(gemv3::smem_bytes(v.p, p.M, swiglu ? 2 : 1));
        lc.stream = st;
        cudaLaunchAttribute at[1];
        int na = 0;
        if (v.pdl) {  // the weight loads may start while the previous kernel finishes (gemv_v3.cuh)
          at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
          at[na].val.programmaticStreamSerializationAllowed = 1;
          ++na;
        }
        lc.attrs = at;
        lc.numAttrs = static_cast<unsigned>(na);
        CUDA_CHECK(cudaLaunchKernelEx(&lc, v.fn, p));
        CUDA_CHECK_LAUNCH("linear_int4 (gemv v3)");
      }
      return;
    }
  }
  // the ring kernel copies scales and zeros by 16-byte chunks: it needs them 16-byte aligned (whole tensors and the
  // row views of 16-row multiples are)
  const bool ring = use_ring(w.k, swiglu) && aligned16(w.scales.raw()) && aligned16(w.zeros.raw());
  const Plan pl = plan_for(w.n, w.k, w.group, w.codebook, swiglu, ring ? kRing : 0);
  gemv::Params p{};
  p.codes = w.codes.data<uint8_t>();
  p.scales = w.scales.data<uint16_t>();
  p.zeros = w.zeros.data<uint16_t>();
  if (bias.defined()) {
    if (bias.dtype() == DType::F32) p.bias_f32 = bias.data<float>();
    else p.bias_bf16 = bias.data<uint16_t>();
  }
  if (norm_w.defined()) {
    if (norm_w.dtype() == DType::F32) p.norm_f32 = norm_w.data<float>();
    else p.norm_bf16 = norm_w.data<uint16_t>();
  }
  p.eps = eps;
  p.N = static_cast<int>(w.n);
  p.K = static_cast<int>(w.k);
  p.mode = static_cast<int>(mode);
  p.cfg = pl.g.cfg;
  const int64_t nout = swiglu ? w.n / 2 : w.n;
  const int kt = static_cast<int>(w.k / 64);
  cudaStream_t st = stream_of(c);
  for (int64_t m0 = 0; m0 < m; m0 += pl.g.mc) {  // tokens in launches of mc (8): each token's arithmetic is the same
    p.M = static_cast<int>(std::min<int64_t>(pl.g.mc, m - m0));
    p.x = x.data<float>() + m0 * w.k;
    p.out = out.data<float>() + m0 * nout;
    const int smem = gemv::Smem::of(p.M, (kt + pl.g.cfg.cl - 1) / pl.g.cfg.cl, pl.g.cfg).total;
    const int key = (ring ? 10000 : 0) + w.codebook * 1000 + w.group;
    switch (key) {
      case 32: launch_gemv<0, 32, 0>(st, p, pl, smem); break;
      case 64: launch_gemv<0, 64, 0>(st, p, pl, smem); break;
      case 128: launch_gemv<0, 128, 0>(st, p, pl, smem); break;
      case 1032: launch_gemv<1, 32, 0>(st, p, pl, smem); break;
      case 1064: launch_gemv<1, 64, 0>(st, p, pl, smem); break;
      case 1128: launch_gemv<1, 128, 0>(st, p, pl, smem); break;
      case 10032: launch_gemv<0, 32, kRing>(st, p, pl, smem); break;
      case 10064: launch_gemv<0, 64, kRing>(st, p, pl, smem); break;
      case 10128: launch_gemv<0, 128, kRing>(st, p, pl, smem); break;
      case 11032: launch_gemv<1, 32, kRing>(st, p, pl, smem); break;
      case 11064: launch_gemv<1, 64, kRing>(st, p, pl, smem); break;
      case 11128: launch_gemv<1, 128, kRing>(st, p, pl, smem); break;
      default: GLM4_FAIL(GLM4_E_INVALID_ARG, "linear_int4: group ", w.group, " codebook ", w.codebook);
    }
  }
}

}  // namespace

// ============================================================ ops

void repack_int4(Context& c, const QWeight& dst, const QWeight& src) {
  if (src.n == 0 || src.k == 0) return;
  cudaStream_t st = stream_of(c);
  const int64_t chunks = src.n / 16 * (src.k / 64) * 32;
  GLM4_CHECK(aligned16(dst.codes.raw()) && aligned16(src.codes.raw()), GLM4_E_INVALID_ARG,
             "repack_int4: codes must be 16-byte aligned (got ", dst.codes.describe(), ", ", src.codes.describe(), ")");
  if (dst.layout == kInt4LayoutTiled)
    repack_to_tiled_kernel<<<grid_of(chunks), 256, 0, st>>>(src.codes.data<uint8_t>(), dst.codes.data<uint8_t>(), src.n, src.k);
  else
    repack_to_canonical_kernel<<<grid_of(chunks), 256, 0, st>>>(src.codes.data<uint8_t>(), dst.codes.data<uint8_t>(), src.n, src.k);
  CUDA_CHECK_LAUNCH("repack_int4 (codes)");
  const int64_t kg = src.k / src.group;
  repack_groups_kernel<<<grid_of(src.n * kg), 256, 0, st>>>(src.scales.data<uint16_t>(), src.zeros.data<uint16_t>(),
                                                            dst.scales.data<uint16_t>(), dst.zeros.data<uint16_t>(), src.n,
                                                            kg, dst.layout == kInt4LayoutTiled);
  CUDA_CHECK_LAUNCH("repack_int4 (scales, zeros)");
}

void dequantize_int4_tiled(Context& c, const Tensor& out, const QWeight& q) {
  const int64_t chunks = q.n / 16 * (q.k / 64) * 32;
  cudaStream_t st = stream_of(c);
  if (out.dtype() == DType::F32)
    dequantize_tiled_kernel<float><<<grid_of(chunks), 256, 0, st>>>(q.codes.data<uint8_t>(), q.scales.data<uint16_t>(),
                                                                    q.zeros.data<uint16_t>(), out.data<float>(), q.n, q.k,
                                                                    q.group, q.codebook);
  else
    dequantize_tiled_kernel<Bf16><<<grid_of(chunks), 256, 0, st>>>(q.codes.data<uint8_t>(), q.scales.data<uint16_t>(),
                                                                   q.zeros.data<uint16_t>(), out.data<Bf16>(), q.n, q.k,
                                                                   q.group, q.codebook);
  CUDA_CHECK_LAUNCH("dequantize_int4 (layout 1)");
}

void matmul_int4_tiled(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias) {
  run_linear(c, out, x, w, bias, Tensor(), 0.f, LinearMode::Store);
}

void linear_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps, int64_t mode,
                 const Tensor& bias, const Tensor& norm_weight) {
  run_linear(c, out, x, w, bias, norm_weight, eps, static_cast<LinearMode>(mode));
}

Tensor linear_int4_workspace(Context& c, const Tensor& x, const QWeight& w, int64_t mode) {
  if (gemv_plan_env() != 3 || x.dim(0) == 0 || w.n == 0 || w.layout != kInt4LayoutTiled) return Tensor();
  const int dev = c.device().index;
  int prev = -1;
  CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != dev) CUDA_CHECK(cudaSetDevice(dev));
  const V3Plan v = v3_plan_for(w.n, w.k, w.group, w.codebook, mode == static_cast<int64_t>(LinearMode::SwiGlu));
  Tensor ws;
  if (v.ws_bytes > 0) {
    bool fresh = false;
    ws = c.workspace("gemv3", v.ws_bytes, &fresh);
    // the tickets must be zero at rest (each launch leaves them so): zero a new buffer once, synchronously
    if (fresh) {
      CUDA_CHECK(cudaMemsetAsync(ws.raw(), 0, static_cast<size_t>(ws.nbytes()), 0));
      CUDA_CHECK(cudaStreamSynchronize(0));
    }
  }
  if (prev != dev) CUDA_CHECK(cudaSetDevice(prev));
  return ws;
}

void linear_int4_run(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps, int64_t mode,
                     const Tensor& bias, const Tensor& norm_weight, const Tensor& work) {
  run_linear(c, out, x, w, bias, norm_weight, eps, static_cast<LinearMode>(mode), work);
}

}  // namespace cuda
}  // namespace glm4
