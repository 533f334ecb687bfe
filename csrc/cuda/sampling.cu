// argmax, softmax and sampling on CUDA, one block per row (csrc/cpu/sampling.cc is the reference).
//
// sample() reproduces the CPU algorithm without sorting the vocabulary. The CPU sorts the probabilities
// (descending, ties by lower id), cuts by top-k, then min-p, then top-p (smallest prefix reaching p), and picks by
// inverse CDF with u over the kept prefix. Every cut and the pick are "the first element, in sorted order, at
// which a running count or running probability mass reaches a threshold". Sorted order is the order of the
// 64-bit key (orderable logit bits << 32 | ~id): probability is a monotone function of the logit, so that order
// equals the CPU's except where two different logits round to the same probability. Such an element is found by
// an MSB-first radix select over the key, 8 bits a pass: a histogram of counts (or f64 masses) per digit among
// the elements that match the digits chosen so far, then a scan of the 256 bins from the top for the bin where
// the running value crosses the threshold. A pass stops early once the chosen bin holds a single element.
// That radix path is the fallback; sample_fast() below handles the usual case (a short kept prefix) exactly like
// the CPU's loops over a sorted candidate list. Probabilities are the CPU's f64 expressions exp(r/t - max) / sum
// (sum: see sample_fast), so the pick equals the CPU's except when u lands within ~1e-6 (fast path; ~1e-15 in
// the fallback) of a cumulative boundary, or on ties between probabilities of different logits.
#include <algorithm>
#include <climits>

#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

constexpr int kThreads = 1024;       // argmax (simple per-element work: 64 registers suffice)
constexpr int kRowThreads = 512;     // softmax, sample (f64 work: 128 registers without spills)

// Calls f(value, index) for the elements of row[0..V) owned by this thread, in increasing index order. A row is
// 600 KB for GLM-4 and one block streams it from L2 several times: 16-byte loads, 8 in flight per thread (one
// load at a time made every pass wait an L2 round trip per element: ~40 us a pass).
template <typename F>
__device__ __forceinline__ void for_row(const float* __restrict__ row, int V, F&& f) {
  constexpr int U = 8;
  if ((V & 3) == 0 && aligned16(row)) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = V >> 2;
    for (int base = threadIdx.x; base < n4; base += U * blockDim.x) {
      float4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * blockDim.x;
        v[u] = i < n4 ? __ldg(r4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * blockDim.x;
        if (i < n4) {
          f(v[u].x, 4 * i);
          f(v[u].y, 4 * i + 1);
          f(v[u].z, 4 * i + 2);
          f(v[u].w, 4 * i + 3);
        }
      }
    }
  } else {
    for (int base = threadIdx.x; base < V; base += U * blockDim.x) {
      float v[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int i = base + u * blockDim.x;
        v[u] = i < V ? __ldg(row + i) : 0.f;
      }
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u * blockDim.x < V) f(v[u], base + u * blockDim.x);
    }
  }
}

// ----------------------------------------------------------------- argmax

struct ArgSmem {
  float v[32];
  int i[32], nan[32];
};

// Index of the first maximum of row[0..V). kNanFirst: a NaN wins (the argmax op: the CPU returns the first NaN).
// Otherwise NaN is ignored (the CPU's `r[j] > r[best]` scan used by sample() at temperature 0, whose row[0] ==
// NaN case the caller handles). One pass of 16-byte loads; each thread keeps its first maximum and its first
// NaN, then the block merges (larger value, then lower index). Every thread gets the result.
template <bool kNanFirst>
__device__ int block_argmax(const float* __restrict__ row, int V, ArgSmem& sm) {
  float bv = -INFINITY;
  int bi = INT_MAX, fn = INT_MAX;  // best index (INT_MAX: none yet), first NaN
  auto visit = [&](float v, int j) {
    if (isnan(v)) {
      fn = min(fn, j);
    } else if (v > bv || bi == INT_MAX) {  // indices of a thread increase: strict > keeps the first
      bv = v;
      bi = j;
    }
  };
  for_row(row, V, visit);
  auto merge = [&](float ov, int oi, int ofn) {
    fn = min(fn, ofn);
    if (oi != INT_MAX && (bi == INT_MAX || ov > bv || (ov == bv && oi < bi))) {
      bv = ov;
      bi = oi;
    }
  };
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o), ofn = __shfl_xor_sync(0xffffffffu, fn, o);
    merge(ov, oi, ofn);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    sm.v[warp] = bv;
    sm.i[warp] = bi;
    sm.nan[warp] = fn;
  }
  __syncthreads();
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) merge(sm.v[w], sm.i[w], sm.nan[w]);
  if (kNanFirst && fn != INT_MAX) return fn;
  return bi == INT_MAX ? 0 : bi;  // no candidate: a row of NaN only
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ x, int V) {
  __shared__ ArgSmem sm;
  const int b = block_argmax<true>(x + static_cast<int64_t>(blockIdx.x) * V, V, sm);
  if (threadIdx.x == 0) out[blockIdx.x] = b;
}

// ----------------------------------------------------------------- softmax

// out = softmax(x / temperature): the CPU's f32 max and exponentials, f64 sum, f64 division rounded to f32.
__global__ void __launch_bounds__(kRowThreads) softmax_kernel(float* out, const float* x, int V, float temperature) {
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  const float* r = x + static_cast<int64_t>(blockIdx.x) * V;
  float* o = out + static_cast<int64_t>(blockIdx.x) * V;
  float mx = -INFINITY;
  for_row(r, V, [&](float v, int) { mx = fmaxf(mx, v / temperature); });
  mx = block_reduce(mx, red_f, MaxOp{});
  double sum = 0.0;
  for_row(r, V, [&](float v, int) { sum += static_cast<double>(expf(v / temperature - mx)); });
  sum = block_reduce(sum, red_d, SumOp{});
  // out may alias x: every element was read above (before the barriers in block_reduce) and is recomputed here
  // from r[j] by the same thread that overwrites it.
  for_row(r, V, [&](float v, int j) { o[j] = static_cast<float>(static_cast<double>(expf(v / temperature - mx)) / sum); });
}

// ----------------------------------------------------------------- sample

__device__ __forceinline__ uint32_t ord_bits(float f) {  // monotone float -> uint32
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_logit(uint64_t key) {
  const uint32_t o = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
// Larger key = earlier in the CPU's sorted order: higher logit, then lower id.
__device__ __forceinline__ uint64_t make_key(float logit, int j) {
  return (static_cast<uint64_t>(ord_bits(logit)) << 32) | static_cast<uint32_t>(0xffffffffu - static_cast<uint32_t>(j));
}
__device__ __forceinline__ int key_id(uint64_t key) { return static_cast<int>(0xffffffffu - static_cast<uint32_t>(key)); }

struct RowProb {
  const float* r;
  int V;
  double inv_temp, mx, sum;  // mx = max_j r_j / temp (f64), sum = sum_j exp(r_j / temp - mx), like the CPU
  // r * (1/temp) instead of the CPU's r / temp: the f64 division cost more than the exponential, and the two
  // differ by at most an ulp of f64 (a relative 1e-16 in the probability)
  __device__ __forceinline__ double e(float logit) const { return exp(static_cast<double>(logit) * inv_temp - mx); }
  __device__ __forceinline__ double pr(float logit) const { return e(logit) / sum; }
};

constexpr int kCap = 2048;             // candidates sorted exactly (smem: 16 KB of keys, 16 KB of probabilities)
constexpr float kBinsPerLogit = 8.f;   // candidate histogram: bins of 1/8 logit below the maximum

struct SampleSmem {
  unsigned long long keys[kCap];
  double pr[kCap];
  unsigned cnt[256];
  double mass[256];
  int ncand, bin_limit, pick;
  double red_d[32];
  float red_f[32];
  unsigned red_u[32];
  int sel_bin;
  unsigned sel_count;
  double sel_above;
  unsigned long long sel_key;
  ArgSmem arg;
};

struct Selected {
  uint64_t key;
  double above, own;  // running value (count or mass) of the elements before it, and its own value
};

// Walks the eligible elements (key >= lo) from the largest key down and returns the first one whose inclusive
// running value (1 per element, or its probability when by_mass) reaches theta (>= theta; > theta if strict).
// If none does (theta beyond the total, by rounding), returns the smallest eligible element.
__device__ Selected radix_select(const RowProb& R, uint64_t lo, bool by_mass, double theta, bool strict, SampleSmem& sm) {
  const int tid = threadIdx.x, lane = tid & 31;
  uint64_t prefix = 0, mask = 0;
  double above = 0.0;
  bool need_scan = false;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += blockDim.x) {
      sm.cnt[b] = 0;
      sm.mass[b] = 0.0;
    }
    __syncthreads();
    for (int base = 0; base < R.V; base += blockDim.x) {  // same trip count for every thread: warp-wide ops below
      const int j = base + tid;
      int bin = -1;
      double val = 0.0;
      if (j < R.V) {
        const float lg = R.r[j];
        const uint64_t k = make_key(lg, j);
        if (k >= lo && (k & mask) == prefix) {
          bin = static_cast<int>((k >> shift) & 255u);
          if (by_mass) val = R.pr(lg);
        }
      }
      if (!by_mass) {
        // Lanes with the same digit add once: most of a row shares the top digits.
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin >= 0 && lane == __ffs(peers) - 1) atomicAdd(&sm.cnt[bin], static_cast<unsigned>(__popc(peers)));
      } else {
        unsigned pending = __ballot_sync(0xffffffffu, bin >= 0);
        while (pending) {  // one warp sum per distinct digit in the warp
          const int b = __shfl_sync(0xffffffffu, bin, __ffs(pending) - 1);
          const bool mine = bin == b;
          const unsigned who = __ballot_sync(0xffffffffu, mine);
          const double v = warp_sum(mine ? val : 0.0);
          if (lane == 0) {
            atomicAdd(&sm.mass[b], v);
            atomicAdd(&sm.cnt[b], static_cast<unsigned>(__popc(who)));
          }
          pending &= ~who;
        }
      }
    }
    __syncthreads();
    if (tid == 0) {
      double run = above, last_above = above;
      int chosen = -1, last = -1;
      for (int b = 255; b >= 0; --b) {
        if (sm.cnt[b] == 0) continue;
        const double v = by_mass ? sm.mass[b] : static_cast<double>(sm.cnt[b]);
        if (strict ? (run + v > theta) : (run + v >= theta)) {
          chosen = b;
          last_above = run;
          break;
        }
        last = b;
        last_above = run;
        run += v;
      }
      if (chosen < 0) chosen = last < 0 ? 0 : last;  // not reached: the smallest element of the range
      sm.sel_bin = chosen;
      sm.sel_key = prefix | (static_cast<uint64_t>(chosen) << shift);  // replaced by the scan below if it runs
      sm.sel_above = last_above;
      sm.sel_count = sm.cnt[chosen];
    }
    __syncthreads();
    prefix |= static_cast<uint64_t>(sm.sel_bin) << shift;
    mask |= uint64_t{0xff} << shift;
    above = sm.sel_above;
    if (shift == 0) break;            // the key is complete (keys are unique)
    if (sm.sel_count <= 1) {          // one element left: fetch its key below
      need_scan = true;
      break;
    }
  }
  if (need_scan) {
    for (int j = tid; j < R.V; j += blockDim.x) {
      const uint64_t k = make_key(R.r[j], j);
      if (k >= lo && (k & mask) == prefix) sm.sel_key = k;  // exactly one writer
    }
    __syncthreads();
    prefix = sm.sel_key;
  }
  Selected s;
  s.key = prefix;
  s.above = above;
  s.own = by_mass ? R.pr(key_logit(prefix)) : 1.0;
  __syncthreads();  // sm is reused by the next selection
  return s;
}

// Fast path of sample(): the kept set is almost always a short prefix of the sorted order. A histogram of
// (max - logit) in 1/8-logit bins (built in the same pass as the f64 sum) picks the largest prefix of bins with
// at most kCap elements; those candidates (a prefix of the sorted order: the bin is monotone in the logit) are
// gathered, sorted by key in shared memory, and one thread runs the CPU's loops over them in the CPU's order, so
// the cumulative sums are the CPU's additions. If the loops need an element beyond the candidates (flat
// distributions), the radix selection below decides instead. Returns the picked id, or -1 for "fall back".
__device__ int sample_fast(RowProb& R, float mxf, int64_t keep0, float min_p, float top_p, float u, SampleSmem& sm) {
  const int tid = threadIdx.x, V = R.V;
  if (tid == 0) {
    unsigned cum = 0;
    int b = -1;
    for (int i = 0; i < 256; ++i) {
      if (cum + sm.cnt[i] > static_cast<unsigned>(kCap)) break;
      cum += sm.cnt[i];
      b = i;
    }
    sm.bin_limit = b;
    sm.ncand = 0;
  }
  __syncthreads();
  const int blim = sm.bin_limit;
  double s_rest = 0.0;  // sum of exp over the non-candidates, from f32 exponentials (see below)
  for_row(R.r, V, [&](float lg, int j) {
    const float d = (mxf - lg) * kBinsPerLogit;
    if ((d < 255.f ? static_cast<int>(d) : 255) <= blim)
      sm.keys[atomicAdd(&sm.ncand, 1)] = make_key(lg, j);  // at most kCap of these
    else
      s_rest += static_cast<double>(expf(static_cast<float>(static_cast<double>(lg) * R.inv_temp - R.mx)));
  });
  __syncthreads();
  const int c = sm.ncand;
  int n2 = 1;
  while (n2 < c) n2 <<= 1;
  for (int i = c + tid; i < n2; i += blockDim.x) sm.keys[i] = 0;  // smallest keys sort last
  __syncthreads();
  for (int k = 2; k <= n2; k <<= 1)  // bitonic sort, descending
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < n2; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const unsigned long long a = sm.keys[i], b = sm.keys[ixj];
          if ((i & k) == 0 ? a < b : a > b) {
            sm.keys[i] = b;
            sm.keys[ixj] = a;
          }
        }
      }
      __syncthreads();
    }
  // The sum of exponentials: f64 for the candidates, which hold nearly all of the mass, f32 for the rest (an
  // f32 exponential of a rounded argument is within ~5e-6 relative, so the sum differs from the CPU's all-f64 one
  // by at most ~5e-6 x the non-candidates' share of the mass). This pass was most of the kernel's time in f64.
  double s_cand = 0.0;
  for (int i = tid; i < c; i += blockDim.x) {
    const double e = R.e(key_logit(sm.keys[i]));
    sm.pr[i] = e;
    s_cand += e;
  }
  s_rest = block_reduce(s_rest, sm.red_d, SumOp{});
  s_cand = block_reduce(s_cand, sm.red_d, SumOp{});
  R.sum = s_rest + s_cand;
  for (int i = tid; i < c; i += blockDim.x) sm.pr[i] /= R.sum;  // the CPU's pr = e / sum
  __syncthreads();
  if (tid == 0) {
    // The CPU's loops, fused: stop at top-k, at the first element below the min-p floor, or once the running
    // mass reaches top-p; the running sum is then the mass the pick renormalizes by. pr[j] is replaced by the
    // running sum through j (the CPU's additions, in its order) for the pick below.
    const bool use_minp = min_p > 0.f, use_topp = top_p > 0.f && top_p < 1.f;
    const double floor = static_cast<double>(min_p) * (1.0 / R.sum);
    int keep = 0;  // 0: the candidates ran out first
    double cum = 0.0, pn = c > 0 ? sm.pr[0] : 0.0;
    for (int j = 0;; ++j) {
      if (j >= keep0) { keep = j; break; }
      if (j >= c) {  // the candidates ran out (c < V here, since keep0 <= V)
        // Without any cut the kept set is the whole row and its mass is 1 (the CPU's sorted-order sum of all
        // probabilities differs from 1 by ~1e-11): the pick is among the candidates if u is below their mass.
        if (!use_minp && !use_topp && keep0 == V && static_cast<double>(u) < cum) {
          keep = c;
          cum = 1.0;
        }
        break;
      }
      const double p = pn;
      pn = j + 1 < c ? sm.pr[j + 1] : 0.0;  // loaded ahead: the loop is one dependent f64 add per element
      if (use_minp && j >= 1 && p < floor) { keep = j; break; }
      cum += p;
      sm.pr[j] = cum;
      if (use_topp && cum >= static_cast<double>(top_p)) { keep = j + 1; break; }
    }
    sm.ncand = keep;
    sm.sel_above = static_cast<double>(u) * cum;  // target
    sm.pick = keep > 0 ? keep - 1 : -1;           // the last kept one unless the target is crossed earlier
  }
  __syncthreads();
  {
    // Inverse CDF: the first kept j whose running sum exceeds the target (running sums are non-decreasing).
    const int keep = sm.ncand;
    const double target = sm.sel_above;
    for (int j = tid; j < keep; j += blockDim.x)
      if (target < sm.pr[j] && (j == 0 || !(target < sm.pr[j - 1]))) atomicMin(&sm.pick, j);
  }
  __syncthreads();
  if (tid == 0) sm.pick = sm.pick >= 0 ? key_id(sm.keys[sm.pick]) : -1;
  __syncthreads();
  const int pick = sm.pick;
  __syncthreads();  // sm is reused by the fallback
  return pick;
}

__global__ void __launch_bounds__(kRowThreads) sample_kernel(int32_t* __restrict__ out, const float* __restrict__ logits,
                                                          const float* __restrict__ params,
                                                          const int32_t* __restrict__ top_k, int V) {
  __shared__ SampleSmem sm;
  const int row = blockIdx.x, tid = threadIdx.x;
  const float* r = logits + static_cast<int64_t>(row) * V;
  const float temp = params[row * 4 + 0], top_p = params[row * 4 + 1], min_p = params[row * 4 + 2],
              u = params[row * 4 + 3];
  const int k = top_k[row];

  if (!(temp > 0.f)) {  // greedy: the CPU's `r[j] > r[best]` scan from best = 0
    const int b = isnan(r[0]) ? 0 : block_argmax<false>(r, V, sm.arg);
    if (tid == 0) out[row] = b;
    return;
  }

  RowProb R{r, V, 1.0 / static_cast<double>(temp), 0.0, 0.0};
  float mxf = -INFINITY;
  for_row(r, V, [&](float v, int) { mxf = fmaxf(mxf, v); });
  mxf = block_reduce(mxf, sm.red_f, MaxOp{});
  R.mx = static_cast<double>(mxf) * R.inv_temp;  // = max_j r_j / temp: scaling by 1/temp > 0 is monotone
  for (int b = tid; b < 256; b += blockDim.x) sm.cnt[b] = 0;
  __syncthreads();
  for_row(r, V, [&](float v, int) {
    const float d = (mxf - v) * kBinsPerLogit;
    atomicAdd(&sm.cnt[d < 255.f ? static_cast<int>(d) : 255], 1u);
  });
  __syncthreads();

  const int64_t keep0 = k > 0 ? std::min<int64_t>(V, k) : V;
  const int fast = sample_fast(R, mxf, keep0, min_p, top_p, u, sm);
  if (fast >= 0) {
    if (tid == 0) out[row] = fast;
    return;
  }

  // Fallback: radix selection over the whole row, with the CPU's all-f64 sum.
  double s = 0.0;
  for_row(r, V, [&](float v, int) { s += R.e(v); });
  R.sum = block_reduce(s, sm.red_d, SumOp{});
  // top-k, then min-p: both keep a prefix of known length.
  int64_t keep = keep0;
  if (min_p > 0.f) {
    const double floor = static_cast<double>(min_p) * (1.0 / R.sum);  // min_p * (probability of the best)
    unsigned c = 0;
    for_row(r, V, [&](float v, int) { c += R.pr(v) >= floor ? 1u : 0u; });
    c = block_reduce(c, sm.red_u, SumOp{});
    keep = std::min<int64_t>(keep, std::max<unsigned>(c, 1u));
  }
  uint64_t lo = 0;  // the kept set is {key >= lo}
  if (keep < V) lo = radix_select(R, 0, false, static_cast<double>(keep), false, sm).key;

  // top-p: the smallest prefix whose mass reaches p; its mass is what the pick renormalizes by.
  double mass;
  if (top_p > 0.f && top_p < 1.f) {
    const Selected sel = radix_select(R, lo, true, static_cast<double>(top_p), false, sm);
    lo = sel.key;
    mass = sel.above + sel.own;
  } else {
    double m = 0.0;
    for_row(r, V, [&](float v, int j) {
      if (make_key(v, j) >= lo) m += R.pr(v);
    });
    mass = block_reduce(m, sm.red_d, SumOp{});
  }

  // Inverse CDF: the first kept element whose running mass exceeds u * mass (else the last kept one).
  const Selected pick = radix_select(R, lo, true, static_cast<double>(u) * mass, true, sm);
  if (tid == 0) out[row] = key_id(pick.key);
}

}  // namespace

void argmax(Context& c, const Tensor& out, const Tensor& x) {
  const int64_t m = x.dim(0), v = x.dim(1);
  if (m == 0) return;
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "argmax: x ", x.describe(), " is too large");
  argmax_kernel<<<static_cast<unsigned>(m), kThreads, 0, stream_of(c)>>>(out.data<int32_t>(), x.data<float>(),
                                                                        static_cast<int>(v));
  CUDA_CHECK_LAUNCH("argmax");
}

void softmax(Context& c, const Tensor& out, const Tensor& x, float temperature) {
  const int64_t m = x.dim(0), v = x.dim(1);
  if (m == 0 || v == 0) return;
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "softmax: x ", x.describe(), " is too large");
  softmax_kernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream_of(c)>>>(out.data<float>(), x.data<float>(),
                                                                         static_cast<int>(v), temperature);
  CUDA_CHECK_LAUNCH("softmax");
}

void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k) {
  const int64_t m = logits.dim(0), v = logits.dim(1);
  if (m == 0) return;
  GLM4_CHECK(v > 0, GLM4_E_SHAPE, "sample: logits ", logits.describe(), " have empty rows");
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "sample: logits ", logits.describe(),
             " are too large");
  sample_kernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream_of(c)>>>(out.data<int32_t>(), logits.data<float>(),
                                                                        params.data<float>(), top_k.data<int32_t>(),
                                                                        static_cast<int>(v));
  CUDA_CHECK_LAUNCH("sample");
}

}  // namespace cuda
}  // namespace glm4
