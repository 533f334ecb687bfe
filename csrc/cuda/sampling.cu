// argmax, softmax and sampling on CUDA (csrc/cpu/sampling.cc is the reference).
//
// Two families of kernels:
//  - sm_90 and later: a row is split over a thread-block cluster of C = 2..8 blocks (distributed shared memory, no
//    scratch buffer, no host round trip, graph-capturable). One SM streams a 600 KB GLM-4 row at ~45 GB/s
//    (argmax 13.8 us, sample 90-168 us on the H100 with one block a row); C blocks stream C slices at once.
//  - before sm_90, or rows too long for the cluster's shared memory: one block per row (the "single" kernels).
//    GLM4_SAMPLING_BLOCKS=single forces them and =4 / =8 forces the cluster size (validation and tuning only).
//
// sample() picks like the CPU without sorting the vocabulary. The CPU sorts the probabilities (descending, ties
// by lower id), cuts by top-k, then min-p, then top-p (smallest prefix reaching p), and picks by inverse CDF with
// u over the kept prefix. Sorted order is the order of the 64-bit key (orderable logit bits << 32 | ~id):
// probability is a monotone function of the logit, so that order equals the CPU's except where two different
// logits round to the same probability.
//
// Cluster sample kernel (per row; the row's slices live in the blocks' shared memory, read from memory once):
//  1. load the slice (repetition penalty applied on the way, from a bitmap of the row's listed ids), max and NaN;
//     the blocks push their partial results into the leader (block 0); greedy rows end here.
//  2. each block histograms its slice by a = logit/t - max/t (log of the unnormalized probability e): 512 bins
//     of 1/16 nat, count and mass (e from an f32 exponential, in 2^-42 fixed point: integer sums are exact and
//     order-independent, so the result does not depend on which block or warp adds first).
//  3. the leader merges the bins and bounds the bins that must hold the kept set (top-k: count; min-p:
//     a >= log(min_p); top-p: mass with a 1e-5 margin), or without any cut the pick (mass). When they hold at most
//     kCap = 2048 elements (the usual case), those candidates are gathered into the leader, sorted by key, their f64
//     probabilities computed with the CPU's expression (the sum: f64 for the candidates, the fixed-point bins
//     for the rest), and the CPU's cuts and pick are evaluated on their prefix sums (a block scan).
//  4. otherwise (flat distributions with a large kept set or a deep pick: the "deep" path) each cut and the pick
//     is a cluster-wide selection: the level-1 bins, refined by 8-bit digits of the key inside the crossing bin
//     until at most kCap elements remain, which are gathered, sorted and scanned exactly. Masses before the
//     window come from the fixed-point bins: decisions within ~1e-6 of a boundary may differ from the CPU's.
// The pick equals the CPU's except when u or a cut lands within ~1e-6 of a cumulative boundary (the rest of
// the row's mass is summed from f32 exponentials), or on ties between probabilities of different logits.
// Rows with NaN or +Inf logits, or only -Inf: the CPU's sum is NaN and its loops then pick index
// (min_p > 0 ? 1 : top-k or V) - 1; so do the kernels.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <utility>

#include <cooperative_groups.h>

#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 1024;       // argmax (simple per-element work: 64 registers suffice)
constexpr int kRowThreads = 512;     // softmax, sample (f64 work: 128 registers without spills)
constexpr int kMaxCluster = 8;       // portable cluster size

// Repetition penalty (CTRL / HF), the CPU's f32 expression with IEEE rounding (no contraction, no fast division).
__device__ __forceinline__ float penalize(float v, float p) { return v > 0.f ? __fdiv_rn(v, p) : __fmul_rn(v, p); }

// Calls f(value, index) for the elements row[begin..end) owned by this thread, in increasing index order (begin a
// multiple of 4 for the vector path). 16-byte loads, 8 in flight per thread (one load at a time made every pass
// wait an L2 round trip per element: ~40 us a pass over a GLM-4 row).
template <typename F>
__device__ __forceinline__ void for_range(const float* __restrict__ row, int begin, int end, F&& f) {
  constexpr int U = 8;
  const int n = end - begin;
  if (n <= 0) return;
  const float* p = row + begin;
  int done = 0;
  if (aligned16(p)) {
    const float4* r4 = reinterpret_cast<const float4*>(p);
    const int n4 = n >> 2;
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
          f(v[u].x, begin + 4 * i);
          f(v[u].y, begin + 4 * i + 1);
          f(v[u].z, begin + 4 * i + 2);
          f(v[u].w, begin + 4 * i + 3);
        }
      }
    }
    done = n4 << 2;
  }
  for (int base = done + static_cast<int>(threadIdx.x); base < n; base += U * blockDim.x) {
    float v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = base + u * blockDim.x;
      v[u] = i < n ? __ldg(p + i) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < U; ++u)
      if (base + u * blockDim.x < n) f(v[u], begin + base + u * blockDim.x);
  }
}

// A row as the sampler sees it: the logits with the repetition penalty applied to the tokens set in `bits` (a
// shared-memory bitmap over [0, V), or nullptr).
struct RowView {
  const float* r;
  int V;
  const uint32_t* bits;
  float pen;
  __device__ __forceinline__ float fix(float v, int j) const {
    return (bits != nullptr && ((bits[j >> 5] >> (j & 31)) & 1u)) ? penalize(v, pen) : v;
  }
  __device__ __forceinline__ float at(int j) const { return fix(r[j], j); }
};

template <typename F>
__device__ __forceinline__ void for_row(const RowView& R, F&& f) {
  for_range(R.r, 0, R.V, [&](float v, int j) { f(R.fix(v, j), j); });
}

// Sets the bits of the listed ids that fall in [lo, hi) (bit id - lo); bits has (hi - lo + 31) / 32 words.
__device__ void build_penalty_bits(uint32_t* bits, const int32_t* __restrict__ ids, int n, int lo, int hi) {
  const int words = (hi - lo + 31) >> 5;
  for (int w = threadIdx.x; w < words; w += blockDim.x) bits[w] = 0u;
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int id = ids[i];
    if (id >= lo && id < hi) atomicOr(&bits[(id - lo) >> 5], 1u << ((id - lo) & 31));
  }
  __syncthreads();
}

// ----------------------------------------------------------------- first maximum

struct ArgSmem {
  float v[32];
  int i[32], nan[32];
};

// A running first maximum: best value and index (INT_MAX: none yet) and the first NaN's index.
struct FirstMax {
  float bv = -INFINITY;
  int bi = INT_MAX, fn = INT_MAX;
  // Visits must come in increasing index order: strict > keeps the first of equal values.
  __device__ __forceinline__ void visit(float v, int j) {
    if (isnan(v)) {
      fn = min(fn, j);
    } else if (v > bv || bi == INT_MAX) {
      bv = v;
      bi = j;
    }
  }
  // Merges another state (any order): larger value, then lower index.
  __device__ __forceinline__ void merge(float ov, int oi, int ofn) {
    fn = min(fn, ofn);
    if (oi != INT_MAX && (bi == INT_MAX || ov > bv || (ov == bv && oi < bi))) {
      bv = ov;
      bi = oi;
    }
  }
  // Block-wide merge; every thread gets the result. Contains two __syncthreads.
  __device__ void block_merge(ArgSmem& sm) {
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
  }
};

// Index of the first maximum of a row. kNanFirst: a NaN wins (the argmax op: the CPU returns the first NaN).
// Otherwise NaN is ignored (the CPU's `r[j] > r[best]` scan used by sample() at temperature 0, whose row[0] ==
// NaN case the caller handles). Every thread gets the result.
template <bool kNanFirst>
__device__ int block_argmax(const RowView& R, ArgSmem& sm) {
  FirstMax s;
  for_row(R, [&](float v, int j) { s.visit(v, j); });
  s.block_merge(sm);
  if (kNanFirst && s.fn != INT_MAX) return s.fn;
  return s.bi == INT_MAX ? 0 : s.bi;  // no candidate: a row of NaN only
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ x, int V) {
  __shared__ ArgSmem sm;
  const RowView R{x + static_cast<int64_t>(blockIdx.x) * V, V, nullptr, 1.f};
  const int b = block_argmax<true>(R, sm);
  if (threadIdx.x == 0) out[blockIdx.x] = b;
}

// Cluster argmax: block `rank` of the cluster of row blockIdx.y scans the slice [rank * chunk, + chunk) and pushes
// its first maximum and first NaN into the leader's shared memory; the leader merges them in slice order.
__global__ void __launch_bounds__(kThreads) argmax_cluster_kernel(int32_t* __restrict__ out, const float* __restrict__ x,
                                                                  int V, int chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ ArgSmem sm;
  __shared__ float part_v[kMaxCluster];
  __shared__ int part_i[kMaxCluster], part_nan[kMaxCluster];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), C = static_cast<int>(cluster.num_blocks());
  auto arrived = cluster.barrier_arrive();  // the leader's shared memory is written only once every block runs
  const float* row = x + static_cast<int64_t>(blockIdx.y) * V;
  const int begin = min(V, rank * chunk), end = min(V, begin + chunk);
  FirstMax s;
  for_range(row, begin, end, [&](float v, int j) { s.visit(v, j); });
  s.block_merge(sm);
  cluster.barrier_wait(std::move(arrived));
  if (threadIdx.x == 0) {
    *cluster.map_shared_rank(&part_v[rank], 0) = s.bv;
    *cluster.map_shared_rank(&part_i[rank], 0) = s.bi;
    *cluster.map_shared_rank(&part_nan[rank], 0) = s.fn;
  }
  cluster.sync();
  if (rank == 0 && threadIdx.x == 0) {
    FirstMax m;
    for (int q = 0; q < C; ++q) m.merge(part_v[q], part_i[q], part_nan[q]);
    out[blockIdx.y] = m.fn != INT_MAX ? m.fn : (m.bi == INT_MAX ? 0 : m.bi);
  }
#endif
}

// ----------------------------------------------------------------- softmax

// out = softmax(x / temperature): the CPU's f32 max and exponentials, f64 sum, f64 division rounded to f32.
__global__ void __launch_bounds__(kRowThreads) softmax_kernel(float* out, const float* x, int V, float temperature) {
  __shared__ float red_f[32];
  __shared__ double red_d[32];
  const RowView R{x + static_cast<int64_t>(blockIdx.x) * V, V, nullptr, 1.f};
  float* o = out + static_cast<int64_t>(blockIdx.x) * V;
  float mx = -INFINITY;
  for_row(R, [&](float v, int) { mx = fmaxf(mx, v / temperature); });
  mx = block_reduce(mx, red_f, MaxOp{});
  double sum = 0.0;
  for_row(R, [&](float v, int) { sum += static_cast<double>(expf(v / temperature - mx)); });
  sum = block_reduce(sum, red_d, SumOp{});
  // out may alias x: every element was read above (before the barriers in block_reduce) and is recomputed here
  // from r[j] by the same thread that overwrites it.
  for_row(R, [&](float v, int j) { o[j] = static_cast<float>(static_cast<double>(expf(v / temperature - mx)) / sum); });
}

// ----------------------------------------------------------------- sample: shared pieces

__device__ __forceinline__ uint32_t ord_bits(float f) {  // monotone float -> uint32
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_logit(uint64_t key) {
  const uint32_t o = static_cast<uint32_t>(key >> 32);
  return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}
// Larger key = earlier in the CPU's sorted order: higher logit, then lower id. -0 is keyed as +0 (equal
// probabilities, so the CPU orders them by id).
__device__ __forceinline__ uint64_t make_key(float logit, int j) {
  const float l = logit == 0.f ? 0.f : logit;
  return (static_cast<uint64_t>(ord_bits(l)) << 32) | static_cast<uint32_t>(0xffffffffu - static_cast<uint32_t>(j));
}
__device__ __forceinline__ int key_id(uint64_t key) { return static_cast<int>(0xffffffffu - static_cast<uint32_t>(key)); }

// The CPU's pick when its probability sum is NaN (a NaN or +Inf logit, or no logit above -Inf): every comparison
// fails, the stable sort keeps index order, min-p keeps one token, top-p keeps all, and the pick is the last kept.
__device__ __forceinline__ int nan_row_pick(float min_p, int k, int V) {
  return (min_p > 0.f ? 1 : (k > 0 ? min(k, V) : V)) - 1;
}

constexpr int kCap = 2048;  // elements sorted exactly in shared memory (16 KB of keys, 16 KB of probabilities)

// Bitonic sort of keys[0..n) in descending order (n <= kCap; keys[n..pow2) are overwritten with 0).
__device__ void sort_keys_desc(unsigned long long* keys, int n) {
  const int tid = threadIdx.x;
  int n2 = 1;
  while (n2 < n) n2 <<= 1;
  for (int i = n + tid; i < n2; i += blockDim.x) keys[i] = 0;  // smallest keys sort last
  __syncthreads();
  for (int k = 2; k <= n2; k <<= 1)
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < n2; i += blockDim.x) {
        const int ixj = i ^ j;
        if (ixj > i) {
          const unsigned long long a = keys[i], b = keys[ixj];
          if ((i & k) == 0 ? a < b : a > b) {
            keys[i] = b;
            keys[ixj] = a;
          }
        }
      }
      __syncthreads();
    }
}

// In-place inclusive prefix sum of a[0..n) over the block (each thread a contiguous run, then a block scan of the
// run totals): a fixed order, so the result does not vary from run to run. red: 32 doubles of shared scratch.
__device__ void block_inclusive_scan(double* a, int n, double* red) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
  const int per = (n + blockDim.x - 1) / blockDim.x;
  const int b = min(n, tid * per), e = min(n, b + per);
  double s = 0.0;
  for (int i = b; i < e; ++i) s += a[i];
  double inc = s;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double t = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += t;
  }
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 31) red[warp] = inc;
  __syncthreads();
  if (warp == 0) {
    double t = lane < nw ? red[lane] : 0.0;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double y = __shfl_up_sync(0xffffffffu, t, o);
      if (lane >= o) t += y;
    }
    if (lane < nw) red[lane] = t;
  }
  __syncthreads();
  double run = (warp > 0 ? red[warp - 1] : 0.0) + inc - s;
  for (int i = b; i < e; ++i) {
    run += a[i];
    a[i] = run;
  }
  __syncthreads();
}

// ----------------------------------------------------------------- sample: one block per row

struct RowProb {
  RowView v;
  double inv_temp, mx, sum;  // mx = max_j r_j / temp (f64), sum = sum_j exp(r_j / temp - mx), like the CPU
  // r * (1/temp) instead of the CPU's r / temp: the f64 division cost more than the exponential, and the two
  // differ by at most an ulp of f64 (a relative 1e-16 in the probability)
  __device__ __forceinline__ double e(float logit) const { return exp(static_cast<double>(logit) * inv_temp - mx); }
  __device__ __forceinline__ double pr(float logit) const { return e(logit) / sum; }
};

constexpr float kBinsPerLogit = 8.f;   // candidate histogram: bins of 1/8 logit below the maximum

struct SampleSmem {
  unsigned long long keys[kCap];
  double pr[kCap];
  unsigned cnt[256];
  double mass[256];
  int ncand, bin_limit, pick;
  double red_d[32];
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
  const int tid = threadIdx.x, lane = tid & 31, V = R.v.V;
  uint64_t prefix = 0, mask = 0;
  double above = 0.0;
  bool need_scan = false;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += blockDim.x) {
      sm.cnt[b] = 0;
      sm.mass[b] = 0.0;
    }
    __syncthreads();
    for (int base = 0; base < V; base += blockDim.x) {  // same trip count for every thread: warp-wide ops below
      const int j = base + tid;
      int bin = -1;
      double val = 0.0;
      if (j < V) {
        const float lg = R.v.at(j);
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
    for (int j = tid; j < V; j += blockDim.x) {
      const uint64_t k = make_key(R.v.at(j), j);
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

// Fast path of the single-block sample: the kept set is almost always a short prefix of the sorted order. A
// histogram of (max - logit) in 1/8-logit bins (built in the same pass as the f64 sum) picks the largest prefix
// of bins with at most kCap elements; those candidates (a prefix of the sorted order: the bin is monotone in the
// logit) are gathered, sorted by key in shared memory, and one thread runs the CPU's loops over them in the CPU's
// order, so the cumulative sums are the CPU's additions. If the loops need an element beyond the candidates (flat
// distributions), the radix selection below decides instead. Returns the picked id, or -1 for "fall back".
__device__ int sample_fast(RowProb& R, float mxf, int64_t keep0, float min_p, float top_p, float u, SampleSmem& sm) {
  const int tid = threadIdx.x, V = R.v.V;
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
  for_row(R.v, [&](float lg, int j) {
    const float d = (mxf - lg) * kBinsPerLogit;
    if ((d < 255.f ? static_cast<int>(d) : 255) <= blim)
      sm.keys[atomicAdd(&sm.ncand, 1)] = make_key(lg, j);  // at most kCap of these
    else
      s_rest += static_cast<double>(expf(static_cast<float>(static_cast<double>(lg) * R.inv_temp - R.mx)));
  });
  __syncthreads();
  const int c = sm.ncand;
  sort_keys_desc(sm.keys, c);
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

// One block per row. Dynamic shared memory: the penalty bitmap over [0, V) when penalty ids are given.
__global__ void __launch_bounds__(kRowThreads) sample_kernel(int32_t* __restrict__ out, const float* __restrict__ logits,
                                                          const float* __restrict__ params, int pc,
                                                          const int32_t* __restrict__ top_k,
                                                          const int32_t* __restrict__ pen_ids,
                                                          const int32_t* __restrict__ pen_len, int L, int V) {
  __shared__ SampleSmem sm;
  extern __shared__ uint32_t pen_bits[];
  const int row = blockIdx.x, tid = threadIdx.x;
  const float* prm = params + static_cast<int64_t>(row) * pc;
  const float temp = prm[0], top_p = prm[1], min_p = prm[2], u = prm[3];
  const float pen = pc > 4 ? prm[4] : 1.f;
  const int k = top_k[row];
  RowView rv{logits + static_cast<int64_t>(row) * V, V, nullptr, pen};
  if (pen_ids != nullptr && pen != 1.f) {  // a penalty of 1 changes no logit
    build_penalty_bits(pen_bits, pen_ids + static_cast<int64_t>(row) * L, min(max(pen_len[row], 0), L), 0, V);
    rv.bits = pen_bits;
  }

  if (!(temp > 0.f)) {  // greedy: the CPU's `r[j] > r[best]` scan from best = 0
    const int b = isnan(rv.r[0]) ? 0 : block_argmax<false>(rv, sm.arg);
    if (tid == 0) out[row] = b;
    return;
  }

  RowProb R{rv, 1.0 / static_cast<double>(temp), 0.0, 0.0};
  FirstMax fm;
  for_row(rv, [&](float v, int j) { fm.visit(v, j); });
  fm.block_merge(sm.arg);
  const float mxf = fm.bv;
  if (fm.fn != INT_MAX || mxf == INFINITY || fm.bi == INT_MAX || mxf == -INFINITY) {
    if (tid == 0) out[row] = nan_row_pick(min_p, k, V);
    return;
  }
  R.mx = static_cast<double>(mxf) * R.inv_temp;  // = max_j r_j / temp: scaling by 1/temp > 0 is monotone
  for (int b = tid; b < 256; b += blockDim.x) sm.cnt[b] = 0;
  __syncthreads();
  for_row(rv, [&](float v, int) {
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
  for_row(rv, [&](float v, int) { s += R.e(v); });
  R.sum = block_reduce(s, sm.red_d, SumOp{});
  // top-k, then min-p: both keep a prefix of known length.
  int64_t keep = keep0;
  if (min_p > 0.f) {
    const double floor = static_cast<double>(min_p) * (1.0 / R.sum);  // min_p * (probability of the best)
    unsigned c = 0;
    for_row(rv, [&](float v, int) { c += R.pr(v) >= floor ? 1u : 0u; });
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
    for_row(rv, [&](float v, int j) {
      if (make_key(v, j) >= lo) m += R.pr(v);
    });
    mass = block_reduce(m, sm.red_d, SumOp{});
  }

  // Inverse CDF: the first kept element whose running mass exceeds u * mass (else the last kept one).
  const Selected pick = radix_select(R, lo, true, static_cast<double>(u) * mass, true, sm);
  if (tid == 0) out[row] = key_id(pick.key);
}

// ----------------------------------------------------------------- sample: a cluster of blocks per row

constexpr int kBins = 512;                // level-1 bins of -a (a = logit/t - max/t <= 0) ...
constexpr double kBinsPerNat = 16.0;      // ... 1/16 nat wide: the last bin holds everything below e^-32
constexpr int kDigits = 256;              // refinement: 8 bits of the key a pass
constexpr int kChunkMax = 40960;          // floats of a row slice in one block's shared memory
constexpr float kMassScale = 4398046511104.f;           // 2^42: e in fixed point (rows up to 2^21 elements)
constexpr double kMassUnit = 1.0 / 4398046511104.0;

enum : int { kModeFast = 1, kModeDeep = 2, kModeDone = 3 };

// Decisions of the leader (block 0), read by every block after a cluster barrier; and the per-block partial
// results that the leader pulls or the blocks push.
struct ClusterCtl {
  // pushed into the leader by block q in phase 1
  float part_max[kMaxCluster];
  int part_arg[kMaxCluster], part_nan[kMaxCluster];
  // each block's own partials, pulled by the others
  unsigned long long kmin, kmax;
  unsigned minp_count;
  // the leader's decisions
  int mode, blim, bm, ncand, keep, jm, jp, pick;
  double S, s_rest, target;
  // cluster_select state and result
  int found, bin, hbit;
  unsigned range_cnt;
  unsigned long long prefix, mask, before_mass;
  long long before_cnt;
  unsigned long long res_key;
  long long res_rank;
  double res_before, res_own;
};

struct ClusterSmem {
  unsigned long long keys[kCap];  // leader: candidates / selection window
  double pr[kCap];                // leader: their probabilities, then running sums
  unsigned hcnt[kBins];           // own level-1 histogram
  unsigned long long hmass[kBins];
  unsigned mcnt[kBins];           // leader: merged level-1 histogram
  unsigned long long mmass[kBins];
  unsigned dcnt[kDigits];         // own digit histogram
  unsigned long long dmass[kDigits];
  unsigned mdcnt[kDigits];        // leader: merged digit histogram, largest digit first
  unsigned long long mdmass[kDigits];
  double red_d[32];
  unsigned red_u[32];
  unsigned long long red_kmin[32], red_kmax[32];
  ArgSmem arg;
  ClusterCtl ctl;
};

__host__ __device__ constexpr int penalty_words(int chunk) { return (chunk + 31) / 32; }
// Dynamic shared memory of the cluster sample kernel: ClusterSmem, the slice's penalty bitmap, the slice.
__host__ __device__ constexpr size_t cluster_bits_offset() { return (sizeof(ClusterSmem) + 15) / 16 * 16; }
__host__ __device__ constexpr size_t cluster_vals_offset(int chunk) {
  return cluster_bits_offset() + (static_cast<size_t>(penalty_words(chunk)) * 4 + 15) / 16 * 16;
}
__host__ __device__ constexpr size_t cluster_smem_bytes(int chunk) {
  return cluster_vals_offset(chunk) + static_cast<size_t>(chunk) * 4;
}

__device__ __forceinline__ unsigned long long warp_sum_u64(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

struct Cross {
  int bin;  // nb: not reached
  unsigned long long before_cnt, before_mass;
};

// Warp-wide (all 32 lanes) over bins[0..nb) in sorted order (nb a multiple of 32): the first non-empty bin whose
// inclusive running value (count, or fixed-point mass in e units when by_mass) reaches theta (>=, or > if strict),
// with the running values before it. If none does: nb, or with clamp_last the last non-empty bin.
__device__ Cross warp_cross(const unsigned* cnt, const unsigned long long* mass, int nb, bool by_mass, double theta,
                            bool strict, bool clamp_last) {
  const int lane = threadIdx.x & 31, per = nb >> 5, b0 = lane * per;
  unsigned long long sc = 0, sm = 0;
  int last = -1;
  for (int i = 0; i < per; ++i) {
    sc += cnt[b0 + i];
    sm += mass[b0 + i];
    if (cnt[b0 + i]) last = b0 + i;
  }
  unsigned long long ic = sc, im = sm;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned long long tc = __shfl_up_sync(0xffffffffu, ic, o), tm = __shfl_up_sync(0xffffffffu, im, o);
    if (lane >= o) {
      ic += tc;
      im += tm;
    }
  }
  auto reach = [&](unsigned long long c, unsigned long long m) {
    const double v = by_mass ? static_cast<double>(m) * kMassUnit : static_cast<double>(c);
    return strict ? v > theta : v >= theta;
  };
  const unsigned hit = __ballot_sync(0xffffffffu, last >= 0 && reach(ic, im));
  const unsigned nonempty = __ballot_sync(0xffffffffu, last >= 0);
  Cross r{nb, 0, 0};
  if (!hit && (!clamp_last || !nonempty)) return r;
  const int src = hit ? __ffs(hit) - 1 : 31 - __clz(nonempty);
  if (lane == src) {
    unsigned long long c = ic - sc, m = im - sm;
    for (int i = 0; i < per; ++i) {
      const int b = b0 + i;
      if (cnt[b] != 0 && (hit ? reach(c + cnt[b], m + mass[b]) : b == last)) {
        r.bin = b;
        r.before_cnt = c;
        r.before_mass = m;
        break;
      }
      c += cnt[b];
      m += mass[b];
    }
  }
  r.bin = __shfl_sync(0xffffffffu, r.bin, src);
  r.before_cnt = __shfl_sync(0xffffffffu, r.before_cnt, src);
  r.before_mass = __shfl_sync(0xffffffffu, r.before_mass, src);
  return r;
}

// The cluster helpers exist only where the cluster group does (sm_90+ device passes and the host pass); the
// kernel below runs them only on sm_90+.
#if defined(_CG_HAS_CLUSTER_GROUP)
// One row's view inside the cluster kernel.
struct ClusterRow {
  cg::cluster_group cl;
  ClusterSmem& sm;    // this block's
  ClusterSmem& lead;  // the leader's (block 0), through distributed shared memory
  const float* vals;  // this block's slice (penalized), in shared memory
  int c0, n, V, C;
  bool leader;
  double inv_t, mx;   // a = logit * inv_t - mx
  __device__ __forceinline__ double a_of(float v) const { return __fma_rn(static_cast<double>(v), inv_t, -mx); }
  __device__ __forceinline__ int bin_of(double a) const {
    const double x = -a * kBinsPerNat;  // a = -inf: +inf, the last bin
    return x < static_cast<double>(kBins - 1) ? max(0, static_cast<int>(x)) : kBins - 1;
  }
};

__device__ __forceinline__ unsigned long long mass_fixed(double a) {
  return __float2ull_rn(expf(static_cast<float>(a)) * kMassScale);
}

struct Sel {
  bool found;
  long long rank;  // 1-based position in the sorted order
  unsigned long long key;
  double before, own;  // mass (e units) of the elements before it, and its own
};

// Cluster-wide selection (every thread of every block calls it, in step): the first element in sorted order whose
// inclusive running count (by_mass false; theta an integer) or mass in e units reaches theta (>=, or > if strict).
// found = false when no element does. Level 1: the merged bins; then 8-bit digits of the key within the crossing
// bin until at most kCap elements remain; those are gathered into the leader, sorted and scanned (f64 e).
__device__ Sel cluster_select(ClusterRow& X, bool by_mass, double theta, bool strict) {
  ClusterSmem& sm = X.sm;
  ClusterCtl& L = X.lead.ctl;
  const int tid = threadIdx.x;
  if (X.leader && tid < 32) {
    const Cross c = warp_cross(sm.mcnt, sm.mmass, kBins, by_mass, theta, strict, false);
    if (tid == 0) {
      sm.ctl.found = c.bin < kBins;
      sm.ctl.bin = c.bin;
      sm.ctl.before_cnt = static_cast<long long>(c.before_cnt);
      sm.ctl.before_mass = c.before_mass;
      sm.ctl.range_cnt = c.bin < kBins ? sm.mcnt[c.bin] : 0u;
      sm.ctl.prefix = 0;
      sm.ctl.mask = 0;
      sm.ctl.ncand = 0;
    }
  }
  X.cl.sync();
  if (!L.found) return Sel{false, 0, 0, 0.0, 0.0};
  const int bin = L.bin;
  auto in_bin = [&](int kk, uint64_t& key) {
    const float v = X.vals[kk];
    if (X.bin_of(X.a_of(v)) != bin) return false;
    key = make_key(v, X.c0 + kk);
    return true;
  };
  if (L.range_cnt > static_cast<unsigned>(kCap)) {
    // The key range of the bin: refine from its highest differing bit.
    unsigned long long kmin = ~0ull, kmax = 0;
    for (int kk = tid; kk < X.n; kk += blockDim.x) {
      uint64_t key;
      if (in_bin(kk, key)) {
        kmin = min(kmin, static_cast<unsigned long long>(key));
        kmax = max(kmax, static_cast<unsigned long long>(key));
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      kmin = min(kmin, __shfl_xor_sync(0xffffffffu, kmin, o));
      kmax = max(kmax, __shfl_xor_sync(0xffffffffu, kmax, o));
    }
    __syncthreads();
    if ((tid & 31) == 0) {
      sm.red_kmin[tid >> 5] = kmin;
      sm.red_kmax[tid >> 5] = kmax;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w) {
        kmin = min(kmin, sm.red_kmin[w]);
        kmax = max(kmax, sm.red_kmax[w]);
      }
      sm.ctl.kmin = kmin;
      sm.ctl.kmax = kmax;
    }
    X.cl.sync();
    if (X.leader && tid == 0) {
      unsigned long long mn = ~0ull, mx = 0;
      for (int q = 0; q < X.C; ++q) {
        const ClusterCtl& o = X.cl.map_shared_rank(&sm, q)->ctl;
        mn = min(mn, o.kmin);
        mx = max(mx, o.kmax);
      }
      const int hbit = 63 - __clzll(static_cast<long long>(mn ^ mx));  // range_cnt >= 2: the keys differ
      const unsigned long long low = hbit >= 63 ? ~0ull : (2ull << hbit) - 1;
      sm.ctl.hbit = hbit;
      sm.ctl.prefix = mn & ~low;
      sm.ctl.mask = ~low;
    }
    X.cl.sync();
    while (L.range_cnt > static_cast<unsigned>(kCap)) {
      const unsigned long long prefix = L.prefix, mask = L.mask;
      const int hbit = L.hbit, shift = max(hbit - 7, 0);
      const unsigned dmask = (2u << (hbit - shift)) - 1;
      for (int d = tid; d < kDigits; d += blockDim.x) {
        sm.dcnt[d] = 0;
        sm.dmass[d] = 0;
      }
      __syncthreads();
      for (int kk = tid; kk < X.n; kk += blockDim.x) {
        uint64_t key;
        if (in_bin(kk, key) && (key & mask) == prefix) {
          const unsigned d = static_cast<unsigned>(key >> shift) & dmask;
          atomicAdd(&sm.dcnt[d], 1u);
          atomicAdd(&sm.dmass[d], mass_fixed(X.a_of(X.vals[kk])));
        }
      }
      X.cl.sync();
      if (X.leader) {
        for (int d = tid; d < kDigits; d += blockDim.x) {  // merged in rank order, largest digit first
          unsigned c = 0;
          unsigned long long m = 0;
          for (int q = 0; q < X.C; ++q) {
            const ClusterSmem* o = X.cl.map_shared_rank(&sm, q);
            c += o->dcnt[d];
            m += o->dmass[d];
          }
          sm.mdcnt[kDigits - 1 - d] = c;
          sm.mdmass[kDigits - 1 - d] = m;
        }
        __syncthreads();
        if (tid < 32) {
          const double rest = by_mass ? theta - static_cast<double>(sm.ctl.before_mass) * kMassUnit
                                      : theta - static_cast<double>(sm.ctl.before_cnt);
          // clamp_last: by rounding, the masses of the digits may not reach what the bins promised
          const Cross c = warp_cross(sm.mdcnt, sm.mdmass, kDigits, by_mass, rest, strict, true);
          if (tid == 0) {
            const unsigned d = static_cast<unsigned>(kDigits - 1 - c.bin);
            sm.ctl.before_cnt += static_cast<long long>(c.before_cnt);
            sm.ctl.before_mass += c.before_mass;
            sm.ctl.range_cnt = sm.mdcnt[c.bin];
            sm.ctl.prefix = prefix | (static_cast<unsigned long long>(d) << shift);
            sm.ctl.mask = mask | (static_cast<unsigned long long>(dmask) << shift);
            sm.ctl.hbit = shift - 1;
            sm.ctl.ncand = 0;
          }
        }
      }
      X.cl.sync();
    }
  }
  // Gather the window into the leader.
  {
    const unsigned long long prefix = L.prefix, mask = L.mask;
    const int lane = tid & 31;
    for (int base = 0; base < X.n; base += blockDim.x) {  // same trip count for every thread: ballots below
      const int kk = base + tid;
      uint64_t key = 0;
      const bool take = kk < X.n && in_bin(kk, key) && (key & mask) == prefix;
      const unsigned who = __ballot_sync(0xffffffffu, take);
      int slot = 0;
      if (lane == 0 && who) slot = atomicAdd(&L.ncand, __popc(who));
      slot = __shfl_sync(0xffffffffu, slot, 0);
      if (take) X.lead.keys[slot + __popc(who & ((1u << lane) - 1))] = key;
    }
  }
  X.cl.sync();
  if (X.leader) {
    const int n = min(sm.ctl.ncand, kCap);  // = range_cnt
    sort_keys_desc(sm.keys, n);
    for (int i = tid; i < n; i += blockDim.x) sm.pr[i] = exp(X.a_of(key_logit(sm.keys[i])));
    __syncthreads();
    if (tid == 0) sm.ctl.pick = INT_MAX;
    const double rest = by_mass ? theta - static_cast<double>(sm.ctl.before_mass) * kMassUnit
                                : theta - static_cast<double>(sm.ctl.before_cnt);
    block_inclusive_scan(sm.pr, n, sm.red_d);
    if (by_mass) {
      for (int i = tid; i < n; i += blockDim.x) {
        const bool r = strict ? sm.pr[i] > rest : sm.pr[i] >= rest;
        const bool rp = i > 0 && (strict ? sm.pr[i - 1] > rest : sm.pr[i - 1] >= rest);
        if (r && !rp) atomicMin(&sm.ctl.pick, i);
      }
    }
    __syncthreads();
    if (tid == 0) {
      int j;
      if (by_mass) j = sm.ctl.pick == INT_MAX ? n - 1 : sm.ctl.pick;  // not reached by rounding: the last one
      else j = static_cast<int>(min(max(rest, 1.0), static_cast<double>(n))) - 1;
      j = max(j, 0);
      const double before = j > 0 ? sm.pr[j - 1] : 0.0;
      sm.ctl.res_key = sm.keys[j];
      sm.ctl.res_rank = sm.ctl.before_cnt + j + 1;
      sm.ctl.res_before = static_cast<double>(sm.ctl.before_mass) * kMassUnit + before;
      sm.ctl.res_own = sm.pr[j] - before;
    }
  }
  X.cl.sync();
  return Sel{true, L.res_rank, L.res_key, L.res_before, L.res_own};
}

// The deep path: the CPU's cuts and pick as cluster-wide selections (every thread of every block, in step).
__device__ int cluster_deep(ClusterRow& X, long long keep0, float min_p, float top_p, float u) {
  const bool use_minp = min_p > 0.f, use_topp = top_p > 0.f && top_p < 1.f;
  const double S = X.lead.ctl.S;
  long long keep = keep0;
  if (use_minp) {  // p >= min_p * p_max  <=>  e >= min_p  <=>  a >= log(min_p)
    const double amin = log(static_cast<double>(min_p));
    unsigned c = 0;
    for (int kk = threadIdx.x; kk < X.n; kk += blockDim.x) c += X.a_of(X.vals[kk]) >= amin ? 1u : 0u;
    c = block_reduce(c, X.sm.red_u, SumOp{});
    if (threadIdx.x == 0) X.sm.ctl.minp_count = c;
    X.cl.sync();
    long long total = 0;
    for (int q = 0; q < X.C; ++q) total += X.cl.map_shared_rank(&X.sm, q)->ctl.minp_count;
    keep = min(keep, max(total, 1LL));
  }
  Sel ks{false, 0, 0, 0.0, 0.0};  // the last kept element, once known
  double mass;
  if (use_topp) {
    const Sel s = cluster_select(X, true, static_cast<double>(top_p) * S, false);
    if (s.found && s.rank <= keep) {
      keep = s.rank;
      ks = s;
    }
  }
  if (!ks.found && keep < X.V) ks = cluster_select(X, false, static_cast<double>(keep), false);
  mass = ks.found ? ks.before + ks.own : S;
  const Sel pk = cluster_select(X, true, static_cast<double>(u) * mass, true);
  if (pk.found && pk.rank <= keep) return key_id(pk.key);
  if (!ks.found) ks = cluster_select(X, false, static_cast<double>(keep), false);  // keep == V: the last element
  return key_id(ks.key);
}

#endif  // _CG_HAS_CLUSTER_GROUP

// One cluster of C blocks per row (blockIdx.y); block `rank` owns the slice [rank * chunk, + chunk).
__global__ void __launch_bounds__(kRowThreads, 1)
    sample_cluster_kernel(int32_t* __restrict__ out, const float* __restrict__ logits, const float* __restrict__ params,
                          int pc, const int32_t* __restrict__ top_k, const int32_t* __restrict__ pen_ids,
                          const int32_t* __restrict__ pen_len, int L, int V, int chunk) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(16) unsigned char smem_raw[];
  ClusterSmem& sm = *reinterpret_cast<ClusterSmem*>(smem_raw);
  uint32_t* bits = reinterpret_cast<uint32_t*>(smem_raw + cluster_bits_offset());
  float* vals = reinterpret_cast<float*>(smem_raw + cluster_vals_offset(chunk));
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), C = static_cast<int>(cluster.num_blocks());
  const int tid = threadIdx.x, row = blockIdx.y;
  auto arrived = cluster.barrier_arrive();  // the leader's shared memory is written only once every block runs
  ClusterSmem& lead = *cluster.map_shared_rank(&sm, 0);
  const float* r = logits + static_cast<int64_t>(row) * V;
  const float* prm = params + static_cast<int64_t>(row) * pc;
  const float temp = prm[0], top_p = prm[1], min_p = prm[2], u = prm[3];
  const float pen = pc > 4 ? prm[4] : 1.f;
  const int k = top_k[row];
  const int c0 = min(V, rank * chunk), n = min(V, c0 + chunk) - c0;
  const bool use_pen = pen_ids != nullptr && pen != 1.f;  // a penalty of 1 changes no logit
  if (use_pen) build_penalty_bits(bits, pen_ids + static_cast<int64_t>(row) * L, min(max(pen_len[row], 0), L), c0, c0 + n);

  // 1. The slice into shared memory (penalized), its first maximum ignoring NaN, and whether it has a NaN.
  FirstMax fm;
  for_range(r, c0, c0 + n, [&](float v, int j) {
    const int kk = j - c0;
    if (use_pen && ((bits[kk >> 5] >> (kk & 31)) & 1u)) v = penalize(v, pen);
    vals[kk] = v;
    fm.visit(v, j);
  });
  fm.block_merge(sm.arg);
  cluster.barrier_wait(std::move(arrived));
  if (tid == 0) {
    lead.ctl.part_max[rank] = fm.bv;
    lead.ctl.part_arg[rank] = fm.bi;
    lead.ctl.part_nan[rank] = fm.fn;
  }
  cluster.sync();
  FirstMax all;
  for (int q = 0; q < C; ++q) all.merge(lead.ctl.part_max[q], lead.ctl.part_arg[q], lead.ctl.part_nan[q]);
  if (!(temp > 0.f)) {  // greedy: the CPU's `r[j] > r[best]` scan from best = 0 (a NaN at 0 stays)
    if (rank == 0 && tid == 0) out[row] = isnan(vals[0]) ? 0 : (all.bi == INT_MAX ? 0 : all.bi);
    cluster.sync();  // the leader's shared memory outlives every read of it
    return;
  }
  if (all.fn != INT_MAX || all.bi == INT_MAX || all.bv == INFINITY || all.bv == -INFINITY) {
    if (rank == 0 && tid == 0) out[row] = nan_row_pick(min_p, k, V);
    cluster.sync();
    return;
  }
  ClusterRow X{cluster, sm, lead, vals, c0, n, V, C, rank == 0, 1.0 / static_cast<double>(temp), 0.0};
  X.mx = static_cast<double>(all.bv) * X.inv_t;  // = max_j r_j / temp: scaling by 1/temp > 0 is monotone
  const long long keep0 = k > 0 ? min(static_cast<long long>(k), static_cast<long long>(V)) : V;
  const bool use_minp = min_p > 0.f, use_topp = top_p > 0.f && top_p < 1.f;

  // 2. Level-1 histogram of the slice. Per-thread runs of one bin are added at once: a flat row puts every
  // element in one bin, and 512 atomics on one address beat 19k.
  for (int b = tid; b < kBins; b += blockDim.x) {
    sm.hcnt[b] = 0;
    sm.hmass[b] = 0;
  }
  __syncthreads();
  {
    int cur = -1;
    unsigned cc = 0;
    unsigned long long cm = 0;
    for (int kk = tid; kk < n; kk += blockDim.x) {
      const double a = X.a_of(vals[kk]);
      const int b = X.bin_of(a);
      if (b != cur) {
        if (cc) {
          atomicAdd(&sm.hcnt[cur], cc);
          atomicAdd(&sm.hmass[cur], cm);
        }
        cur = b;
        cc = 0;
        cm = 0;
      }
      ++cc;
      cm += mass_fixed(a);
    }
    if (cc) {
      atomicAdd(&sm.hcnt[cur], cc);
      atomicAdd(&sm.hmass[cur], cm);
    }
  }
  cluster.sync();

  // 3. The leader merges the bins (rank order) and bounds the candidates.
  if (X.leader) {
    for (int b = tid; b < kBins; b += blockDim.x) {
      unsigned c = 0;
      unsigned long long m = 0;
      for (int q = 0; q < C; ++q) {
        const ClusterSmem* o = cluster.map_shared_rank(&sm, q);
        c += o->hcnt[b];
        m += o->hmass[b];
      }
      sm.mcnt[b] = c;
      sm.mmass[b] = m;
    }
    __syncthreads();
    if (tid < 32) {
      unsigned long long tm = 0;
      for (int b = tid; b < kBins; b += 32) tm += sm.mmass[b];
      tm = warp_sum_u64(tm);
      const double S = static_cast<double>(tm) * kMassUnit;
      constexpr double kSafe = 1.0 + 1e-5;  // the bins' masses are within ~1e-6 of the CPU's
      // With a cut, the kept set (whose mass the pick renormalizes by) must lie among the candidates: the cuts'
      // bounds. Without one, the kept set is the row (mass 1) and the candidates need only reach the pick.
      int blim = kBins - 1, bm = kBins;
      if (keep0 < V) blim = min(blim, warp_cross(sm.mcnt, sm.mmass, kBins, false, static_cast<double>(keep0), false, false).bin);
      if (use_minp) {  // kept: a >= log(min_p), i.e. bin <= -log(min_p) * 16 (one more bin for rounding)
        const double xb = -log(static_cast<double>(min_p)) * kBinsPerNat;
        bm = !(xb > 0.0) ? 1 : xb < kBins - 2 ? static_cast<int>(xb) + 1 : kBins - 1;
        blim = min(blim, bm);
      }
      if (use_topp)
        blim = min(blim, warp_cross(sm.mcnt, sm.mmass, kBins, true, static_cast<double>(top_p) * kSafe * S, false, false).bin);
      // no cut: the first element whose running mass exceeds u * (kept mass = S)
      if (keep0 == V && !use_minp && !use_topp)
        blim = min(blim, warp_cross(sm.mcnt, sm.mmass, kBins, true, static_cast<double>(u) * kSafe * S, false, false).bin);
      unsigned long long nc = 0, rest = 0;
      for (int b = tid; b < kBins; b += 32) {
        if (b <= blim) nc += sm.mcnt[b];
        else rest += sm.mmass[b];
      }
      nc = warp_sum_u64(nc);
      rest = warp_sum_u64(rest);
      if (tid == 0) {
        sm.ctl.mode = nc <= static_cast<unsigned long long>(kCap) ? kModeFast : kModeDeep;
        sm.ctl.blim = blim;
        sm.ctl.bm = bm;
        sm.ctl.S = S;
        sm.ctl.s_rest = static_cast<double>(rest) * kMassUnit;
        sm.ctl.ncand = 0;
      }
    }
  }
  cluster.sync();

  if (lead.ctl.mode == kModeFast) {
    // 4. Gather the candidates (bins 0..blim) into the leader.
    const int blim = lead.ctl.blim, lane = tid & 31;
    for (int base = 0; base < n; base += blockDim.x) {  // same trip count for every thread: ballots below
      const int kk = base + tid;
      const bool take = kk < n && X.bin_of(X.a_of(vals[kk])) <= blim;
      const unsigned who = __ballot_sync(0xffffffffu, take);
      int slot = 0;
      if (lane == 0 && who) slot = atomicAdd(&lead.ctl.ncand, __popc(who));
      slot = __shfl_sync(0xffffffffu, slot, 0);
      if (take) lead.keys[slot + __popc(who & ((1u << lane) - 1))] = make_key(vals[kk], c0 + kk);
    }
    cluster.sync();
    // 5. The leader evaluates the CPU's cuts and pick on the sorted candidates.
    if (X.leader) {
      const int c = min(sm.ctl.ncand, kCap);
      sort_keys_desc(sm.keys, c);
      double s_cand = 0.0;
      for (int i = tid; i < c; i += blockDim.x) {
        const double e = exp(X.a_of(key_logit(sm.keys[i])));
        sm.pr[i] = e;
        s_cand += e;
      }
      s_cand = block_reduce(s_cand, sm.red_d, SumOp{});
      const double S = sm.ctl.s_rest + s_cand;
      const double floor = static_cast<double>(min_p) * (1.0 / S);  // min_p * (probability of the best)
      if (tid == 0) {
        sm.ctl.jm = INT_MAX;
        sm.ctl.jp = INT_MAX;
        sm.ctl.pick = INT_MAX;
      }
      __syncthreads();
      for (int i = tid; i < c; i += blockDim.x) {
        const double p = sm.pr[i] / S;  // the CPU's pr = e / sum
        sm.pr[i] = p;
        if (use_minp && i >= 1 && p < floor) atomicMin(&sm.ctl.jm, i);
      }
      __syncthreads();
      block_inclusive_scan(sm.pr, c, sm.red_d);  // pr[i]: running mass through i
      if (use_topp) {
        const double tp = static_cast<double>(top_p);
        for (int i = tid; i < c; i += blockDim.x)
          if (sm.pr[i] >= tp && (i == 0 || sm.pr[i - 1] < tp)) atomicMin(&sm.ctl.jp, i);
      }
      __syncthreads();
      if (tid == 0) {
        // The CPU's loop stops at the first of: top-k (keep = j), an element below the min-p floor (keep = j),
        // the running mass reaching top-p (keep = j + 1).
        long long keep = keep0;
        // Every candidate passes min-p and the min-p bound ended them: the next element (1/16 nat or more past
        // the floor) fails, so the min-p cut is right after the candidates.
        if (use_minp && sm.ctl.jm == INT_MAX && sm.ctl.blim == sm.ctl.bm && c < V) sm.ctl.jm = c;
        if (sm.ctl.jm != INT_MAX) keep = min(keep, static_cast<long long>(sm.ctl.jm));
        if (sm.ctl.jp != INT_MAX) keep = min(keep, static_cast<long long>(sm.ctl.jp) + 1);
        double mass = 0.0;
        bool ok = true;
        if (keep > c) {
          // No cut among the candidates. Without any cut the kept set is the whole row and its mass is 1 (the
          // CPU's sorted-order sum differs from 1 by ~1e-11): the pick is a candidate if u is below their mass.
          if (!use_minp && !use_topp && keep0 == V && c > 0 && static_cast<double>(u) < sm.pr[c - 1]) {
            keep = c;
            mass = 1.0;
          } else {
            ok = false;
          }
        } else {
          mass = sm.pr[keep - 1];
        }
        sm.ctl.keep = static_cast<int>(min(keep, static_cast<long long>(c)));
        sm.ctl.target = static_cast<double>(u) * mass;
        sm.ctl.mode = ok ? kModeDone : kModeDeep;
      }
      __syncthreads();
      if (sm.ctl.mode == kModeDone) {
        // Inverse CDF: the first kept i whose running mass exceeds the target, else the last kept one.
        const int keep = sm.ctl.keep;
        const double target = sm.ctl.target;
        for (int i = tid; i < keep; i += blockDim.x)
          if (target < sm.pr[i] && (i == 0 || !(target < sm.pr[i - 1]))) atomicMin(&sm.ctl.pick, i);
        __syncthreads();
        if (tid == 0) out[row] = key_id(sm.keys[sm.ctl.pick == INT_MAX ? keep - 1 : sm.ctl.pick]);
      }
    }
    cluster.sync();
  }
  if (lead.ctl.mode == kModeDeep) {
    const int pick = cluster_deep(X, keep0, min_p, top_p, u);
    if (X.leader && tid == 0) out[row] = pick;
  }
  cluster.sync();  // the leader's shared memory outlives every read of it
#endif
}

// ----------------------------------------------------------------- launch configuration

// GLM4_SAMPLING_BLOCKS: "single" = one block per row (the kernels of GPUs before sm_90); "2", "4", "8" = that
// cluster size. Unset: the heuristic below. Read at each launch (a validation and tuning switch, not an API).
int forced_blocks() {
  const char* e = std::getenv("GLM4_SAMPLING_BLOCKS");
  if (e == nullptr || *e == 0) return 0;
  if (std::strcmp(e, "single") == 0) return 1;
  const int b = std::atoi(e);
  return (b == 2 || b == 4 || b == 8) ? b : 0;
}

// Blocks per row: enough clusters to cover the SMs twice, at most 8 (portable cluster size).
int cluster_blocks(int64_t m, const DevAttrs& dev) {
  if (dev.major < 9) return 1;
  const int f = forced_blocks();
  if (f) return f;
  int c = 8;
  while (c > 2 && m * c > 2LL * dev.sms) c >>= 1;
  return c;
}

// What the launches need of the current device, queried once per device (a token's pick is not captured in a
// graph: these queries would run every token). The shared-memory opt-in of both sample kernels is set here once,
// to the most they may ask for.
struct SampleDev {
  DevAttrs attrs;
  int max_smem = 0;      // opt-in shared memory a block
  int cluster_dyn = 0;   // the most dynamic shared memory each kernel may ask for (opt-in minus its static)
  int single_dyn = 0;
};
SampleDev sample_dev();

int chunk_for(int64_t v, int c) { return static_cast<int>(((v + c - 1) / c + 3) / 4 * 4); }

cudaLaunchAttribute cluster_attr(int c) {
  cudaLaunchAttribute a = {};
  a.id = cudaLaunchAttributeClusterDimension;
  a.val.clusterDim.x = static_cast<unsigned>(c);
  a.val.clusterDim.y = 1;
  a.val.clusterDim.z = 1;
  return a;
}

SampleDev sample_dev() {
  constexpr int kMaxDevices = 64;
  static SampleDev cache[kMaxDevices];
  static std::atomic<bool> ready[kMaxDevices];
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < kMaxDevices && ready[dev].load(std::memory_order_acquire)) return cache[dev];
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (dev < kMaxDevices && ready[dev].load(std::memory_order_acquire)) return cache[dev];
  SampleDev d;
  d.attrs = current_device_attrs();
  CUDA_CHECK(cudaDeviceGetAttribute(&d.max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if (d.attrs.major >= 9) d.cluster_dyn = allow_dynamic_smem(reinterpret_cast<const void*>(sample_cluster_kernel), d.max_smem);
  d.single_dyn = allow_dynamic_smem(reinterpret_cast<const void*>(sample_kernel), d.max_smem);
  if (dev < kMaxDevices) {
    cache[dev] = d;
    ready[dev].store(true, std::memory_order_release);
  }
  return d;
}

}  // namespace

void argmax(Context& c, const Tensor& out, const Tensor& x) {
  const int64_t m = x.dim(0), v = x.dim(1);
  if (m == 0) return;
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "argmax: x ", x.describe(), " is too large");
  const int cb = cluster_blocks(m, sample_dev().attrs);
  if (cb == 1 || m > 65535) {
    argmax_kernel<<<static_cast<unsigned>(m), kThreads, 0, stream_of(c)>>>(out.data<int32_t>(), x.data<float>(),
                                                                          static_cast<int>(v));
    CUDA_CHECK_LAUNCH("argmax");
    return;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(cb), static_cast<unsigned>(m));
  cfg.blockDim = dim3(kThreads);
  cfg.stream = stream_of(c);
  cudaLaunchAttribute attr[1] = {cluster_attr(cb)};
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, argmax_cluster_kernel, out.data<int32_t>(), x.data<float>(), static_cast<int>(v),
                                chunk_for(v, cb)));
  CUDA_CHECK_LAUNCH("argmax (cluster)");
}

void softmax(Context& c, const Tensor& out, const Tensor& x, float temperature) {
  const int64_t m = x.dim(0), v = x.dim(1);
  if (m == 0 || v == 0) return;
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "softmax: x ", x.describe(), " is too large");
  softmax_kernel<<<static_cast<unsigned>(m), kRowThreads, 0, stream_of(c)>>>(out.data<float>(), x.data<float>(),
                                                                         static_cast<int>(v), temperature);
  CUDA_CHECK_LAUNCH("softmax");
}

void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k,
            const Tensor& penalty_ids, const Tensor& penalty_len) {
  const int64_t m = logits.dim(0), v = logits.dim(1);
  if (m == 0) return;
  GLM4_CHECK(v > 0, GLM4_E_SHAPE, "sample: logits ", logits.describe(), " have empty rows");
  GLM4_CHECK(v < (int64_t{1} << 31) && m < (int64_t{1} << 31), GLM4_E_UNSUPPORTED, "sample: logits ", logits.describe(),
             " are too large");
  const bool pen = penalty_ids.defined();
  const int pc = static_cast<int>(params.dim(1));
  const int L = pen ? static_cast<int>(penalty_ids.dim(1)) : 0;
  const int32_t* ids = pen ? penalty_ids.data<int32_t>() : nullptr;
  const int32_t* lens = pen ? penalty_len.data<int32_t>() : nullptr;
  const SampleDev sd = sample_dev();
  const int cb = cluster_blocks(m, sd.attrs);
  const int chunk = chunk_for(v, cb);
  if (cb > 1 && m <= 65535 && chunk <= kChunkMax && cluster_smem_bytes(chunk) <= static_cast<size_t>(sd.cluster_dyn)) {
    const size_t smem = cluster_smem_bytes(chunk);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(cb), static_cast<unsigned>(m));
    cfg.blockDim = dim3(kRowThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream_of(c);
    cudaLaunchAttribute attr[1] = {cluster_attr(cb)};
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    CUDA_CHECK(cudaLaunchKernelEx(&cfg, sample_cluster_kernel, out.data<int32_t>(), logits.data<float>(),
                                  params.data<float>(), pc, top_k.data<int32_t>(), ids, lens, L, static_cast<int>(v), chunk));
    CUDA_CHECK_LAUNCH("sample (cluster)");
    return;
  }
  // One block per row; the penalty bitmap of the whole row in dynamic shared memory.
  const size_t bits = pen ? static_cast<size_t>((v + 31) / 32) * 4 : 0;
  GLM4_CHECK(bits <= static_cast<size_t>(sd.single_dyn), GLM4_E_UNSUPPORTED, "sample: a repetition penalty over ", v,
             " logits a row needs ", bits, " bytes of shared memory; this GPU allows the sampling kernel ", sd.single_dyn);
  sample_kernel<<<static_cast<unsigned>(m), kRowThreads, bits, stream_of(c)>>>(
      out.data<int32_t>(), logits.data<float>(), params.data<float>(), pc, top_k.data<int32_t>(), ids, lens, L,
      static_cast<int>(v));
  CUDA_CHECK_LAUNCH("sample");
}

}  // namespace cuda
}  // namespace glm4
