// Kernel harness for csrc/cuda/attention_kernels.cuh (the same kernels the op runs): validates every variant
// against a float64 reference on the CPU (fresh inputs, poisoned outputs), then times decode and prefill on
// GLM-4-9B shapes (Hq 32, Hkv 2, D 128, paged bf16 cache, block size 64) and prints a table and JSON lines.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Icsrc bench/kernels/attention_bench.cu \
//        -o bench/kernels/bin/attention_bench
//   bench/kernels/bin/attention_bench [--quick] [--json FILE] [--skip I,J,...] [--no-prefill] [--prefill-only]
//        [--time VARIANT,...] [--bs 1,8,32,64] [--ctx 128,2048,8192,32768]
// --prefill-only: prefill validation cases and prefill timing alone (scripts/gpu/fa3.sh); --no-prefill: decode alone
// (scripts/gpu/dattn.sh); --time: time only the prefill variants whose name starts with one of these prefixes (every
// variant is still validated); --bs / --ctx: the decode timing shapes.
// Prefill is timed before decode (the figure issue 13 waits for). Before each variant runs, a line "@variant I NAME" is
// printed and flushed: if a kernel faults (the process dies), scripts/gpu/dattn.sh, fa3.sh and attention2.sh rerun
// with that variant skipped. Variant indices: the decode variants first (timing probes last among them, never
// validated), then prefill (prefill3 "fa3" last among them), then generic; the "@variant" lines print them.
//
// Decode is timed over enough copies of the cache ("layers") that they do not fit in L2 (as in a real decode
// step, where 40 layers' weights pass through L2 between two reads of a layer's cache), as a CUDA graph of
// back-to-back launches (the engine's replay). GB/s counts the K and V bytes the queries see; the copy bandwidth
// (cudaMemcpy device to device, read + write) is measured in the same run. Prefill: the causal FLOP, counted exactly:
// each query sees pos + 1 keys, and each (query head, key) pair costs 2 D for S = q.k and 2 D for o += p v, so
// FLOP = 4 * Hq * D * sum over queries of (pos + 1) (= 2 * Hq * D * T (T + 1) for one sequence from position 0; the
// masked half of the diagonal tiles is not counted).
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cuda/attention_kernels.cuh"

using namespace glm4::cuda;

#define CK(x)                                                                                   \
  do {                                                                                          \
    cudaError_t e_ = (x);                                                                       \
    if (e_ != cudaSuccess) {                                                                    \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(2);                                                                             \
    }                                                                                           \
  } while (0)

// ------------------------------------------------------------------------------------------- inputs
// Values are a hash of (seed, index), so the host recomputes any element the device filled.
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
__host__ __device__ inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_f(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
__global__ void fill_bf16(uint16_t* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = to_bf16(uval(seed, i, amp));
}
__global__ void fill_f32(float* p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = uval(seed, i, amp);
}
__global__ void fill_nan(float* p, size_t n) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n; i += static_cast<size_t>(gridDim.x) * blockDim.x)
    p[i] = __int_as_float(0x7fc00000);
}

constexpr int kHq = 32, kHkv = 2, kD = 128, kBs = 64;

// One attention problem: B sequences of lengths lens, the last t positions of each as queries (grouped by
// sequence), a shuffled block table over a pool with a spare block, bf16 K/V filled from seeds.
struct Problem {
  int Hq = kHq, Hkv = kHkv, D = kD, bs = kBs, t = 1;
  std::vector<int> lens;
  bool seq = true;  // pass sequence ids (false: one sequence)
  int B = 0, NB = 0;
  int64_t rows = 0;
  std::vector<int32_t> table, pos, seqs;
  uint64_t kseed = 11, vseed = 12, qseed = 13;
  float qamp = 2.5f;
  // device
  uint16_t *kc = nullptr, *vc = nullptr;
  float *q = nullptr, *out = nullptr;
  int32_t *dtable = nullptr, *dpos = nullptr, *dseq = nullptr;

  int T() const { return B * t; }
  int64_t cache_bytes_read() const {  // K and V bytes the queries see (each sequence's longest query)
    int64_t n = 0;
    for (int l : lens) n += static_cast<int64_t>(l) * Hkv * D * 2 * 2;
    return n;
  }
  void build(uint64_t shuffle_seed = 5) {
    B = static_cast<int>(lens.size());
    NB = 0;
    int used = 0;
    for (int l : lens) {
      NB = std::max(NB, (l + bs - 1) / bs);
      used += (l + bs - 1) / bs;
    }
    const int blocks = used + 1;
    rows = static_cast<int64_t>(blocks) * bs;
    std::vector<int> perm(blocks);
    for (int i = 0; i < blocks; ++i) perm[i] = i;
    for (int i = blocks - 1; i > 0; --i) std::swap(perm[i], perm[hash32(shuffle_seed * 1000003 + i) % (i + 1)]);
    table.assign(static_cast<size_t>(B) * NB, perm[blocks - 1]);
    int next = 0;
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < (lens[b] + bs - 1) / bs; ++i) table[static_cast<size_t>(b) * NB + i] = perm[next++];
    pos.clear();
    seqs.clear();
    ref_cache.clear();
    for (int b = 0; b < B; ++b)
      for (int i = 0; i < t; ++i) {
        pos.push_back(lens[b] - t + i);
        seqs.push_back(b);
      }
    const size_t n = static_cast<size_t>(rows) * Hkv * D;
    CK(cudaMalloc(&kc, n * 2));
    CK(cudaMalloc(&vc, n * 2));
    fill_bf16<<<1024, 256>>>(kc, n, kseed, 1.7f);
    fill_bf16<<<1024, 256>>>(vc, n, vseed, 1.7f);
    const size_t nq = static_cast<size_t>(T()) * Hq * D;
    CK(cudaMalloc(&q, nq * 4));
    CK(cudaMalloc(&out, nq * 4));
    fill_f32<<<1024, 256>>>(q, nq, qseed, qamp);
    CK(cudaMalloc(&dtable, table.size() * 4));
    CK(cudaMalloc(&dpos, pos.size() * 4));
    CK(cudaMalloc(&dseq, seqs.size() * 4));
    CK(cudaMemcpy(dtable, table.data(), table.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dpos, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dseq, seqs.data(), seqs.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaDeviceSynchronize());
  }
  void free_all() {
    for (void* p : {static_cast<void*>(kc), static_cast<void*>(vc), static_cast<void*>(q), static_cast<void*>(out),
                    static_cast<void*>(dtable), static_cast<void*>(dpos), static_cast<void*>(dseq)})
      if (p) CK(cudaFree(p));
    kc = vc = nullptr;
    q = out = nullptr;
    dtable = dpos = dseq = nullptr;
  }
  attn::Args args(void* work, size_t work_bytes) const {
    attn::Args a;
    a.q = q;
    a.kc = kc;
    a.vc = vc;
    a.pos = dpos;
    a.table = dtable;
    a.seq = seq ? dseq : nullptr;
    a.out = out;
    a.work = work;
    a.work_bytes = work ? work_bytes : 0;
    a.T = T();
    a.Hq = Hq;
    a.Hkv = Hkv;
    a.D = D;
    a.rows = rows;
    a.B = B;
    a.NB = NB;
    a.shift = 0;
    while ((1 << a.shift) < bs) ++a.shift;
    a.qscale = (1.f / std::sqrt(static_cast<float>(D))) * attn::kLog2e;
    a.bf16 = true;
    return a;
  }
  // float64 reference of query i, every head ([Hq][D]); computed once per query and kept.
  std::vector<std::vector<double>> ref_cache;
  const std::vector<double>& reference(int i) {
    if (ref_cache.size() < pos.size()) ref_cache.resize(pos.size());
    std::vector<double>& o = ref_cache[i];
    if (!o.empty()) return o;
    const int b = seqs[i], p = pos[i], per = Hq / Hkv;
    const double scale = 1.0 / std::sqrt(static_cast<double>(D));
    o.assign(static_cast<size_t>(Hq) * D, 0.0);
    std::vector<double> kr(D), vr(D), sc(static_cast<size_t>(per) * (p + 1));
    for (int g = 0; g < Hkv; ++g) {
      std::vector<double> mx(per, -INFINITY), sum(per, 0.0);
      for (int j = 0; j <= p; ++j) {
        const int64_t r = static_cast<int64_t>(table[static_cast<size_t>(b) * NB + j / bs]) * bs + j % bs;
        const size_t base = (static_cast<size_t>(r) * Hkv + g) * D;
        for (int x = 0; x < D; ++x) kr[x] = bf16_to_f(to_bf16(uval(kseed, base + x, 1.7f)));
        for (int hh = 0; hh < per; ++hh) {
          const size_t qo = (static_cast<size_t>(i) * Hq + g * per + hh) * D;
          double dot = 0;
          for (int x = 0; x < D; ++x) dot += static_cast<double>(uval(qseed, qo + x, qamp)) * kr[x];
          sc[static_cast<size_t>(hh) * (p + 1) + j] = dot * scale;
          mx[hh] = std::max(mx[hh], dot * scale);
        }
      }
      for (int hh = 0; hh < per; ++hh)
        for (int j = 0; j <= p; ++j) sum[hh] += (sc[static_cast<size_t>(hh) * (p + 1) + j] = std::exp(sc[static_cast<size_t>(hh) * (p + 1) + j] - mx[hh]));
      for (int j = 0; j <= p; ++j) {
        const int64_t r = static_cast<int64_t>(table[static_cast<size_t>(b) * NB + j / bs]) * bs + j % bs;
        const size_t base = (static_cast<size_t>(r) * Hkv + g) * D;
        for (int x = 0; x < D; ++x) vr[x] = bf16_to_f(to_bf16(uval(vseed, base + x, 1.7f)));
        for (int hh = 0; hh < per; ++hh) {
          const double w = sc[static_cast<size_t>(hh) * (p + 1) + j] / sum[hh];
          double* oh = o.data() + static_cast<size_t>(g * per + hh) * D;
          for (int x = 0; x < D; ++x) oh[x] += w * vr[x];
        }
      }
    }
    return o;
  }
};

// Normalized squared error of the kernel's output on the sampled queries (every head); NaN -> infinity.
double check(Problem& pr, const std::vector<int>& queries) {
  std::vector<float> got(static_cast<size_t>(pr.T()) * pr.Hq * pr.D);
  CK(cudaMemcpy(got.data(), pr.out, got.size() * 4, cudaMemcpyDeviceToHost));
  double num = 0, den = 0;
  for (int i : queries) {
    if (i < 0 || i >= pr.T()) {
      std::fprintf(stderr, "check: query %d outside the problem's %d\n", i, pr.T());
      std::exit(3);
    }
    const std::vector<double>& ref = pr.reference(i);
    for (size_t x = 0; x < ref.size(); ++x) {
      const double gv = got[static_cast<size_t>(i) * pr.Hq * pr.D + x];
      if (!std::isfinite(gv)) return INFINITY;
      num += (gv - ref[x]) * (gv - ref[x]);
      den += ref[x] * ref[x];
    }
  }
  return num / std::max(den, 1e-300);
}

// JSON has no infinity or NaN: a failed check's error goes out as 1e300.
double json_num(double x) { return std::isfinite(x) ? x : 1e300; }

// ------------------------------------------------------------------------------------------- variants
struct Variant {
  std::string name;
  attn::Kind kind;
  int mink, pfix, stages, warps;     // decode split rule and stages; prefill warps
  int pver = 1, pks = 16, pstages = 2;  // prefill kernel version, keys a step (prefill3: keys a tile), stages
  cudaError_t (*launch)(const attn::Args&, cudaStream_t) = nullptr;  // a configuration the op does not instantiate
  int dver = 1, pbf16 = 0, pdl = 1;  // decode kernel version, bf16 partials, PDL (decode2)
  // A timing probe (not the op's arithmetic: never validated, never a candidate for "best").
  cudaError_t (*probe)(const attn::Args&, const attn::Plan&, cudaStream_t) = nullptr;
  int ppv = 128;                        // prefill3: PV width
};
cudaError_t launch_variant(const Variant& v, const attn::Args& a, const attn::Plan& p, cudaStream_t st) {
  if (v.probe) return v.probe(a, p, st);
  return v.launch ? v.launch(a, st) : attn::launch(a, p, st);
}
// Probes of decode2 (D 128, the plan's stages 2..4, f32 partials): the same grid doing nothing (launch floor), the
// loads alone, the split kernel without its merge.
template <int MODE, bool MERGE>
cudaError_t probe_decode2(const attn::Args& a, const attn::Plan& p, cudaStream_t st) {
  if (p.stages >= 4) return attn::launch_decode2_d<kD, 4, false, MODE>(a, p, st, MERGE);
  if (p.stages == 3) return attn::launch_decode2_d<kD, 3, false, MODE>(a, p, st, MERGE);
  return attn::launch_decode2_d<kD, 2, false, MODE>(a, p, st, MERGE);
}

int g_major = 9;  // compute capability of the device (PDL on sm_90 only)
int g_sms = 132;  // its SM count (decode2m's splits a block)
attn::Plan plan_of(const Problem& pr, const Variant& v, int smem_optin) {
  const int64_t max_len = static_cast<int64_t>(pr.NB) * pr.bs;
  attn::Plan p;
  if (v.kind == attn::Kind::Generic) {
    p.kind = attn::Kind::Generic;
    return p;
  }
  if (v.kind == attn::Kind::Prefill) {
    p.kind = attn::Kind::Prefill;
    p.pver = v.pver;
    p.warps = v.warps;
    p.pks = v.pks;
    p.pstages = v.pstages;
    if (v.pver == 3) {
      p.fkn = v.pks;
      p.fst = v.pstages;
      p.fpv = v.ppv;
    }
    return p;
  }
  // Decode with this variant's split rule, whatever T (plan_attention would send long single-sequence T to prefill).
  attn::PlanKnobs k;
  k.mink = v.mink;
  k.pfix = v.pfix;
  k.stages = v.stages;
  k.dver = v.dver;
  k.pbf16 = v.pbf16;
  k.pdl = v.pdl;
  k.big_t = 1 << 30;  // the variant's kernel and rule at every B
  p = attn::plan_attention(pr.T(), pr.Hq, pr.Hkv, pr.D, true, true, max_len, smem_optin, k, g_major, g_sms);  // T <= 256: decode
  const int64_t units = static_cast<int64_t>(pr.T()) * pr.Hkv * p.rt;
  p.work = p.splits > 1 ? attn::decode_work_bytes(units, p.splits, pr.D) : 0;
  return p;
}

struct Work {
  void* p = nullptr;
  size_t bytes = 0;
  void* get(size_t n) {
    if (n > bytes) {
      if (p) CK(cudaFree(p));
      CK(cudaMalloc(&p, n));
      CK(cudaMemset(p, 0, n));
      CK(cudaDeviceSynchronize());  // the launches that follow go to other (non-blocking) streams
      bytes = n;
    }
    return p;
  }
};

// Validation launches go to a non-blocking stream (as the op's context stream; PDL launches are made there in the
// engine), with the poison fills on the same stream.
cudaStream_t g_vst = nullptr;
bool run_checked(Problem& pr, const Variant& v, int smem_optin, Work& work, const std::vector<int>& queries, double* err) {
  const attn::Plan p = plan_of(pr, v, smem_optin);
  const size_t nq = static_cast<size_t>(pr.T()) * pr.Hq * pr.D;
  fill_nan<<<256, 256, 0, g_vst>>>(pr.out, nq);
  void* w = p.work ? work.get(p.work) : nullptr;
  CK(launch_variant(v, pr.args(w, work.bytes), p, g_vst));
  CK(cudaDeviceSynchronize());
  *err = check(pr, queries);
  // Twice more: the split-K tickets must be back at zero after every launch (same result bit for bit).
  std::vector<float> a(nq), b(nq);
  CK(cudaMemcpy(a.data(), pr.out, nq * 4, cudaMemcpyDeviceToHost));
  for (int r = 0; r < 2; ++r) {
    fill_nan<<<256, 256, 0, g_vst>>>(pr.out, nq);
    CK(launch_variant(v, pr.args(w, work.bytes), p, g_vst));
  }
  CK(cudaDeviceSynchronize());
  CK(cudaMemcpy(b.data(), pr.out, nq * 4, cudaMemcpyDeviceToHost));
  const bool same = std::memcmp(a.data(), b.data(), nq * 4) == 0;
  if (!same) *err = INFINITY;
  return *err <= 5e-5;
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
  return 2.0 * n * 10 / (ms * 1e-3) / 1e9;  // GB/s, read + write
}

// Mean microseconds per launch: a CUDA graph of `n` launches cycling over the problems, replayed `reps` times.
double time_graph(std::vector<Problem>& prs, const Variant& v, const attn::Plan& p, void* work, size_t work_bytes, int n,
                  int reps) {
  cudaStream_t st;
  CK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  for (auto& pr : prs) CK(launch_variant(v, pr.args(work, work_bytes), p, st));  // warm up (and set smem attributes)
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < n; ++i) CK(launch_variant(v, prs[i % prs.size()].args(work, work_bytes), p, st));
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
  return ms * 1e3 / (static_cast<double>(n) * reps);
}

int main(int argc, char** argv) {
  bool quick = false, no_prefill = false, prefill_only = false;
  const char* json_path = nullptr;
  std::vector<int> skip, bs_list{1, 32}, ctx_list;
  std::vector<std::string> time_only;
  auto parse_list = [](const char* s) {
    std::vector<int> v;
    for (const char* p = s; *p;) {
      v.push_back(std::atoi(p));
      while (*p && *p != ',') ++p;
      if (*p == ',') ++p;
    }
    return v;
  };
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--no-prefill")) no_prefill = true;
    else if (!std::strcmp(argv[i], "--prefill-only")) prefill_only = true;
    else if (!std::strcmp(argv[i], "--bs") && i + 1 < argc) bs_list = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--ctx") && i + 1 < argc) ctx_list = parse_list(argv[++i]);
    else if (!std::strcmp(argv[i], "--time") && i + 1 < argc) {
      std::string cur;
      for (const char* p = argv[++i];; ++p) {
        if (*p == ',' || !*p) {
          if (!cur.empty()) time_only.push_back(cur);
          cur.clear();
          if (!*p) break;
        } else {
          cur += *p;
        }
      }
    }
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!std::strcmp(argv[i], "--skip") && i + 1 < argc)
      for (const char* p = argv[++i]; *p;) {
        skip.push_back(std::atoi(p));
        while (*p && *p != ',') ++p;
        if (*p == ',') ++p;
      }
  }
  FILE* js = json_path ? std::fopen(json_path, "a") : nullptr;  // appended: a rerun after a fault keeps what ran before
  if (js) std::setvbuf(js, nullptr, _IOLBF, 0);  // a line at a time: a fault or a timeout keeps the lines written
  int dev = 0, smem_optin = 0, sms = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  CK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CK(cudaDeviceGetAttribute(&g_major, cudaDevAttrComputeCapabilityMajor, dev));
  g_sms = sms;
  CK(cudaStreamCreateWithFlags(&g_vst, cudaStreamNonBlocking));
  const double copy_gbs = copy_bandwidth();
  std::printf("device %s, %d SMs, smem opt-in %d B, L2 %d MB; copy bandwidth (read+write) %.0f GB/s\n", prop.name, sms,
              smem_optin, prop.l2CacheSize >> 20, copy_gbs);
  if (js) std::fprintf(js, "{\"kind\":\"device\",\"name\":\"%s\",\"sms\":%d,\"copy_gbs\":%.1f}\n", prop.name, sms, copy_gbs);

  // "(default)" marks plan_attention's default up to 8 query rows (PlanKnobs: decode2 m128 p64), "(old)" run5's
  // defaults (GLM4_ATTN_PLAN=v1: decode_kernel with its ticket tree, m256 p64, stages by units), which is also the
  // default above 8 rows since run9. Every variant here runs its kernel and rule at every B. v2 = decode2_kernel + decode_merge_kernel; "bf16" =
  // bf16 partial states; "nopdl" = both kernels launched without PDL; v2m = decode2m_kernel (several splits a block,
  // streamed as one run; splits a block by the grid) + the merge. Probes (timed, never validated): "empty" = the
  // default's grid doing nothing (the launch floor of two PDL-chained kernels is "empty" + the merge; "empty1" = the
  // split grid alone), "loads" = the split kernel's tile loads alone, "nomerge" = the split kernel without the merge.
  const attn::PlanKnobs dk;
  std::vector<Variant> decode_variants;
  auto dec = [&](int ver, int mink, int pfix, int st, int pb, int pdl, const char* extra = "") {
    std::string n = std::string(ver == 1 ? "v1" : ver == 2 ? "v2" : "v2m") + " m" + std::to_string(mink) + " p" + std::to_string(pfix) +
                    (st ? " s" + std::to_string(st) : "") + (pb ? " bf16" : "") + (pdl ? "" : " nopdl") + extra;
    if (ver == dk.dver && mink == dk.mink && pfix == dk.pfix && st == dk.stages && pb == dk.pbf16 && pdl == dk.pdl && !*extra)
      n += " (default)";
    if (ver == 1 && mink == 256 && pfix == 64 && st == 0) n += " (old)";  // PlanKnobs::v1()
    Variant v{n, attn::Kind::Decode, mink, pfix, st, 4};
    v.dver = ver;
    v.pbf16 = pb;
    v.pdl = pdl;
    return v;
  };
  decode_variants.push_back(dec(1, 256, 64, 0, 0, 1));   // 0: old (run5 default)
  decode_variants.push_back(dec(2, 128, 64, 0, 0, 1));   // 1: new default
  decode_variants.push_back(dec(2, 128, 64, 0, 1, 1));   // 2: bf16 partials
  decode_variants.push_back(dec(2, 64, 128, 0, 0, 1));   // 3: finest splits
  decode_variants.push_back(dec(2, 128, 128, 0, 0, 1));  // 4
  decode_variants.push_back(dec(2, 256, 64, 0, 0, 1));   // 5: old rule, new merge
  decode_variants.push_back(dec(2, 256, 64, 0, 1, 1));   // 6
  decode_variants.push_back(dec(2, 128, 64, 3, 0, 1));   // 7
  decode_variants.push_back(dec(2, 128, 64, 4, 0, 1));   // 8
  decode_variants.push_back(dec(2, 128, 64, 0, 0, 0));   // 9: no PDL
  decode_variants.push_back(dec(1, 128, 64, 0, 0, 1));   // 10: old kernel, new rule
  decode_variants.push_back(dec(2, 128, 64, 3, 1, 1));   // 11
  decode_variants.push_back(dec(2, 256, 64, 3, 0, 1));   // 12
  decode_variants.push_back(dec(3, 128, 64, 0, 0, 1));   // 13: several splits a block (by the grid)
  decode_variants.push_back(dec(3, 128, 64, 0, 1, 1));   // 14
  decode_variants.push_back(dec(3, 64, 128, 0, 0, 1));   // 15
  decode_variants.push_back(dec(3, 128, 64, 3, 0, 1));   // 16
  {
    Variant e = dec(2, 128, 64, 0, 0, 1, " empty"), e1 = dec(2, 128, 64, 0, 0, 1, " empty1"), ld = dec(2, 128, 64, 0, 0, 1, " loads"),
            nm = dec(2, 128, 64, 0, 0, 1, " nomerge");
    e.probe = probe_decode2<1, true>;
    e1.probe = probe_decode2<1, false>;
    ld.probe = probe_decode2<2, false>;
    nm.probe = probe_decode2<0, false>;
    for (const Variant& v : {e, e1, ld, nm}) decode_variants.push_back(v);  // 17..20
  }
  std::vector<Variant> prefill_variants = {
      {"pre1 w4 (old)", attn::Kind::Prefill, 0, 0, 0, 4, 1},
      {"pre1 w8", attn::Kind::Prefill, 0, 0, 0, 8, 1},
      {"pre2 w4 k16 s2", attn::Kind::Prefill, 0, 0, 0, 4, 2, 16, 2},
      {"pre2 w8 k16 s2", attn::Kind::Prefill, 0, 0, 0, 8, 2, 16, 2},
      {"pre2 w4 k16 s3", attn::Kind::Prefill, 0, 0, 0, 4, 2, 16, 3, attn::launch_prefill2_d<kD, 4, 16, 3>},
      // prefill3 (wgmma): keys a tile, stages, PV width; the first through the op's plan and launcher (GLM4_ATTN_PREFILL
      // = 3,64,4,128), the others launched directly.
      {"fa3 n64 s4 pv128", attn::Kind::Prefill, 0, 0, 0, 0, 3, 64, 4, nullptr, 128},
      {"fa3 n64 s4 pv64", attn::Kind::Prefill, 0, 0, 0, 0, 3, 64, 4, attn::launch_prefill3_d<64, 4, 64>, 64},
      {"fa3 n128 s3 pv128", attn::Kind::Prefill, 0, 0, 0, 0, 3, 128, 3, attn::launch_prefill3_d<128, 3, 128>, 128},
      {"fa3 n128 s3 pv64", attn::Kind::Prefill, 0, 0, 0, 0, 3, 128, 3, attn::launch_prefill3_d<128, 3, 64>, 64},
      // ping-pong: the two consumer warpgroups take turns issuing their products (harness only for now)
      {"fa3 n64 s4 pv64 pp", attn::Kind::Prefill, 0, 0, 0, 0, 3, 64, 4, attn::launch_prefill3_d<64, 4, 64, true>, 64},
      {"fa3 n128 s3 pv64 pp", attn::Kind::Prefill, 0, 0, 0, 0, 3, 128, 3, attn::launch_prefill3_d<128, 3, 64, true>, 64},
  };
  for (auto& v : prefill_variants) {
    const bool same = v.pver == 3 ? v.pks == dk.fkn && v.pstages == dk.fst && v.ppv == dk.fpv && v.name.find(" pp") == std::string::npos
                                  : v.warps == dk.warps && v.pks == dk.pks && v.pstages == dk.pstages;
    if (v.pver == dk.pver && same) v.name += " (default)";
  }
  auto timed = [&](const Variant& v) {
    if (time_only.empty()) return true;
    for (const auto& t : time_only)
      if (v.name.compare(0, t.size(), t) == 0) return true;
    return false;
  };
  const Variant generic{"generic", attn::Kind::Generic, 0, 0, 0, 0};
  Work work;
  int failures = 0;
  // Index of a variant in the numbering above; announces it (flushed) before it runs, or says it is skipped.
  auto index_of = [&](const Variant& v) {
    for (size_t i = 0; i < decode_variants.size(); ++i) if (decode_variants[i].name == v.name) return static_cast<int>(i);
    for (size_t i = 0; i < prefill_variants.size(); ++i) if (prefill_variants[i].name == v.name) return static_cast<int>(decode_variants.size() + i);
    return static_cast<int>(decode_variants.size() + prefill_variants.size());
  };
  auto announce = [&](const Variant& v) {
    const int i = index_of(v);
    for (int k : skip)
      if (k == i) return false;
    std::printf("@variant %d %s\n", i, v.name.c_str());
    std::fflush(stdout);
    return true;
  };

  // ---- validation: every variant on shapes that exercise tails, splits, merges and passes.
  std::printf("\n== validation (normalized squared error vs float64, limit 5e-5; repeated launches bit-identical)\n");
  {
    struct VCase {
      const char* name;
      std::vector<int> lens;
      int t;
      bool seq;
      bool prefill;  // else decode
    };
    const std::vector<VCase> vcases = {
        {"decode B=3 lens 1/65/5000", {1, 65, 5000}, 1, true, false},
        {"decode B=1 len 20000", {20000}, 1, true, false},
        {"decode B=32 lens 2048 (workspace reused)", std::vector<int>(32, 2048), 1, true, false},
        {"decode B=17 lens 63..8192", {63, 64, 65, 1000, 8192, 1, 129, 4000, 63, 64, 65, 1000, 8192, 1, 129, 4000, 300}, 1, true, false},
        {"decode T=3 of one seq len 700", {700}, 3, false, false},
        {"prefill T=2049", {2049}, 2049, false, true},
        {"prefill chunk T=118 over 1000", {1118}, 118, false, true},
        {"prefill 3 seqs x 100 (mixed tiles)", {150, 400, 130}, 100, true, true},
        {"prefill T=17", {17}, 17, false, true},
        {"prefill chunk T=777 over 3000", {3777}, 777, false, true},
        {"prefill 2 seqs x 333 (passes)", {333, 1000}, 333, true, true},
    };
    for (const auto& vc : vcases) {
      if (prefill_only && !vc.prefill) continue;
      Problem pr;
      pr.lens = vc.lens;
      pr.t = vc.t;
      pr.seq = vc.seq;
      pr.build();
      // Check every query for small T, else a spread sample (first, last, and some in between).
      std::vector<int> qs;
      if (pr.T() <= 17) for (int i = 0; i < pr.T(); ++i) qs.push_back(i);
      else
        for (int i : {0, 1, 63, 64, pr.T() / 2, pr.T() - 2, pr.T() - 1})
          if (i < pr.T()) qs.push_back(i);  // (run4: B = 32 asked for query 63 of 32: out of bounds, a segfault)
      std::vector<Variant> vs = vc.prefill ? prefill_variants : decode_variants;
      vs.push_back(generic);
      for (const auto& v : vs) {
        if (v.probe) continue;
        if (!announce(v)) continue;
        double err = 0;
        const bool ok = run_checked(pr, v, smem_optin, work, qs, &err);
        failures += !ok;
        std::printf("  %-36s %-28s err %.2e %s\n", vc.name, v.name.c_str(), err, ok ? "ok" : "FAIL");
        if (js) std::fprintf(js, "{\"kind\":\"validate\",\"case\":\"%s\",\"variant\":\"%s\",\"err\":%.3e,\"ok\":%s}\n", vc.name, v.name.c_str(), json_num(err), ok ? "true" : "false");
      }
      pr.free_all();
    }
  }

  // ---- batch == solo, bit for bit (the engine's guarantee: a sequence's output does not depend on its batch): a
  // B = 17 decode with mixed lengths, then each of 6 of its sequences alone (its own table row, T = 1, no sequence ids)
  // on the same pool; outputs compared bitwise.
  std::printf("\n== decode batch == solo (B = 17 mixed lengths, 6 sequences alone on the same pool; bitwise)\n");
  {
    Problem pr;
    pr.lens = {63, 64, 65, 1000, 8192, 1, 129, 4000, 20000, 64, 65, 1000, 8192, 1, 129, 4000, 300};
    pr.build(9);
    const size_t row = static_cast<size_t>(pr.Hq) * pr.D;
    float* solo = nullptr;
    CK(cudaMalloc(&solo, row * 4));
    for (const auto& v : decode_variants) {
      if (v.probe) continue;
      if (!announce(v)) continue;
      const attn::Plan p = plan_of(pr, v, smem_optin);
      void* w = p.work ? work.get(p.work) : nullptr;
      fill_nan<<<256, 256, 0, g_vst>>>(pr.out, static_cast<size_t>(pr.T()) * row);
      CK(launch_variant(v, pr.args(w, work.bytes), p, g_vst));
      CK(cudaDeviceSynchronize());
      std::vector<float> all(static_cast<size_t>(pr.T()) * row), one(row);
      CK(cudaMemcpy(all.data(), pr.out, all.size() * 4, cudaMemcpyDeviceToHost));
      int bad = 0;
      for (int b : {0, 2, 4, 8, 13, 16}) {
        attn::Args a = pr.args(w, work.bytes);
        a.q = pr.q + b * row;
        a.out = solo;
        a.pos = pr.dpos + b;
        a.table = pr.dtable + static_cast<size_t>(b) * pr.NB;
        a.seq = nullptr;
        a.B = 1;
        a.T = 1;
        Problem solo_shape = pr;  // the plan of a one-sequence launch (splits sized for this sequence's table)
        solo_shape.lens = {pr.lens[b]};
        solo_shape.B = 1;
        attn::Plan ps = plan_of(solo_shape, v, smem_optin);
        ps.splits = p.splits;  // the grid may be larger than the sequence needs: empty splits exit (as in a batch)
        ps.work = p.work;
        if (ps.splits < 1) ps.splits = 1;
        fill_nan<<<256, 256, 0, g_vst>>>(solo, row);
        CK(launch_variant(v, a, ps, g_vst));
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(one.data(), solo, row * 4, cudaMemcpyDeviceToHost));
        if (std::memcmp(one.data(), all.data() + static_cast<size_t>(b) * row, row * 4) != 0) ++bad;
      }
      failures += bad != 0;
      std::printf("  %-34s %s (%d of 6 sequences differ)\n", v.name.c_str(), bad ? "FAIL" : "ok", bad);
      if (js) std::fprintf(js, "{\"kind\":\"validate\",\"case\":\"batch == solo\",\"variant\":\"%s\",\"err\":%d,\"ok\":%s}\n", v.name.c_str(), bad, bad ? "false" : "true");
    }
    CK(cudaFree(solo));
    pr.free_all();
  }

  // ---- prefill timing: one sequence, causal, T = 2K, 8K, 32K; and the engine's way (bench: chunks of 2048 tokens):
  // the last chunk of a 32K prompt, 2048 queries over 30720 earlier keys.
  std::printf("\n== prefill (causal, one sequence, Hq 32, Hkv 2, D 128): ms, TFLOP/s (4 * Hq * D * keys seen)\n");
  struct PCase {
    int len, t;
    std::string label;
  };
  const std::vector<PCase> pcases = no_prefill ? std::vector<PCase>{} : quick ? std::vector<PCase>{{2048, 2048, "2048"}, {8192, 8192, "8192"}}
                                          : std::vector<PCase>{{2048, 2048, "2048"}, {8192, 8192, "8192"}, {32768, 32768, "32768"},
                                                               {32768, 2048, "chunk 2048 at 30720"}};
  for (const auto& pc : pcases) {
    const int T = pc.t;
    Problem pr;
    pr.lens = {pc.len};
    pr.t = T;
    pr.seq = false;
    pr.build();
    double keys = 0;
    for (int p : pr.pos) keys += p + 1.0;
    const double flop = 4.0 * keys * kHq * kD;
    for (const auto& v : prefill_variants) {
      if (!timed(v) || !announce(v)) continue;
      const attn::Plan p = plan_of(pr, v, smem_optin);
      double err = 0;
      const bool ok = run_checked(pr, v, smem_optin, work, {0, T / 2, T - 1}, &err);
      if (!ok) {
        ++failures;
        std::printf("  T=%-20s %-26s FAILED validation (err %.2e): not timed\n", pc.label.c_str(), v.name.c_str(), err);
        if (js) std::fprintf(js, "{\"kind\":\"validate\",\"case\":\"prefill T=%s\",\"variant\":\"%s\",\"err\":%.3e,\"ok\":false}\n", pc.label.c_str(), v.name.c_str(), json_num(err));
        continue;
      }
      std::vector<Problem> one{pr};
      const double us = time_graph(one, v, p, nullptr, 0, T >= 32768 ? 2 : 5, quick ? 2 : 3);
      const double tf = flop / (us * 1e-6) / 1e12;
      std::printf("  T=%-20s %-26s %9.3f ms %7.1f TFLOP/s (err %.1e)\n", pc.label.c_str(), v.name.c_str(), us / 1e3, tf, err);
      if (js) std::fprintf(js, "{\"kind\":\"prefill\",\"T\":%d,\"label\":\"%s\",\"variant\":\"%s\",\"ms\":%.4f,\"tflops\":%.2f}\n", T, pc.label.c_str(), v.name.c_str(), us / 1e3, tf);
    }
    pr.free_all();
  }

  // ---- decode timing: B = 1 and 32, contexts 128 .. 32K, every decode variant (validated on the first copy).
  std::printf("\n== decode (Hq 32, Hkv 2, D 128, bf16, block 64): us per launch in a graph, GB/s on the cache, share of copy\n");
  const std::vector<int> ctxs = !ctx_list.empty() ? ctx_list : quick ? std::vector<int>{2048, 8192} : std::vector<int>{128, 2048, 8192, 32768};
  for (int B : bs_list) {
    if (prefill_only) break;
    for (int ctx : ctxs) {
      Problem one;
      one.lens.assign(B, ctx);
      const int64_t bytes = one.cache_bytes_read();
      const int copies = static_cast<int>(std::max<int64_t>(2, std::min<int64_t>(16, (256LL << 20) / bytes + 1)));
      if (bytes * copies > (24LL << 30)) continue;
      std::vector<Problem> prs(copies);
      for (int c = 0; c < copies; ++c) {
        prs[c].lens.assign(B, ctx);
        prs[c].kseed = 100 + c;
        prs[c].vseed = 200 + c;
        prs[c].build(7 + c);
      }
      for (const auto& v : decode_variants) {
        if (!announce(v)) continue;
        const attn::Plan p = plan_of(prs[0], v, smem_optin);
        double err = 0;
        // First and last query; past 256K keys in all only the last (its float64 reference costs ~1 s on the CPU).
        const std::vector<int> qs = static_cast<int64_t>(B) * ctx > (int64_t{1} << 18) ? std::vector<int>{prs[0].T() - 1}
                                                                                         : std::vector<int>{0, prs[0].T() - 1};
        const bool ok = v.probe || run_checked(prs[0], v, smem_optin, work, qs, &err);
        if (!ok) {
          ++failures;
          std::printf("  B=%-3d ctx=%-6d %-28s FAILED validation (err %.2e): not timed\n", B, ctx, v.name.c_str(), err);
          if (js) std::fprintf(js, "{\"kind\":\"validate\",\"case\":\"decode B=%d ctx=%d\",\"variant\":\"%s\",\"err\":%.3e,\"ok\":false}\n", B, ctx, v.name.c_str(), json_num(err));
          continue;
        }
        void* w = p.work ? work.get(p.work) : nullptr;
        const double us = time_graph(prs, v, p, w, work.bytes, std::max(copies, 20), quick ? 3 : 10);
        const double gbs = bytes / (us * 1e-6) / 1e9;
        std::printf("  B=%-3d ctx=%-6d %-34s splits %-3d %9.2f us %8.0f GB/s %5.1f%% of copy (err %.1e)%s\n", B, ctx,
                    v.name.c_str(), p.splits, us, gbs, 100.0 * gbs / copy_gbs, err, v.probe ? " probe" : "");
        if (js)
          std::fprintf(js, "{\"kind\":\"decode\",\"B\":%d,\"ctx\":%d,\"variant\":\"%s\",\"splits\":%d,\"us\":%.3f,\"gbs\":%.1f,\"share\":%.4f,\"probe\":%s}\n",
                       B, ctx, v.name.c_str(), p.splits, us, gbs, gbs / copy_gbs, v.probe ? "true" : "false");
      }
      for (auto& pr : prs) pr.free_all();
    }
  }

  if (js) std::fclose(js);
  std::printf("\n%s: %d validation failure(s)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
