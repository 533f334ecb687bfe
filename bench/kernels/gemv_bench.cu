// Kernel harness for the INT4 GEMV of decode (csrc/cuda/gemv_int4.cuh): validates every variant against a float64
// reference on fresh random inputs with poisoned outputs, checks that batched rows equal solo rows bit for bit,
// then times each GLM-4-9B shape at M = 1, 2, 4, 8 as a CUDA graph of back-to-back calls that rotate over enough
// weight copies that L2 (50 MB) never serves a repeat, beside the device's copy bandwidth measured in this run.
//
// Build (here, no GPU needed):  nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Icsrc
//   -gencode=arch=compute_90a,code=sm_90a bench/kernels/gemv_bench.cu -o bench/kernels/bin/gemv_bench
// Run: bench/kernels/bin/gemv_bench [out.json [shape]]   (scripts/gpu/gemv2.sh: a process a shape, + cuBLAS BF16)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "cuda/gemv_int4.cuh"
#include "cuda/gemv_v3.cuh"

using namespace glm4;
using namespace glm4::cuda;

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));  \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

using KFn = void (*)(const gemv::Params);

// ------------------------------------------------------------------ the variants instantiated
struct Kernel {
  const char* name;
  KFn fn;
  int depth, cb, g, ring;
  bool probe = false;  // bandwidth probe (gemv_int4.cuh PROBE): timed, never validated, not a GEMV
};
// d4: the register-ring kernel of run 2 (GLM4_GEMV_PLAN=old); rN: the cp.async ring kernel with N tiles a warp
// (r8 = the library's default, gemv_int4.cu kRing)
static const Kernel kKernels[] = {
    {"d4", &gemv::gemv_int4_kernel<4, 0, 128, 0>, 4, 0, 128, 0},    {"r8", &gemv::gemv_int4_kernel<4, 0, 128, 8>, 4, 0, 128, 8},
    {"r4", &gemv::gemv_int4_kernel<4, 0, 128, 4>, 4, 0, 128, 4},
    {"r8g64", &gemv::gemv_int4_kernel<4, 0, 64, 8>, 4, 0, 64, 8},   {"r8g32", &gemv::gemv_int4_kernel<4, 0, 32, 8>, 4, 0, 32, 8},
    {"r8nf4", &gemv::gemv_int4_kernel<4, 1, 128, 8>, 4, 1, 128, 8},
    {"r8probe", &gemv::gemv_int4_kernel<4, 0, 128, 8, true>, 4, 0, 128, 8, true},
};
// v3 (gemv_v3.cuh): the kernel is picked from the plan (G, KWM, U, NS); these entries carry cb / g for the reference.
static const Kernel kV3Kernels[] = {
    {"v3", nullptr, 0, 0, 128, 0}, {"v3g64", nullptr, 0, 0, 64, 0}, {"v3g32", nullptr, 0, 0, 32, 0}, {"v3probe", nullptr, 0, 0, 128, 0, true},
    {"v3plain", nullptr, 0, 0, 128, 1}, {"v3probeplain", nullptr, 0, 0, 128, 1, true},  // ring = 1 here: plain loads
    {"read", nullptr, 0, 0, 128, 2, true},  // ring = 2 here: read_kernel over the codes
};
using KFn3 = void (*)(const gemv3::Params);
template <int G, bool PR, bool PL = false, bool SMR = true>
static KFn3 v3_fn_g(int kwm, int U, int ns) {
  if (U == 2) {
    if (kwm == 4 && ns == 1) return &gemv3::gemv_v3_kernel<G, 4, 2, 1, PR, PL, SMR>;
    if (kwm == 4 && ns == 2) return &gemv3::gemv_v3_kernel<G, 4, 2, 2, PR, PL, SMR>;
    if (kwm == 2 && ns == 2) return &gemv3::gemv_v3_kernel<G, 2, 2, 2, PR, PL, SMR>;
    if (kwm == 1 && ns == 4) return &gemv3::gemv_v3_kernel<G, 1, 2, 4, PR, PL, SMR>;
    return nullptr;
  }
  if (kwm == 4 && ns == 4) return &gemv3::gemv_v3_kernel<G, 4, 1, 4, PR, PL, SMR>;
  if (kwm == 4 && ns == 2) return &gemv3::gemv_v3_kernel<G, 4, 1, 2, PR, PL, SMR>;
  if (kwm == 4 && ns == 1) return &gemv3::gemv_v3_kernel<G, 4, 1, 1, PR, PL, SMR>;
  if (kwm == 2 && ns == 8) return &gemv3::gemv_v3_kernel<G, 2, 1, 8, PR, PL, SMR>;
  if (kwm == 2 && ns == 4) return &gemv3::gemv_v3_kernel<G, 2, 1, 4, PR, PL, SMR>;
  if (kwm == 2 && ns == 2) return &gemv3::gemv_v3_kernel<G, 2, 1, 2, PR, PL, SMR>;
  if (kwm == 1 && ns == 8) return &gemv3::gemv_v3_kernel<G, 1, 1, 8, PR, PL, SMR>;
  return nullptr;
}
// plain: the weight loads without the L1::no_allocate / L2 evict_first hints (a diagnostic, G = 128 only)
static KFn3 v3_fn(int g, bool probe, int kwm, int U, int ns, bool plain = false, bool reg = false) {
  if (reg) return g == 128 && !probe && !plain ? v3_fn_g<128, false, false, false>(kwm, U, ns) : nullptr;
  if (plain) return g == 128 ? (probe ? v3_fn_g<128, true, true>(kwm, U, ns) : v3_fn_g<128, false, true>(kwm, U, ns)) : nullptr;
  if (probe) return g == 128 ? v3_fn_g<128, true>(kwm, U, ns) : nullptr;
  return g == 128 ? v3_fn_g<128, false>(kwm, U, ns) : g == 64 ? v3_fn_g<64, false>(kwm, U, ns) : v3_fn_g<32, false>(kwm, U, ns);
}
static const Kernel* kernel_named(const char* n) {
  for (const Kernel& k : kV3Kernels)
    if (!std::strcmp(k.name, n)) return &k;
  for (const Kernel& k : kKernels)
    if (!std::strcmp(k.name, n)) return &k;
  std::fprintf(stderr, "no kernel %s\n", n);
  std::exit(2);
}

// ------------------------------------------------------------------ host data
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static double uni() { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }
static double normal() {
  const double u = uni() + 1e-300, v = uni();
  return std::sqrt(-2 * std::log(u)) * std::cos(6.283185307179586 * v);
}
static uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
static float bf2f(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Shape {
  const char* name;
  int n, k;
  int mode;  // gemv::Mode of GLM-4's decode: qkv store (+norm, bias), o accumulate, gate_up swiglu (+norm), down
  bool norm, bias;  // accumulate, output store (+norm)
};
static const Shape kShapes[] = {
    {"qkv", 4608, 4096, gemv::kStore, true, true},        {"o", 4096, 4096, gemv::kAccumulate, false, false},
    {"gate_up", 27392, 4096, gemv::kSwiGlu, true, false}, {"down", 4096, 13696, gemv::kAccumulate, false, false},
    {"output", 151552, 4096, gemv::kStore, true, false},
};

struct Weights {  // one shape, one group size: host copy (layout 1) + C device copies
  int n, k, g, copies;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> scales, zeros, normw, bias;
  std::vector<uint8_t*> d_codes;
  std::vector<uint16_t*> d_scales, d_zeros;
  uint16_t *d_norm = nullptr, *d_bias = nullptr;
  int64_t bytes() const { return int64_t(n) * k / 2 + 2 * int64_t(n) * (k / g) * 2; }
};
static Weights make_weights(int n, int k, int g, int copies, int cb) {
  Weights w;
  w.n = n;
  w.k = k;
  w.g = g;
  w.copies = copies;
  w.codes.resize(size_t(n) * k / 2);
  for (size_t i = 0; i < w.codes.size(); i += 8) {
    const uint64_t r = rnd();
    std::memcpy(&w.codes[i], &r, std::min<size_t>(8, w.codes.size() - i));
  }
  const size_t ng = size_t(n) * (k / g);
  w.scales.resize(ng);
  w.zeros.resize(ng);
  for (size_t i = 0; i < ng; ++i) {
    w.scales[i] = f2bf(static_cast<float>(cb ? 0.02 + 0.02 * uni() : 0.002 + 0.02 * uni()));
    w.zeros[i] = f2bf(static_cast<float>(cb ? 0.05 * (uni() - 0.5) : 15 * uni()));
  }
  w.normw.resize(k);
  for (int i = 0; i < k; ++i) w.normw[i] = f2bf(static_cast<float>(1 + 0.5 * normal()));
  w.bias.resize(n);
  for (int i = 0; i < n; ++i) w.bias[i] = f2bf(static_cast<float>(0.3 * normal()));
  for (int c = 0; c < copies; ++c) {
    uint8_t* dc;
    uint16_t *ds, *dz;
    CK(cudaMalloc(&dc, w.codes.size()));
    CK(cudaMalloc(&ds, ng * 2));
    CK(cudaMalloc(&dz, ng * 2));
    if (c == 0) {
      CK(cudaMemcpy(dc, w.codes.data(), w.codes.size(), cudaMemcpyHostToDevice));
      CK(cudaMemcpy(ds, w.scales.data(), ng * 2, cudaMemcpyHostToDevice));
      CK(cudaMemcpy(dz, w.zeros.data(), ng * 2, cudaMemcpyHostToDevice));
    } else {
      CK(cudaMemcpy(dc, w.d_codes[0], w.codes.size(), cudaMemcpyDeviceToDevice));
      CK(cudaMemcpy(ds, w.d_scales[0], ng * 2, cudaMemcpyDeviceToDevice));
      CK(cudaMemcpy(dz, w.d_zeros[0], ng * 2, cudaMemcpyDeviceToDevice));
    }
    w.d_codes.push_back(dc);
    w.d_scales.push_back(ds);
    w.d_zeros.push_back(dz);
  }
  CK(cudaMalloc(&w.d_norm, size_t(k) * 2));
  CK(cudaMalloc(&w.d_bias, size_t(n) * 2));
  CK(cudaMemcpy(w.d_norm, w.normw.data(), size_t(k) * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(w.d_bias, w.bias.data(), size_t(n) * 2, cudaMemcpyHostToDevice));
  return w;
}
static void free_weights(Weights& w) {
  for (int c = 0; c < w.copies; ++c) {
    CK(cudaFree(w.d_codes[c]));
    CK(cudaFree(w.d_scales[c]));
    CK(cudaFree(w.d_zeros[c]));
  }
  CK(cudaFree(w.d_norm));
  CK(cudaFree(w.d_bias));
}
// W[n][k] of the host copy through the layout's index functions (core/int4_layout.h).
static double weight_at(const Weights& w, int cb, int64_t n, int64_t k) {
  bool high = false;
  const uint8_t b = w.codes[int4_tiled_code_byte(n, k, w.k, &high)];
  const int q = high ? b >> 4 : b & 15;
  const int64_t si = int4_tiled_group_index(n, k / w.g, w.k / w.g);
  const float v = int4_code_value(cb, q);
  return static_cast<double>((v - bf2f(w.zeros[si])) * bf2f(w.scales[si]));
}

// ------------------------------------------------------------------ running one variant
struct Variant {
  std::string name;
  const Kernel* kern;
  gemv::Plan plan;
  bool pdl;
  bool plain;  // store, no norm, no bias (the bare GEMV, comparable with tinygemm)
  bool v3 = false;  // gemv_v3.cuh: p3 and fn3 instead of plan
  gemv3::Plan p3{};
  KFn3 fn3 = nullptr;
  int force_c = 0, ns_div = 1, force_s = 0;  // v3 variants: pinned C, ring depth divided (a shallower ring), pinned S
  int ns_mul = 1;       // v3 variants: ring depth multiplied (a deeper ring)
  bool readfloor = false;  // not a GEMV: read_kernel over the same codes (this size's streaming floor here)
  bool v3reg = false;   // v3 variants: the register ring (SMRING false)
};

static int g_sms = 0, g_major = 0, g_smem_optin = 0, g_smem_sm = 0;
static float* g_ws = nullptr;         // v3 split-K workspace (4M floats) and tickets (zero at rest)
static unsigned* g_tickets = nullptr;
constexpr int64_t kWsFloats = int64_t(4) << 20, kTickets = 1 << 16;

// The v3 plan and kernel of a shape (and of a row view: same force_c / ns_div).
static bool plan_v3_variant(const Shape& s, Variant* v) {
  const bool swiglu = !v->plain && s.mode == gemv::kSwiGlu;
  v->p3 = gemv3::plan_v3(s.n, s.k, swiglu, g_sms, v->force_c, v->force_s);
  if (!v->p3.valid) return false;
  v->p3.ns = std::max(1, v->p3.ns / v->ns_div) * v->ns_mul;
  v->fn3 = v3_fn(v->kern->g, v->kern->probe, v->p3.kwm, swiglu ? 2 : 1, v->p3.ns, v->kern->ring == 1, v->v3reg);
  if (!v->fn3) return false;
  const int64_t nu = swiglu ? s.n / 32 : s.n / 16;
  if (gemv3::ws_floats(nu, swiglu ? 2 : 1, v->p3.C) > kWsFloats || nu > kTickets) return false;
  const int smem = gemv3::smem_bytes(v->p3, 8, swiglu ? 2 : 1, !v->v3reg);
  if (smem > g_smem_optin) return false;
  CK(cudaFuncSetAttribute(reinterpret_cast<const void*>(v->fn3), cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  return true;
}

static bool plan_variant(const Shape& s, const Kernel* kern, bool swiglu, int force_cl, int force_rt, gemv::Plan* out) {
  // the most dynamic shared memory this kernel may use: the opt-in limit minus its static shared memory (NF4's
  // table), as the addon asks for it (cuda/util.cuh)
  const int cap = glm4::cuda::allow_dynamic_smem(reinterpret_cast<const void*>(kern->fn), g_smem_optin);
  auto occ = [&](int threads, int smem) {
    int per = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, reinterpret_cast<const void*>(kern->fn), threads, smem));
    return per;
  };
  return gemv::choose_plan(s.n, s.k, swiglu, g_sms, g_major, cap, g_smem_sm, occ, out, force_cl, force_rt, kern->ring, kern->g);
}

static gemv::Params params_for(const Shape& s, const Weights& w, const Variant& v, int copy, const float* x, float* out, int M) {
  gemv::Params p{};
  p.x = x;
  p.codes = w.d_codes[copy];
  p.scales = w.d_scales[copy];
  p.zeros = w.d_zeros[copy];
  const bool plain = v.plain;
  p.bias_bf16 = (!plain && s.bias) ? w.d_bias : nullptr;
  p.norm_bf16 = (!plain && s.norm) ? w.d_norm : nullptr;
  p.eps = 1.5625e-7f;
  p.out = out;
  p.M = M;
  p.N = s.n;
  p.K = s.k;
  p.mode = plain ? gemv::kStore : s.mode;
  p.cfg = v.plan.cfg;
  return p;
}

__global__ void read_kernel(const uint4* __restrict__ p, int64_t n, uint32_t* sink);
static uint32_t* g_sink = nullptr;
static void launch(const Variant& v, const gemv::Params& p, cudaStream_t st) {
  if (v.readfloor) {
    read_kernel<<<g_sms * 4, 512, 0, st>>>(reinterpret_cast<const uint4*>(p.codes), int64_t(p.N) * p.K / 32, g_sink);
    CK(cudaGetLastError());
    return;
  }
  if (v.v3) {
    gemv3::Params q{};
    q.x = p.x;
    q.codes = p.codes;
    q.scales = p.scales;
    q.zeros = p.zeros;
    q.bias_f32 = p.bias_f32;
    q.bias_bf16 = p.bias_bf16;
    q.norm_f32 = p.norm_f32;
    q.norm_bf16 = p.norm_bf16;
    q.out = p.out;
    q.ws = g_ws;
    q.tickets = g_tickets;
    q.eps = p.eps;
    q.M = p.M;
    q.N = p.N;
    q.K = p.K;
    q.mode = p.mode;
    q.C = v.p3.C;
    q.S = v.p3.S;
    cudaLaunchConfig_t lc = {};
    lc.gridDim = dim3(v.p3.blocks, 1, 1);
    lc.blockDim = dim3(gemv3::kThreads, 1, 1);
    lc.dynamicSmemBytes = gemv3::smem_bytes(v.p3, p.M, p.mode == gemv::kSwiGlu ? 2 : 1, !v.v3reg);
    lc.stream = st;
    cudaLaunchAttribute at[1];
    int na = 0;
    if (v.pdl) {
      at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      at[na].val.programmaticStreamSerializationAllowed = 1;
      ++na;
    }
    lc.attrs = at;
    lc.numAttrs = na;
    CK(cudaLaunchKernelEx(&lc, v.fn3, q));
    return;
  }
  const int kt = p.K / 64;
  const int smem = gemv::Smem::of(p.M, (kt + v.plan.cfg.cl - 1) / v.plan.cfg.cl, v.plan.cfg).total;
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(v.plan.cfg.cl, v.plan.rowgroups, 1);
  lc.blockDim = dim3(v.plan.cfg.warps() * 32, 1, 1);
  lc.dynamicSmemBytes = smem;
  lc.stream = st;
  cudaLaunchAttribute at[2];
  int na = 0;
  if (v.plan.cfg.cl > 1) {
    at[na].id = cudaLaunchAttributeClusterDimension;
    at[na].val.clusterDim.x = v.plan.cfg.cl;
    at[na].val.clusterDim.y = 1;
    at[na].val.clusterDim.z = 1;
    ++na;
  }
  if (v.pdl) {
    at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[na].val.programmaticStreamSerializationAllowed = 1;
    ++na;
  }
  lc.attrs = at;
  lc.numAttrs = na;
  CK(cudaLaunchKernelEx(&lc, v.kern->fn, p));
}

// Reference of one output (token m, output column j) in float64.
static double reference(const Shape& s, const Weights& w, const Variant& v, const std::vector<float>& x, const std::vector<float>& base,
                        int M, int m, int j) {
  const bool plain = v.plain, norm = !plain && s.norm, bias = !plain && s.bias;
  const int mode = plain ? gemv::kStore : s.mode;
  double r = 1;
  if (norm) {
    double ss = 0;
    for (int k = 0; k < s.k; ++k) ss += double(x[size_t(m) * s.k + k]) * x[size_t(m) * s.k + k];
    r = 1 / std::sqrt(ss / s.k + double(1.5625e-7f));
  }
  auto y = [&](int n) {
    double acc = 0;
    for (int k = 0; k < s.k; ++k) {
      const double xv = double(x[size_t(m) * s.k + k]) * (norm ? double(bf2f(w.normw[k])) * r : 1.0);
      acc += xv * weight_at(w, v.kern->cb, n, k);
    }
    return acc + (bias ? double(bf2f(w.bias[n])) : 0.0);
  };
  if (mode == gemv::kSwiGlu) {
    const double g = y(j), u = y(j + s.n / 2);
    return g / (1 + std::exp(-g)) * u;
  }
  const double v0 = y(j);
  return mode == gemv::kAccumulate ? base[size_t(m) * s.n + j] + v0 : v0;
}

struct Check {
  bool ok;
  double err;
  std::string why;
};

// Fresh random x, poisoned (or random-base) output, one call, sampled outputs vs float64, every output finite.
static Check validate(const Shape& s, const Weights& w, const Variant& v, int M, float* d_x, float* d_out, cudaStream_t st) {
  const int nout = (!v.plain && s.mode == gemv::kSwiGlu) ? s.n / 2 : s.n;
  const bool acc = !v.plain && s.mode == gemv::kAccumulate;
  std::vector<float> x(size_t(M) * s.k), base(size_t(M) * nout, 0.f);
  for (auto& e : x) e = static_cast<float>(normal() * ((!v.plain && s.norm) ? 3 : 1));
  CK(cudaMemcpyAsync(d_x, x.data(), x.size() * 4, cudaMemcpyHostToDevice, st));
  if (acc) {
    for (auto& e : base) e = static_cast<float>(normal() * 2);
    CK(cudaMemcpyAsync(d_out, base.data(), base.size() * 4, cudaMemcpyHostToDevice, st));
  } else {
    CK(cudaMemsetAsync(d_out, 0xff, base.size() * 4, st));  // NaN
  }
  launch(v, params_for(s, w, v, 0, d_x, d_out, M), st);
  CK(cudaStreamSynchronize(st));
  CK(cudaGetLastError());
  std::vector<float> out(size_t(M) * nout);
  CK(cudaMemcpy(out.data(), d_out, out.size() * 4, cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < out.size(); ++i)
    if (!std::isfinite(out[i])) return {false, NAN, "non-finite output at " + std::to_string(i) + " (unwritten or NaN)"};
  double num = 0, den = 0;
  const int samples = 48;
  for (int i = 0; i < samples; ++i) {
    // spread over the rows, including the first and last and both rows of a tile's halves
    const int j = i == 0 ? 0 : i == 1 ? nout - 1 : int((int64_t(i) * 7919 * 16 + (i % 16)) % nout);
    for (int m = 0; m < M; ++m) {
      const double ref = reference(s, w, v, x, base, M, m, j), got = out[size_t(m) * nout + j];
      num += (got - ref) * (got - ref);
      den += ref * ref;
    }
  }
  const double err = num / std::max(den, 1e-300);
  // TOL.matmul (test/helpers/cases.ts): x rounded to bf16 gives ~3e-6; 5e-5 leaves >= 3x; a structural bug >= 1e-3
  return {err <= 5e-5, err, err <= 5e-5 ? "" : "normalized squared error above 5e-5"};
}

// Row m of an M = 8 call equals the same row run alone (M = 1), bit for bit, over every output.
static Check batch_equals_solo(const Shape& s, const Weights& w, const Variant& v, float* d_x, float* d_out, float* d_out1,
                               cudaStream_t st) {
  const int nout = (!v.plain && s.mode == gemv::kSwiGlu) ? s.n / 2 : s.n;
  if (!v.plain && s.mode == gemv::kAccumulate) return {true, 0, "skipped (accumulate)"};
  std::vector<float> x(size_t(8) * s.k);
  for (auto& e : x) e = static_cast<float>(normal());
  CK(cudaMemcpy(d_x, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  launch(v, params_for(s, w, v, 0, d_x, d_out, 8), st);
  std::vector<float> a(size_t(8) * nout), b(nout);
  for (int m : {0, 3, 7}) {
    launch(v, params_for(s, w, v, 0, d_x + size_t(m) * s.k, d_out1, 1), st);
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(a.data(), d_out, a.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), d_out1, b.size() * 4, cudaMemcpyDeviceToHost));
    if (std::memcmp(&a[size_t(m) * nout], b.data(), size_t(nout) * 4) != 0)
      return {false, 0, "row " + std::to_string(m) + " of M=8 differs from M=1"};
  }
  return {true, 0, ""};
}

// Row views: rows [r0, r0 + nv) run as a weight of their own (the engine's q, k, v views of the fused qkv weight)
// give bit for bit the rows of the whole weight's call (family A plans: a row's arithmetic depends on K only).
static Check views_equal_whole(const Shape& s, const Weights& w, const Variant& v, float* d_x, float* d_out, float* d_out1,
                               cudaStream_t st) {
  std::vector<float> x(size_t(3) * s.k);
  for (auto& e : x) e = static_cast<float>(normal());
  CK(cudaMemcpy(d_x, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  Variant whole = v;
  whole.plain = true;
  launch(whole, params_for(s, w, whole, 0, d_x, d_out, 3), st);
  const int kg = s.k / w.g;
  for (const int r0 : {s.n - 512, s.n - 256}) {
    const int nv = 256;
    Shape sv = s;
    sv.n = nv;
    Variant vv = whole;
    if (v.v3 ? !plan_v3_variant(sv, &vv) : !plan_variant(sv, v.kern, false, 0, 0, &vv.plan)) return {false, 0, "no plan for the view"};
    gemv::Params p = params_for(sv, w, vv, 0, d_x, d_out1, 3);
    p.codes += int64_t(r0) * s.k / 2;
    p.scales += int64_t(r0) * kg;
    p.zeros += int64_t(r0) * kg;
    launch(vv, p, st);
    CK(cudaStreamSynchronize(st));
    std::vector<float> a(size_t(3) * s.n), b(size_t(3) * nv);
    CK(cudaMemcpy(a.data(), d_out, a.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(b.data(), d_out1, b.size() * 4, cudaMemcpyDeviceToHost));
    for (int m = 0; m < 3; ++m)
      if (std::memcmp(&a[size_t(m) * s.n + r0], &b[size_t(m) * nv], size_t(nv) * 4) != 0)
        return {false, 0, "rows " + std::to_string(r0) + "+256 as a view differ from the whole weight's (token " + std::to_string(m) + ")"};
  }
  return {true, 0, ""};
}

// Per-call microseconds: best of 5 replays of a graph of R calls rotating over the weight copies.
static double time_calls(const Shape& s, const Weights& w, const Variant& v, int M, float* d_x, float* d_out, cudaStream_t st) {
  const int R = w.copies >= 8 ? std::max(80, 2 * w.copies) : std::max(8, 4 * w.copies);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int r = 0; r < R; ++r) launch(v, params_for(s, w, v, r % w.copies, d_x, d_out, M), st);
  CK(cudaStreamEndCapture(st, &graph));
  CK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  double best = 1e30;
  for (int it = 0; it < 7; ++it) {
    CK(cudaEventRecord(e0, st));
    CK(cudaGraphLaunch(exec, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (it >= 2) best = std::min(best, double(ms));
  }
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  CK(cudaGraphExecDestroy(exec));
  CK(cudaGraphDestroy(graph));
  return best * 1000.0 / R;
}

__global__ void read_kernel(const uint4* __restrict__ p, int64_t n, uint32_t* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *sink = acc;
}

int main(int argc, char** argv) {
  const char* json_path = argc > 1 ? argv[1] : "gemv.json";
  const char* only = argc > 2 ? argv[2] : nullptr;  // one shape (scripts/gpu/gemv2.sh runs a process a shape)
  int dev = 0;
  CK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  g_sms = prop.multiProcessorCount;
  g_major = prop.major;
  CK(cudaDeviceGetAttribute(&g_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CK(cudaDeviceGetAttribute(&g_smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  std::printf("device %s, %d SMs, L2 %d MB, smem/block opt-in %d KB\n", prop.name, g_sms, prop.l2CacheSize >> 20, g_smem_optin >> 10);
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

  // ---- ceilings: device copy (read + write) and a streaming read, 1 GiB
  const int64_t cb = int64_t(1) << 30;
  void *src, *dst;
  uint32_t* sink;
  CK(cudaMalloc(&src, cb));
  CK(cudaMalloc(&dst, cb));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMemset(src, 1, cb));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  double copy_ms = 1e30, read_ms = 1e30;
  for (int it = 0; it < 6; ++it) {
    float ms;
    CK(cudaEventRecord(e0, st));
    CK(cudaMemcpyAsync(dst, src, cb, cudaMemcpyDeviceToDevice, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (it) copy_ms = std::min(copy_ms, double(ms));
    CK(cudaEventRecord(e0, st));
    read_kernel<<<g_sms * 8, 512, 0, st>>>(static_cast<const uint4*>(src), cb / 16, sink);
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    if (it) read_ms = std::min(read_ms, double(ms));
  }
  const double copy_gbs = 2.0 * cb / (copy_ms * 1e-3) / 1e9, read_gbs = double(cb) / (read_ms * 1e-3) / 1e9;
  std::printf("copy bandwidth (read + write) %.0f GB/s, streaming read %.0f GB/s\n", copy_gbs, read_gbs);
  CK(cudaFree(src));
  CK(cudaFree(dst));

  CK(cudaMalloc(&g_ws, size_t(kWsFloats) * 4));
  CK(cudaMalloc(&g_sink, 4));
  CK(cudaMalloc(&g_tickets, size_t(kTickets) * 4));
  CK(cudaMemset(g_tickets, 0, size_t(kTickets) * 4));
  float *d_x, *d_out, *d_out1;
  CK(cudaMalloc(&d_x, size_t(8) * 13696 * 4));
  CK(cudaMalloc(&d_out, size_t(8) * 151552 * 4));
  CK(cudaMalloc(&d_out1, size_t(8) * 151552 * 4));

  FILE* js = std::fopen(json_path, "w");
  std::fprintf(js, "{\"device\": \"%s\", \"sms\": %d, \"copy_GBs\": %.1f, \"read_GBs\": %.1f, \"results\": [\n", prop.name, g_sms,
               copy_gbs, read_gbs);
  bool first = true;
  int failures = 0;
  std::printf("\n%-8s %-22s %2s %9s %8s %7s %7s  %s\n", "shape", "variant", "M", "us", "GB/s", "%copy", "%read", "plan / check");

  for (const Shape& s : kShapes) {
    if (only && std::strcmp(only, s.name)) continue;
    const bool swiglu = s.mode == gemv::kSwiGlu;
    // the variants of this shape: the rule's plan with 4 and 8 loads in flight, without PDL, the bare GEMV, and the
    // neighbouring decompositions (cluster size, row tiles a block)
    struct Spec {
      std::string name;
      const char* kern;
      int cl, rt;
      bool pdl, plain;
      int force_c = 0, ns_div = 1, force_s = 0;  // v3 only
      int ns_mul = 1;
      bool reg = false;
    };
    // v3 first (a sticky CUDA error of a later variant cannot lose them), then the old kernel (the library default,
    // GLM4_GEMV_PLAN=old) and the ring kernel ("ring" = GLM4_GEMV_PLAN=ring, which stopped the H200 with an illegal
    // instruction in the final run of 2026-12-03: last). v3: the plan's rule, without PDL, the bare GEMV, a ring half
    // as deep, the bandwidth probe (v3's loads, no arithmetic), C pinned to the neighbour, group sizes 64 / 32.
    std::vector<Spec> specs = {{"v3", "v3", 0, 0, true, false}, {"v3-nopdl", "v3", 0, 0, false, false},
                               {"v3-plain", "v3", 0, 0, true, true}, {"v3-half", "v3", 0, 0, true, false, 0, 2},
                               {"v3probe", "v3probe", 0, 0, true, false}, {"v3-nohint", "v3plain", 0, 0, true, false},
                               {"v3probe-nohint", "v3probeplain", 0, 0, true, false},
                               {"v3-deep", "v3", 0, 0, true, false, 0, 1, 0, 2},          // ring twice as deep
                               {"v3-reg", "v3", 0, 0, true, false, 0, 1, 0, 1, true},     // run 1's register ring
                               {"v3-reg-half", "v3", 0, 0, true, false, 0, 2, 0, 1, true},
                               {"readfloor", "read", 0, 0, false, false}};
    {
      const gemv3::Plan b3 = gemv3::plan_v3(s.n, s.k, swiglu, g_sms);
      if (b3.valid && b3.C > 1) specs.push_back({"v3-c" + std::to_string(b3.C * 2), "v3", 0, 0, true, false, b3.C * 2});
      if (b3.valid && b3.C > 1) specs.push_back({"v3-c" + std::to_string(b3.C / 2), "v3", 0, 0, true, false, b3.C / 2});
      // no split K at all (no tickets; rows alone balance the SMs, 2-3 row tiles a block on qkv / o)
      if (b3.valid && b3.C > 2) specs.push_back({"v3-c1", "v3", 0, 0, true, false, 1});
      // every warp on one row at a time (R = 1): finer row balance, one tile a warp a row tile on qkv / o
      if (b3.valid && b3.S < 16) specs.push_back({"v3-s16", "v3", 0, 0, true, false, 0, 1, 16});
    }
    if (!std::strcmp(s.name, "qkv") || !std::strcmp(s.name, "gate_up")) {
      specs.push_back({"v3g64", "v3g64", 0, 0, true, false});
      specs.push_back({"v3g32", "v3g32", 0, 0, true, false});
    }
    specs.push_back({"old", "d4", 0, 0, true, false});
    specs.push_back({"ring", "r8", 0, 0, true, false});
    // weights per group size / codebook (the harness's random data; copies so that the rotation misses L2)
    int64_t bytes128 = int64_t(s.n) * s.k / 2 + int64_t(s.n) * (s.k / 128) * 4;
    const int copies = int(std::max<int64_t>(2, std::min<int64_t>(32, (int64_t(400) << 20) / bytes128 + 1)));
    std::map<int, Weights> wcache;  // one set of weights per group size / codebook, shared by the shape's variants
    for (const Spec& sp : specs) {
      const Kernel* kern = kernel_named(sp.kern);
      Variant v{sp.name, kern, {}, sp.pdl, sp.plain};
      v.v3 = kern->fn == nullptr && kern->ring != 2;
      v.readfloor = kern->ring == 2;
      v.force_c = sp.force_c;
      v.ns_div = sp.ns_div;
      v.force_s = sp.force_s;
      v.ns_mul = sp.ns_mul;
      v.v3reg = sp.reg;
      if (!v.readfloor && (v.v3 ? !plan_v3_variant(s, &v) : !plan_variant(s, kern, swiglu, sp.cl, sp.rt, &v.plan))) {
        std::printf("%-8s %-22s no plan\n", s.name, sp.name.c_str());
        continue;
      }
      if (sp.name == "auto-contig") v.plan.cfg.order = 0;
      const int wkey = kern->cb * 1000 + kern->g;
      if (!wcache.count(wkey)) wcache[wkey] = make_weights(s.n, s.k, kern->g, copies, kern->cb);
      const Weights& w = wcache[wkey];
      const int nout = (!v.plain && swiglu) ? s.n / 2 : s.n;
      char plan[160];
      if (v.readfloor)
        std::snprintf(plan, sizeof plan, "read_kernel over the same codes, %d blocks x 512 (not a GEMV)", g_sms * 4);
      else if (v.v3)
        std::snprintf(plan, sizeof plan, "v3 G%d C %d S %d R %d kwm %d ns %d, %d blocks x %d warps", kern->g, v.p3.C, v.p3.S,
                      gemv3::kWarps / v.p3.S, v.p3.kwm, v.p3.ns, v.p3.blocks, gemv3::kWarps);
      else
        std::snprintf(plan, sizeof plan, "%s%s rt %d ks %d cl %d upw %d, %d blocks x %d warps%s", kern->name,
                      kern->ring && !v.plan.cfg.order ? " contiguous" : "", v.plan.cfg.rt,
                      v.plan.cfg.ks, v.plan.cfg.cl, v.plan.cfg.upw, v.plan.rowgroups * v.plan.cfg.cl, v.plan.cfg.warps(),
                      v.plan.one_wave ? "" : " (more than one wave)");
      // validate first: M = 1, 3, 8 (and batched == solo for the rule's plan)
      bool ok = true;
      std::string why;
      double err1 = 0;
      if (kern->probe) std::strncat(plan, " [bandwidth probe: no arithmetic, not validated, not a GEMV]", sizeof plan - std::strlen(plan) - 1);
      for (int M : {1, 3, 8}) {
        if (kern->probe) break;
        const Check c = validate(s, w, v, M, d_x, d_out, st);
        err1 = std::max(err1, c.err);
        if (!c.ok) {
          ok = false;
          why = "M=" + std::to_string(M) + ": " + c.why + " (err " + std::to_string(c.err) + ")";
          break;
        }
      }
      if (ok && (sp.name == "v3" || sp.name == "v3-plain" || sp.name.rfind("v3-c", 0) == 0 || sp.name == "v3-s16" || sp.name == "v3g32" ||
                 sp.name == "v3g64" || sp.name == "ring")) {
        Check c = batch_equals_solo(s, w, v, d_x, d_out, d_out1, st);
        if (c.ok && !std::strcmp(s.name, "qkv")) c = views_equal_whole(s, w, v, d_x, d_out, d_out1, st);
        if (!c.ok) {
          ok = false;
          why = c.why;
        }
      }
      if (!ok) {
        ++failures;
        std::printf("%-8s %-22s    INVALID: %s   [%s]\n", s.name, sp.name.c_str(), why.c_str(), plan);
        std::fprintf(js, "%s  {\"shape\": \"%s\", \"variant\": \"%s\", \"valid\": false, \"why\": \"%s\", \"plan\": \"%s\"}", first ? "" : ",\n",
                     s.name, sp.name.c_str(), why.c_str(), plan);
        first = false;
        continue;
      }
      for (int M : {1, 2, 4, 8}) {
        if (sp.name != "v3" && M != 1 && M != 8) continue;  // variants: M = 1 and 8
        const double us = time_calls(s, w, v, M, d_x, d_out, st);
        const double bytes = double(w.bytes()) + double(M) * s.k * 4 + double(M) * nout * 4 * ((!v.plain && s.mode == gemv::kAccumulate) ? 2 : 1);
        const double gbs = bytes / (us * 1e-6) / 1e9;
        char status[64];
        if (kern->probe) std::snprintf(status, sizeof status, "probe");
        else std::snprintf(status, sizeof status, "valid, err %.1e", err1);
        std::printf("%-8s %-22s %2d %9.2f %8.0f %6.1f%% %6.1f%%  %s (%s)\n", s.name, sp.name.c_str(), M, us, gbs,
                    100 * gbs / copy_gbs, 100 * gbs / read_gbs, plan, status);
        std::fprintf(js,
                     "%s  {\"shape\": \"%s\", \"n\": %d, \"k\": %d, \"variant\": \"%s\", \"M\": %d, \"us\": %.3f, \"GBs\": %.1f, "
                     "\"share_copy\": %.4f, \"share_read\": %.4f, \"bytes\": %.0f, \"plan\": \"%s\", \"valid\": true, \"err\": %.3e}",
                     first ? "" : ",\n", s.name, s.n, s.k, sp.name.c_str(), M, us, gbs, gbs / copy_gbs, gbs / read_gbs, bytes, plan,
                     err1);
        first = false;
      }
    }
    for (auto& e : wcache) free_weights(e.second);
  }
  std::fprintf(js, "\n], \"failures\": %d}\n", failures);
  std::fclose(js);
  std::printf("\n%d variant(s) failed validation\n", failures);
  return failures ? 1 : 0;
}
