// Kernel harness for csrc/cuda/elt_kernels.cuh (the kernels the ops run): rotary_kv_write_qkv, rmsnorm /
// add_rmsnorm (register form), swiglu (f32 and bf16 gate_up), each in v1 (the kernels of run12's profile) and v2.
// 1. validation, before anything is timed: every variant on fresh inputs with poisoned outputs, odd and GLM-4 sizes;
//    v2 against v1 bit for bit (outputs, the residual x, both caches incl. rows that must stay untouched), and every
//    variant against a float64 reference on the host (normwise relative error; NaN fails).
// 2. timing: T = 2048 (a prefill chunk; two buffer sets alternated, so the inputs come from DRAM) and T = 64 / 32 (a
//    batched decode step; one set, L2-warm like the GEMM output they follow), as CUDA graphs of back-to-back launches
//    of one variant; GB/s = bytes read + written over the time, beside a float4 copy kernel moving the same bytes in
//    the same process, an empty kernel of the same grid (the launch floor), and cudaMemcpy's copy bandwidth.
//    Then a "chain": the small ops of 40 layers in a row (rmsnorm, rotary, add_rmsnorm, swiglu) old vs new.
//
//   nvcc -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -Icsrc \
//        bench/kernels/elt_bench.cu -o bench/kernels/bin/elt_bench
//   bench/kernels/bin/elt_bench [--json FILE] [--skip NAME,...] [--no-time] [--ts 2048,64,32]
// Before each timed variant a line "@variant NAME" is printed and flushed: if a kernel faults (the process dies),
// scripts/gpu/elt.sh reruns with that variant skipped.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "cuda/elt_kernels.cuh"

using namespace glm4::cuda;
using namespace glm4::cuda::elt;

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

// ------------------------------------------------------------------------------------------- inputs
__host__ __device__ inline uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return static_cast<uint32_t>(x);
}
__host__ __device__ inline float uval(uint64_t seed, uint64_t i, float amp) {  // uniform in [-amp, amp)
  return (static_cast<float>(hash32(seed * 0x9e3779b97f4a7c15ULL + i) >> 8) * (1.f / 16777216.f) * 2.f - 1.f) * amp;
}
__global__ void fill_f32(float* p, size_t n, uint64_t seed, float amp, float bias) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    p[i] = uval(seed, i, amp) + bias;
}
__global__ void fill_bf16(Bf16* p, size_t n, uint64_t seed, float amp, float bias) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x)
    p[i].v = f_to_bf16_bits(uval(seed, i, amp) + bias);
}
__global__ void copy_kernel(float4* __restrict__ dst, const float4* __restrict__ src, size_t n4) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n4; i += size_t{gridDim.x} * blockDim.x)
    dst[i] = __ldcs(src + i);
}
__global__ void empty_kernel(int) {
  pdl_wait();
  pdl_trigger();
}
void fill(float* p, size_t n, uint64_t seed, float amp = 1.f, float bias = 0.f) {
  fill_f32<<<1024, 256>>>(p, n, seed, amp, bias);
  CK(cudaGetLastError());
}
void fill(Bf16* p, size_t n, uint64_t seed, float amp = 1.f, float bias = 0.f) {
  fill_bf16<<<1024, 256>>>(p, n, seed, amp, bias);
  CK(cudaGetLastError());
}
template <typename T>
T* dalloc(size_t n) {
  void* p;
  CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return static_cast<T*>(p);
}
template <typename T>
std::vector<T> d2h(const T* d, size_t n) {
  std::vector<T> h(n);
  CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}
float bf(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f_to_bf16_host(float f) {  // round to nearest even (finite values)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
std::vector<double> to_f64(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }
std::vector<double> to_f64(const std::vector<Bf16>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = bf(v[i].v);
  return r;
}
// Normwise relative error; NaN or Inf anywhere gives +inf.
double nerr(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}
template <typename T>
bool same_bits(const T* a, const T* b, size_t n) {
  auto x = d2h(a, n), y = d2h(b, n);
  return std::memcmp(x.data(), y.data(), n * sizeof(T)) == 0;
}

FILE* js = nullptr;
int failures = 0;
std::vector<std::string> failed_ops;  // an op with a failing check is not timed (nor the chain)
bool op_failed(const std::string& op) {
  for (auto& f : failed_ops)
    if (op.rfind(f, 0) == 0 || (f == "rmsnorm" && op == "add_rmsnorm") || (op.rfind("chain", 0) == 0)) return true;
  return false;
}
void report(const std::string& cas, const std::string& variant, bool ok, double err, const char* what) {
  std::printf("%s %-44s %-14s %-34s err %.3g\n", ok ? "ok  " : "FAIL", cas.c_str(), variant.c_str(), what, err);
  if (!ok) {
    ++failures;
    failed_ops.push_back(cas.rfind("rotary", 0) == 0 ? "rotary" : cas.rfind("swiglu", 0) == 0 ? "swiglu" : "rmsnorm");
  }
  if (js)
    std::fprintf(js, "{\"kind\":\"validate\",\"case\":\"%s\",\"variant\":\"%s\",\"check\":\"%s\",\"ok\":%s,\"err\":%.4g}\n",
                 cas.c_str(), variant.c_str(), what, ok ? "true" : "false", std::isfinite(err) ? err : 1e300);
}

// ------------------------------------------------------------------------------------------- rotary
struct RotShape {
  int T, Hq, Hkv, D, rot;
  int64_t S;
  bool f32cache;
  float theta;
};
// ver 1: v1; 2: v2 as the op launches it (items by T); 3 / 4 / 5: v2 with 2 / 8 / 4 groups a thread (harness variants)
template <typename TI, typename KV>
cudaError_t run_rotary(int ver, bool pdl, cudaStream_t st, const RotShape& s, float* q, const TI* qkv, KV* kc, KV* vc,
                       const int32_t* pos, const int32_t* rows) {
  const int half = s.rot / 2, pairs = (s.D + 1) / 2;
  if (ver == 1) {
    const int n = (s.Hq + 2 * s.Hkv) * pairs;
    const dim3 grid(std::min((n + 255) / 256, 1024), s.T);
    return launch(rotary_qkv_v1_kernel<TI, KV>, grid, dim3(256), st, pdl, q, qkv, kc, vc, pos, rows, s.Hq, s.Hkv, s.D, pairs,
                  half, static_cast<int64_t>(s.rot), s.theta, s.S, int64_t{0});
  }
  const int n4 = (s.Hq + 2 * s.Hkv) * s.D / 4;
  const int items = ver == 2 ? rotary_v2_items(s.T) : ver == 3 ? 2 : ver == 4 ? 8 : 4;
  const dim3 grid(s.T), block(rotary_v2_threads(n4, items));
  const int64_t rot = s.rot, t0 = 0;
  if (items == 2)
    return launch(rotary_qkv_v2_kernel<TI, KV, 2>, grid, block, st, pdl, q, qkv, kc, vc, pos, rows, s.Hq, s.Hkv, s.D, half,
                  rot, s.theta, s.S, t0);
  if (items == 8)
    return launch(rotary_qkv_v2_kernel<TI, KV, 8>, grid, block, st, pdl, q, qkv, kc, vc, pos, rows, s.Hq, s.Hkv, s.D, half,
                  rot, s.theta, s.S, t0);
  return launch(rotary_qkv_v2_kernel<TI, KV, 4>, grid, block, st, pdl, q, qkv, kc, vc, pos, rows, s.Hq, s.Hkv, s.D, half,
                rot, s.theta, s.S, t0);
}

template <typename KV, typename TI = float>
void validate_rotary(const RotShape& s) {
  constexpr bool in32 = std::is_same_v<TI, float>;
  char name[128];
  std::snprintf(name, sizeof name, "rotary(T=%d,Hq=%d,Hkv=%d,D=%d,rot=%d,S=%lld,%s%s)", s.T, s.Hq, s.Hkv, s.D, s.rot,
                static_cast<long long>(s.S), s.f32cache ? "f32" : "bf16", in32 ? "" : ",qkv=bf16");
  const int W = (s.Hq + 2 * s.Hkv) * s.D, nq = s.Hq * s.D, nkv = s.Hkv * s.D;
  const size_t ncache = static_cast<size_t>(s.S) * nkv;
  // v1 on an f32 qkv is the reference; a bf16 qkv holds the same values rounded, and the f32 reference reads them widened
  TI* qin = dalloc<TI>(size_t(s.T) * W);
  fill(qin, size_t(s.T) * W, 11, 2.f);
  float* qkv = dalloc<float>(size_t(s.T) * W);
  {
    auto h = to_f64(d2h(qin, size_t(s.T) * W));
    std::vector<float> f(h.begin(), h.end());
    CK(cudaMemcpy(qkv, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
  }
  std::vector<int32_t> hp(s.T), hr(s.T);
  for (int t = 0; t < s.T; ++t) {
    hp[t] = static_cast<int32_t>(hash32(77 + t) % 8192);
    hr[t] = static_cast<int32_t>(s.S - 1 - t);  // distinct rows
  }
  if (s.T >= 3) hr[1] = -1, hr[2] = static_cast<int32_t>(s.S);  // outside the cache: skipped
  if (s.T >= 5) hp[4] = 131071;                                  // a deep position
  int32_t* pos = dalloc<int32_t>(s.T);
  int32_t* rows = dalloc<int32_t>(s.T);
  CK(cudaMemcpy(pos, hp.data(), s.T * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(rows, hr.data(), s.T * 4, cudaMemcpyHostToDevice));
  struct Out {
    float* q;
    KV *kc, *vc;
  };
  auto make = [&]() {
    Out o{dalloc<float>(size_t(s.T) * nq), dalloc<KV>(ncache), dalloc<KV>(ncache)};
    CK(cudaMemset(o.q, 0xff, size_t(s.T) * nq * 4));  // NaN
    fill(o.kc, ncache, 21);
    fill(o.vc, ncache, 22);
    return o;
  };
  Out ref = make();
  CK((run_rotary<float, KV>(1, false, 0, s, ref.q, qkv, ref.kc, ref.vc, pos, rows)));
  CK(cudaDeviceSynchronize());
  // float64 reference of q (the f32 angle, like every implementation), and of the cache rows
  auto hqkv = d2h(qkv, size_t(s.T) * W);
  auto kc0 = to_f64(d2h(ref.kc, ncache));  // after v1: checked below against the reference rows
  std::vector<double> rq(size_t(s.T) * nq), rk(size_t(s.T) * nkv);
  for (int t = 0; t < s.T; ++t)
    for (int h = 0; h < s.Hq + s.Hkv; ++h)
      for (int e = 0; e < s.D; ++e) {
        const int j = e / 2;
        const float* src = &hqkv[size_t(t) * W + h * s.D];
        double y = src[e];
        if (j < s.rot / 2) {
          const float inv = static_cast<float>(1.0 / std::pow(double(s.theta), 2.0 * j / s.rot));
          const double a = static_cast<float>(static_cast<float>(hp[t]) * inv);
          const double x0 = src[2 * j], x1 = src[2 * j + 1];
          y = (e % 2 == 0) ? x0 * std::cos(a) - x1 * std::sin(a) : x1 * std::cos(a) + x0 * std::sin(a);
        }
        if (h < s.Hq) rq[size_t(t) * nq + h * s.D + e] = y;
        else rk[size_t(t) * nkv + (h - s.Hq) * s.D + e] = y;
      }
  for (int ver : {1, 2, 3, 4, 5}) {
    for (bool pdl : {false, true}) {
      if (ver >= 2 && !rotary_v2_ok(s.D, s.rot / 2, ref.q, qin, ref.kc, ref.vc, s.f32cache, in32)) continue;
      if (ver >= 3 && !pdl) continue;
      const char* vnames[] = {"", "v1", "v2", "v2 i2", "v2 i8", "v2 i4"};
      const std::string vn = std::string(vnames[ver]) + (pdl ? " pdl" : "");
      Out o = make();
      CK((run_rotary<TI, KV>(ver, pdl, 0, s, o.q, qin, o.kc, o.vc, pos, rows)));
      CK((run_rotary<TI, KV>(ver, pdl, 0, s, o.q, qin, o.kc, o.vc, pos, rows)));  // twice: idempotent
      CK(cudaDeviceSynchronize());
      const double eq = nerr(to_f64(d2h(o.q, size_t(s.T) * nq)), rq);
      report(name, vn, eq < 1e-5, eq, "q vs float64");
      // the written cache rows vs the float64 k (bf16: the rounding of the cache), v exact
      auto kcg = to_f64(d2h(o.kc, ncache)), vcg = to_f64(d2h(o.vc, ncache));
      std::vector<double> gk, wk;
      bool vok = true;
      for (int t = 0; t < s.T; ++t) {
        if (hr[t] < 0 || hr[t] >= s.S) continue;
        for (int i = 0; i < nkv; ++i) {
          gk.push_back(kcg[size_t(hr[t]) * nkv + i]);
          wk.push_back(rk[size_t(t) * nkv + i]);
          const float vv = hqkv[size_t(t) * W + (s.Hq + s.Hkv) * s.D + i];
          const double want = s.f32cache ? vv : bf(f_to_bf16_host(vv));
          vok = vok && vcg[size_t(hr[t]) * nkv + i] == want;
        }
      }
      const double ek = nerr(gk, wk);
      report(name, vn, ek < (s.f32cache ? 1e-5 : 8e-3), ek, "k cache rows vs float64");
      report(name, vn, vok, 0, "v cache rows exact");
      if (ver >= 2 || pdl || !in32) {
        const bool b = same_bits(o.q, ref.q, size_t(s.T) * nq) && same_bits(o.kc, ref.kc, ncache) && same_bits(o.vc, ref.vc, ncache);
        report(name, vn, b, b ? 0 : 1, in32 ? "== v1 bit for bit (q, kc, vc)" : "== v1 on the f32 copy, bit for bit");
      }
      CK(cudaFree(o.q));
      CK(cudaFree(o.kc));
      CK(cudaFree(o.vc));
    }
  }
  (void)kc0;
  CK(cudaFree(ref.q));
  CK(cudaFree(ref.kc));
  CK(cudaFree(ref.vc));
  CK(cudaFree(qkv));
  CK(cudaFree(qin));
  CK(cudaFree(pos));
  CK(cudaFree(rows));
}

// ------------------------------------------------------------------------------------------- rmsnorm
template <typename TW, typename TO, bool ADD>
cudaError_t run_norm(int ver, bool pdl, cudaStream_t st, int T, int H, TO* out, float* x, const float* o, const TW* w,
                     float eps) {
  const int V = rmsnorm_vec_of(H, x, ADD ? static_cast<const void*>(o) : static_cast<const void*>(x));
  if (V == 0) return cudaErrorInvalidValue;
  return launch_rmsnorm_vec<TW, TO, ADD>(V, ver == 2, pdl, st, static_cast<unsigned>(T), out, x, o, w, eps);
}

// alias: out = x (f32 out only)
template <typename TW, typename TO, bool ADD>
void validate_norm(int T, int H, bool alias) {
  constexpr bool wf = std::is_same_v<TW, float>, of = std::is_same_v<TO, float>;
  char name[128];
  std::snprintf(name, sizeof name, "%s(T=%d,H=%d,w=%s,out=%s%s)", ADD ? "add_rmsnorm" : "rmsnorm", T, H, wf ? "f32" : "bf16",
                of ? "f32" : "bf16", alias ? ",out=x" : "");
  const size_t n = size_t(T) * H;
  const float eps = 1.5625e-7f;
  float* x0 = dalloc<float>(n);
  float* o = dalloc<float>(n);
  TW* w = dalloc<TW>(H);
  fill(x0, n, 31, 2.f);
  fill(o, n, 32, 1.5f);
  fill(w, H, 33, 0.5f, 1.f);
  CK(cudaDeviceSynchronize());
  auto hx = d2h(x0, n), ho = d2h(o, n);
  auto hw = to_f64(d2h(w, H));
  std::vector<double> sum(n), ref(n);
  for (size_t i = 0; i < n; ++i) sum[i] = ADD ? static_cast<double>(static_cast<float>(hx[i] + ho[i])) : hx[i];
  for (int t = 0; t < T; ++t) {
    double ss = 0;
    for (int i = 0; i < H; ++i) ss += sum[size_t(t) * H + i] * sum[size_t(t) * H + i];
    const double inv = 1.0 / std::sqrt(ss / H + eps);
    for (int i = 0; i < H; ++i) ref[size_t(t) * H + i] = sum[size_t(t) * H + i] * inv * hw[i];
  }
  TO* refout = nullptr;
  float* refx = nullptr;
  for (int ver : {1, 2}) {
    for (bool pdl : {false, true}) {
      if (ver == 1 && pdl) continue;
      const std::string vn = std::string("v") + char('0' + ver) + (pdl ? " pdl" : "");
      float* x = dalloc<float>(n);
      CK(cudaMemcpy(x, x0, n * 4, cudaMemcpyDeviceToDevice));
      TO* out = alias ? reinterpret_cast<TO*>(x) : dalloc<TO>(n);
      if (!alias) CK(cudaMemset(out, 0xff, n * sizeof(TO)));
      if (ver == 2 && !rmsnorm_v2_aligned(out, of, w, wf)) continue;
      CK((run_norm<TW, TO, ADD>(ver, pdl, 0, T, H, out, x, o, w, eps)));
      CK(cudaDeviceSynchronize());
      const double e = nerr(to_f64(d2h(out, n)), ref);
      report(name, vn, e < (of ? 1e-6 : 4e-3), e, "out vs float64");
      if (ADD && !alias) {
        const double ex = nerr(to_f64(d2h(x, n)), sum);
        report(name, vn, ex == 0, ex, "x == x + o exactly");
      }
      if (ver == 1) {
        refout = out;
        refx = x;
        continue;
      }
      const bool b = same_bits(out, refout, n) && same_bits(x, refx, n);
      report(name, vn, b, b ? 0 : 1, "== v1 bit for bit (out, x)");
      if (!alias) CK(cudaFree(out));
      CK(cudaFree(x));
    }
  }
  if (!alias) CK(cudaFree(refout));
  CK(cudaFree(refx));
  CK(cudaFree(x0));
  CK(cudaFree(o));
  CK(cudaFree(w));
}

// ------------------------------------------------------------------------------------------- swiglu
template <typename TI, typename TO>
cudaError_t run_swiglu(int ver, bool pdl, cudaStream_t st, int M, int F, TO* out, const TI* gu) {
  // ver 2: as the op launches it (vectors a thread by size); 3 / 4 / 5: 4 / 1 / 2 vectors a thread
  if (ver >= 2) return launch_swiglu_v2<TI, TO>(st, pdl, out, gu, M, F, ver == 2 ? 0 : ver == 3 ? 4 : ver == 4 ? 1 : 2);
  return launch_swiglu_v1<TI, TO>(st, out, gu, M, F);
}
template <typename TI, typename TO>
void validate_swiglu(int M, int F) {
  constexpr bool inf = std::is_same_v<TI, float>, of = std::is_same_v<TO, float>;
  char name[128];
  std::snprintf(name, sizeof name, "swiglu(M=%d,F=%d,gu=%s,out=%s)", M, F, inf ? "f32" : "bf16", of ? "f32" : "bf16");
  const size_t n = size_t(M) * F;
  TI* gu = dalloc<TI>(2 * n);
  fill(gu, 2 * n, 41, 4.f);
  CK(cudaDeviceSynchronize());
  auto hg = to_f64(d2h(gu, 2 * n));
  std::vector<double> ref(n);
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < F; ++j) {
      const double g = hg[size_t(m) * 2 * F + j], u = hg[size_t(m) * 2 * F + F + j];
      ref[size_t(m) * F + j] = g / (1 + std::exp(-g)) * u;
    }
  TO* refout = nullptr;
  for (int ver : {1, 2, 3, 4, 5}) {
    for (bool pdl : {false, true}) {
      if (ver == 1 && pdl) continue;
      if (ver >= 3 && !pdl) continue;
      const char* vnames[] = {"", "v1", "v2", "v2 i4", "v2 i1", "v2 i2"};
      const std::string vn = std::string(vnames[ver]) + (pdl ? " pdl" : "");
      TO* out = dalloc<TO>(n);
      CK(cudaMemset(out, 0xff, n * sizeof(TO)));
      if (ver >= 2 && !swiglu_v2_ok<TI>(M, F, gu, out)) {
        CK(cudaFree(out));
        continue;
      }
      CK((run_swiglu<TI, TO>(ver, pdl, 0, M, F, out, gu)));
      CK(cudaDeviceSynchronize());
      const double e = nerr(to_f64(d2h(out, n)), ref);
      report(name, vn, e < (of ? 1e-6 : 4e-3), e, "out vs float64");
      if (ver == 1) {
        refout = out;
        continue;
      }
      const bool b = same_bits(out, refout, n);
      report(name, vn, b, b ? 0 : 1, "== v1 bit for bit");
      CK(cudaFree(out));
    }
  }
  CK(cudaFree(refout));
  CK(cudaFree(gu));
}

// ------------------------------------------------------------------------------------------- timing
double copy_bandwidth() {
  const size_t n = size_t{1} << 30;
  void *a, *b;
  CK(cudaMalloc(&a, n));
  CK(cudaMalloc(&b, n));
  CK(cudaMemset(a, 1, n));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  CK(cudaEventRecord(e0));
  for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice));
  CK(cudaEventRecord(e1));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaFree(a));
  CK(cudaFree(b));
  return 2.0 * n * 10 / (ms * 1e-3) / 1e9;
}

// Mean microseconds per launch: a graph of n launches (launch(st, i): i picks the buffer set), replayed reps times.
double time_graph(const std::function<cudaError_t(cudaStream_t, int)>& fn, int n, int reps) {
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (int i = 0; i < 2; ++i) CK(fn(st, i));
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < n; ++i) CK(fn(st, i));
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  CK(cudaEventRecord(e0, st));
  for (int r = 0; r < reps; ++r) CK(cudaGraphLaunch(ge, st));
  CK(cudaEventRecord(e1, st));
  CK(cudaEventSynchronize(e1));
  float ms = 0;
  CK(cudaEventElapsedTime(&ms, e0, e1));
  CK(cudaGraphExecDestroy(ge));
  CK(cudaGraphDestroy(g));
  CK(cudaStreamDestroy(st));
  CK(cudaEventDestroy(e0));
  CK(cudaEventDestroy(e1));
  return ms * 1e3 / (static_cast<double>(n) * reps);
}

std::vector<std::string> skip;
double copy_gbs = 0;
bool skipped(const std::string& v) {
  for (auto& s : skip)
    if (s == v) return true;
  return false;
}
// One timed row: "@variant" first (crash recovery), then the graph, the line and the JSON.
void timed(const std::string& op, int T, const std::string& variant, double bytes,
           const std::function<cudaError_t(cudaStream_t, int)>& fn) {
  const std::string id = op + "/" + variant + "/T" + std::to_string(T);
  if (skipped(id) || op_failed(op)) {
    std::printf("skipped %s%s\n", id.c_str(), op_failed(op) ? " (its validation failed)" : "");
    return;
  }
  std::printf("@variant %s\n", id.c_str());
  std::fflush(stdout);
  const int n = T >= 1024 ? 20 : 200, reps = T >= 1024 ? 5 : 20;
  const double us = time_graph(fn, n, reps);
  const double gbs = bytes / (us * 1e-6) / 1e9;
  std::printf("  %-14s T=%-5d %-22s %9.2f us  %8.0f GB/s  %5.1f %% of copy  (%.2f MB)\n", op.c_str(), T, variant.c_str(), us,
              gbs, 100 * gbs / copy_gbs, bytes / 1e6);
  if (js)
    std::fprintf(js, "{\"kind\":\"time\",\"op\":\"%s\",\"T\":%d,\"variant\":\"%s\",\"us\":%.3f,\"gbs\":%.1f,\"bytes\":%.0f}\n",
                 op.c_str(), T, variant.c_str(), us, gbs, bytes);
  std::fflush(stdout);
}

// GLM-4-9B: Hq 32, Hkv 2, D 128, rot 64, H 4096, F 13696.
constexpr int kHq = 32, kHkv = 2, kD = 128, kRot = 64, kH = 4096, kF = 13696;
constexpr float kTheta = 5e6f, kEps = 1.5625e-7f;

struct Set {  // one set of a layer's buffers at T tokens
  float *qkv, *q, *x, *o, *gu32;
  Bf16 *qkv16, *kc, *vc, *h, *gu16, *act;
  int32_t *pos, *rows;
  float* copy_src;
  float* copy_dst;
};
Set make_set(int T, int64_t S, uint64_t seed) {
  Set s{};
  const size_t W = (kHq + 2 * kHkv) * kD;
  s.qkv = dalloc<float>(T * W);
  s.qkv16 = dalloc<Bf16>(T * W);
  s.q = dalloc<float>(size_t(T) * kHq * kD);
  s.x = dalloc<float>(size_t(T) * kH);
  s.o = dalloc<float>(size_t(T) * kH);
  s.gu32 = dalloc<float>(size_t(T) * 2 * kF);
  s.kc = dalloc<Bf16>(size_t(S) * kHkv * kD);
  s.vc = dalloc<Bf16>(size_t(S) * kHkv * kD);
  s.h = dalloc<Bf16>(size_t(T) * kH);
  s.gu16 = dalloc<Bf16>(size_t(T) * 2 * kF);
  s.act = dalloc<Bf16>(size_t(T) * kF);
  s.pos = dalloc<int32_t>(T);
  s.rows = dalloc<int32_t>(T);
  s.copy_src = dalloc<float>(size_t(T) * 2 * kF);  // half the largest op's traffic (swiglu f32: 10 F bytes a row)
  s.copy_dst = dalloc<float>(size_t(T) * 2 * kF);
  fill(s.qkv, T * W, seed + 1);
  fill(s.qkv16, T * W, seed + 7);
  fill(s.x, size_t(T) * kH, seed + 2);
  fill(s.o, size_t(T) * kH, seed + 3);
  fill(s.gu32, size_t(T) * 2 * kF, seed + 4, 4.f);
  fill(s.gu16, size_t(T) * 2 * kF, seed + 5, 4.f);
  fill(s.copy_src, size_t(T) * 2 * kF, seed + 6);
  std::vector<int32_t> hp(T), hr(T);
  for (int t = 0; t < T; ++t) hp[t] = 1000 + t, hr[t] = static_cast<int32_t>((int64_t(t) * 7 + 3) % S);
  CK(cudaMemcpy(s.pos, hp.data(), T * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(s.rows, hr.data(), T * 4, cudaMemcpyHostToDevice));
  return s;
}
void free_set(Set& s) {
  for (void* p : {(void*)s.qkv, (void*)s.qkv16, (void*)s.q, (void*)s.x, (void*)s.o, (void*)s.gu32, (void*)s.kc, (void*)s.vc, (void*)s.h,
                  (void*)s.gu16, (void*)s.act, (void*)s.pos, (void*)s.rows, (void*)s.copy_src, (void*)s.copy_dst})
    CK(cudaFree(p));
}

void time_T(int T, Bf16* w) {
  const int64_t S = std::max(T * 8, 4096);
  const int nsets = T >= 1024 ? 2 : 1;
  std::vector<Set> sets;
  for (int i = 0; i < nsets; ++i) sets.push_back(make_set(T, S, 100 * (i + 1)));
  CK(cudaDeviceSynchronize());
  auto at = [&](int i) -> Set& { return sets[i % nsets]; };
  const RotShape rs{T, kHq, kHkv, kD, kRot, S, false, kTheta};
  const double W = (kHq + 2 * kHkv) * kD;
  const double rot_bytes = T * W * 4 + double(T) * kHq * kD * 4 + 2.0 * T * kHkv * kD * 2;
  const double norm_bytes = double(T) * kH * (4 + 2) + kH * 2;
  const double addnorm_bytes = double(T) * kH * (4 + 4 + 4 + 2) + kH * 2;
  const double sw32_bytes = double(T) * kF * (8 + 2), sw16_bytes = double(T) * kF * (4 + 2);
  auto copy = [&](double bytes) {  // a float4 copy moving `bytes` in all (half read, half written)
    const size_t n4 = static_cast<size_t>(bytes / 2 / 16);
    return [&, n4](cudaStream_t st, int i) {
      const unsigned blocks = static_cast<unsigned>(std::min<size_t>((n4 + 255) / 256, 132 * 8));
      copy_kernel<<<blocks, 256, 0, st>>>(reinterpret_cast<float4*>(at(i).copy_dst), reinterpret_cast<const float4*>(at(i).copy_src), n4);
      return cudaGetLastError();
    };
  };
  auto empty = [&](unsigned blocks, unsigned threads, bool pdl) {
    return [=](cudaStream_t st, int) { return launch(empty_kernel, dim3(blocks), dim3(threads), st, pdl, 0); };
  };
  // rotary_kv_write_qkv (v1 "old" = production before: PDL launch, GLM4_ROTARY_PDL's default)
  timed("rotary", T, "v1 old", rot_bytes, [&](cudaStream_t st, int i) {
    Set& s = at(i);
    return run_rotary<float, Bf16>(1, true, st, rs, s.q, s.qkv, s.kc, s.vc, s.pos, s.rows);
  });
  for (bool pdl : {true, false})
    timed("rotary", T, pdl ? "v2 pdl" : "v2 nopdl", rot_bytes, [&, pdl](cudaStream_t st, int i) {
      Set& s = at(i);
      return run_rotary<float, Bf16>(2, pdl, st, rs, s.q, s.qkv, s.kc, s.vc, s.pos, s.rows);
    });
  for (int ver : {3, 5, 4})
    timed("rotary", T, ver == 3 ? "v2 i2 pdl" : ver == 4 ? "v2 i8 pdl" : "v2 i4 pdl", rot_bytes, [&, ver](cudaStream_t st, int i) {
      Set& s = at(i);
      return run_rotary<float, Bf16>(ver, true, st, rs, s.q, s.qkv, s.kc, s.vc, s.pos, s.rows);
    });
  // a bf16 qkv (the QKV GEMM's bf16 output): half the read
  const double rot16_bytes = rot_bytes - T * W * 2;
  timed("rotary bf16", T, "v1 pdl", rot16_bytes, [&](cudaStream_t st, int i) {
    Set& s = at(i);
    return run_rotary<Bf16, Bf16>(1, true, st, rs, s.q, s.qkv16, s.kc, s.vc, s.pos, s.rows);
  });
  for (int ver : {2, 3, 5})
    timed("rotary bf16", T, ver == 2 ? "v2 pdl" : ver == 3 ? "v2 i2 pdl" : "v2 i4 pdl", rot16_bytes, [&, ver](cudaStream_t st, int i) {
      Set& s = at(i);
      return run_rotary<Bf16, Bf16>(ver, true, st, rs, s.q, s.qkv16, s.kc, s.vc, s.pos, s.rows);
    });
  timed("rotary bf16", T, "copy same bytes", rot16_bytes, copy(rot16_bytes));
  timed("rotary", T, "copy same bytes", rot_bytes, copy(rot_bytes));
  timed("rotary", T, "empty grid pdl", 0, empty(T, 288, true));
  // rmsnorm (h bf16 = norm(x)), add_rmsnorm (x += o; h bf16 = norm(x)); w bf16 (the model's)
  for (bool add : {false, true}) {
    const std::string op = add ? "add_rmsnorm" : "rmsnorm";
    const double bytes = add ? addnorm_bytes : norm_bytes;
    for (int ver : {1, 2})
      for (bool pdl : {true, false}) {
        if (ver == 1 && pdl) continue;
        timed(op, T, ver == 1 ? "v1 old" : pdl ? "v2 pdl" : "v2 nopdl", bytes, [&, ver, pdl, add](cudaStream_t st, int i) {
          Set& s = at(i);
          return add ? run_norm<Bf16, Bf16, true>(ver, pdl, st, T, kH, s.h, s.x, s.o, w, kEps)
                     : run_norm<Bf16, Bf16, false>(ver, pdl, st, T, kH, s.h, s.x, nullptr, w, kEps);
        });
      }
    timed(op, T, "copy same bytes", bytes, copy(bytes));
  }
  timed("rmsnorm", T, "empty grid pdl", 0, empty(T, 256, true));
  timed("rmsnorm", T, "empty grid nopdl", 0, empty(T, 256, false));
  // swiglu: f32 gu (v1 old, v2) and bf16 gu (v1 scalar form, v2), act bf16
  timed("swiglu f32", T, "v1 old", sw32_bytes, [&](cudaStream_t st, int i) { return run_swiglu<float, Bf16>(1, false, st, T, kF, at(i).act, at(i).gu32); });
  timed("swiglu f32", T, "v2 pdl", sw32_bytes, [&](cudaStream_t st, int i) { return run_swiglu<float, Bf16>(2, true, st, T, kF, at(i).act, at(i).gu32); });
  timed("swiglu f32", T, "v2 i1 pdl", sw32_bytes, [&](cudaStream_t st, int i) { return run_swiglu<float, Bf16>(4, true, st, T, kF, at(i).act, at(i).gu32); });
  timed("swiglu f32", T, "v2 i2 pdl", sw32_bytes, [&](cudaStream_t st, int i) { return run_swiglu<float, Bf16>(5, true, st, T, kF, at(i).act, at(i).gu32); });
  timed("swiglu f32", T, "copy same bytes", sw32_bytes, copy(sw32_bytes));
  timed("swiglu bf16", T, "v1 scalar", sw16_bytes, [&](cudaStream_t st, int i) { return run_swiglu<Bf16, Bf16>(1, false, st, T, kF, at(i).act, at(i).gu16); });
  for (bool pdl : {true, false})
    timed("swiglu bf16", T, pdl ? "v2 pdl" : "v2 nopdl", sw16_bytes,
          [&, pdl](cudaStream_t st, int i) { return run_swiglu<Bf16, Bf16>(2, pdl, st, T, kF, at(i).act, at(i).gu16); });
  timed("swiglu bf16", T, "v2 i4 pdl", sw16_bytes, [&](cudaStream_t st, int i) { return run_swiglu<Bf16, Bf16>(3, true, st, T, kF, at(i).act, at(i).gu16); });
  timed("swiglu bf16", T, "v2 i1 pdl", sw16_bytes, [&](cudaStream_t st, int i) { return run_swiglu<Bf16, Bf16>(4, true, st, T, kF, at(i).act, at(i).gu16); });
  timed("swiglu bf16", T, "v2 i2 pdl", sw16_bytes, [&](cudaStream_t st, int i) { return run_swiglu<Bf16, Bf16>(5, true, st, T, kF, at(i).act, at(i).gu16); });
  timed("swiglu bf16", T, "copy same bytes", sw16_bytes, copy(sw16_bytes));
  // the chain: a layer's small ops in their order, 40 layers a graph ("us" = a layer's four ops): old = v1 with the
  // f32 qkv and gate_up and add_rmsnorm (run12's step); new = v2 with PDL on the bf16 qkv and gate_up (the GEMMs' bf16
  // outputs); new nopdl = the same without PDL.
  for (int mode = 0; mode < 3; ++mode) {
    const char* vn = mode == 0 ? "old (v1, f32 gu)" : mode == 1 ? "new (v2 pdl, bf16 gu)" : "new nopdl";
    const double bytes = norm_bytes + addnorm_bytes + (mode == 0 ? rot_bytes + sw32_bytes : rot16_bytes + sw16_bytes);
    timed("chain/layer", T, vn, bytes, [&, mode](cudaStream_t st, int i) {
      Set& s = at(i);
      const int ver = mode == 0 ? 1 : 2;
      const bool pdl = mode == 1;
      cudaError_t e = run_norm<Bf16, Bf16, false>(ver, pdl, st, T, kH, s.h, s.x, nullptr, w, kEps);
      if (e == cudaSuccess)
        e = mode == 0 ? run_rotary<float, Bf16>(1, true, st, rs, s.q, s.qkv, s.kc, s.vc, s.pos, s.rows)
                      : run_rotary<Bf16, Bf16>(2, pdl, st, rs, s.q, s.qkv16, s.kc, s.vc, s.pos, s.rows);
      if (e == cudaSuccess) e = run_norm<Bf16, Bf16, true>(ver, pdl, st, T, kH, s.h, s.x, s.o, w, kEps);
      if (e == cudaSuccess)
        e = mode == 0 ? run_swiglu<float, Bf16>(1, false, st, T, kF, s.act, s.gu32) : run_swiglu<Bf16, Bf16>(2, pdl, st, T, kF, s.act, s.gu16);
      return e;
    });
  }
  for (auto& s : sets) free_set(s);
}

int main(int argc, char** argv) {
  bool do_time = true;
  std::vector<int> ts{2048, 64, 32};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto list = [&](const std::string& v) {
      std::vector<std::string> r;
      size_t p = 0;
      while (p <= v.size()) {
        const size_t q = v.find(',', p);
        r.push_back(v.substr(p, q == std::string::npos ? std::string::npos : q - p));
        if (q == std::string::npos) break;
        p = q + 1;
      }
      return r;
    };
    if (a == "--json" && i + 1 < argc) js = std::fopen(argv[++i], "a");
    else if (a == "--skip" && i + 1 < argc) skip = list(argv[++i]);
    else if (a == "--no-time") do_time = false;
    else if (a == "--ts" && i + 1 < argc) {
      ts.clear();
      for (auto& t : list(argv[++i])) ts.push_back(std::atoi(t.c_str()));
    } else {
      std::fprintf(stderr, "usage: elt_bench [--json FILE] [--skip NAME,...] [--no-time] [--ts 2048,64,32]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  copy_gbs = copy_bandwidth();
  std::printf("device %s, %d SMs, L2 %d MB; cudaMemcpy copy bandwidth (read+write) %.0f GB/s\n", prop.name,
              prop.multiProcessorCount, prop.l2CacheSize >> 20, copy_gbs);
  if (js) std::fprintf(js, "{\"kind\":\"device\",\"name\":\"%s\",\"sms\":%d,\"copy_gbs\":%.1f}\n", prop.name, prop.multiProcessorCount, copy_gbs);

  std::printf("== validation (v2 == v1 bit for bit; each vs float64; poisoned outputs)\n");
  validate_rotary<Bf16>({1, 32, 2, 128, 64, 64, false, 5e6f});
  validate_rotary<float>({33, 32, 2, 128, 64, 70, true, 5e6f});
  validate_rotary<Bf16>({130, 32, 2, 128, 64, 300, false, 5e6f});
  validate_rotary<float>({5, 4, 2, 8, 6, 11, true, 1e4f});   // rot % 4 == 2
  validate_rotary<Bf16>({7, 6, 3, 16, 16, 13, false, 1e4f});  // full rotation
  validate_rotary<Bf16>({3, 2, 1, 7, 2, 5, false, 1e4f});     // odd D: v1 only
  validate_rotary<Bf16>({9, 64, 8, 256, 256, 20, false, 1e4f});  // a token of 5120 float4s: v2 loops (> 1024 x 4)
  validate_rotary<Bf16, Bf16>({300, 32, 2, 128, 64, 320, false, 5e6f});  // bf16 qkv: 4 groups a thread past 256 tokens
  validate_rotary<float, Bf16>({33, 32, 2, 128, 64, 70, true, 5e6f});
  validate_rotary<Bf16, Bf16>({5, 4, 2, 8, 6, 11, false, 1e4f});
  validate_rotary<Bf16, Bf16>({3, 2, 1, 7, 2, 5, false, 1e4f});  // odd D: v1
  validate_norm<Bf16, Bf16, false>(17, 4096, false);
  validate_norm<Bf16, Bf16, true>(64, 4096, false);
  validate_norm<float, float, true>(3, 1024, false);
  validate_norm<float, Bf16, false>(5, 2048, false);
  validate_norm<Bf16, float, false>(4, 8192, true);
  validate_norm<Bf16, float, true>(7, 4096, true);
  validate_norm<float, float, false>(1, 4096, false);
  validate_swiglu<float, Bf16>(17, 96);
  validate_swiglu<float, float>(3, 13696);
  validate_swiglu<Bf16, Bf16>(64, 13696);
  validate_swiglu<Bf16, float>(17, 104);
  validate_swiglu<Bf16, Bf16>(5, 100);  // F % 8 != 0: v1 scalar only
  validate_swiglu<Bf16, Bf16>(3, 97);
  validate_swiglu<float, Bf16>(118, 50);
  std::printf("validation: %d failing\n", failures);
  if (js) std::fprintf(js, "{\"kind\":\"validation\",\"failing\":%d}\n", failures);
  std::fflush(stdout);
  if (failures) std::printf("validation failed: the ops with a failing check (and the chain) are not timed\n");
  if (do_time) {
    Bf16* w = dalloc<Bf16>(kH);
    fill(w, kH, 9, 0.5f, 1.f);
    for (int T : ts) {
      std::printf("== timing T = %d (us per launch in a graph of back-to-back launches%s)\n", T,
                  T >= 1024 ? "; two buffer sets alternated: inputs from DRAM" : "; one buffer set: L2-warm");
      time_T(T, w);
    }
    CK(cudaFree(w));
  }
  if (js) std::fclose(js);
  return failures ? 1 : 0;
}
