// KV-cache write and causal GQA attention over the cache on CUDA (csrc/cpu/attention.cc is the reference).
//
// attention: one block of 4 warps per (query token t, query head h, key split). Query t sees cache rows
// start[t]..pos[t] (start = 0 without the tensor; both read on the device, so a captured decode step replays for
// any position and any slot of a shared cache). Within a block, a key
// row (D values, 16-byte loads) is spread over LG = D/VEC lanes, so a warp scores 32/LG keys per step and each
// lane group keeps 4 keys in flight; every lane group runs an online softmax (running max, sum, and its slice of
// the weighted V sum) in registers, and the partial states are merged with shuffles, then through shared memory.
// Scores are computed in the log2 domain (q pre-scaled by scale*log2(e), exp2f).
//
// Splitting the keys of one (t, h) across blocks (flash-decoding) needs somewhere to merge the partial states.
// Without any scratch buffer: on sm_90 and later the P = 8 splits of one (t, h) form a thread-block cluster and
// block 0 of the cluster merges the others' states through distributed shared memory. That is used when there
// are too few (t, h) pairs to fill the GPU (decode); otherwise (prefill, or GPUs before sm_90) P = 1.
// Decode at batch 1 thus runs 32 heads x 8 splits = 256 blocks instead of 32.
//
// Positions outside [0, S): kv_write skips them (the CPU throws); attention clamps the visible rows to [0, S) and
// writes zeros for a query with no visible row (pos < 0, or start > pos; the CPU throws on a bad start). The
// splits divide the visible range start..pos, each relative to start: a sequence in slot b of a shared cache
// gets exactly the arithmetic it gets alone at slot 0 (same length, same splits, same lane/key assignment).
#include <algorithm>

#include <cooperative_groups.h>

#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kAttnWarps = 4;
constexpr int kMaxSplits = 8;  // portable cluster size
constexpr float kLog2e = 1.4426950408889634f;

// 16 bytes of a cache row -> floats (8 bf16 or 4 f32).
__device__ __forceinline__ void unpack16(const uint4& q, float (&f)[8]) {
  f[0] = bf16lo(q.x); f[1] = bf16hi(q.x); f[2] = bf16lo(q.y); f[3] = bf16hi(q.y);
  f[4] = bf16lo(q.z); f[5] = bf16hi(q.z); f[6] = bf16lo(q.w); f[7] = bf16hi(q.w);
}
__device__ __forceinline__ void unpack16(const uint4& q, float (&f)[4]) {
  f[0] = __uint_as_float(q.x); f[1] = __uint_as_float(q.y); f[2] = __uint_as_float(q.z); f[3] = __uint_as_float(q.w);
}

// Merge online-softmax state (mo, lo) into (m, l): returns the factors that scale the old and the other sums.
__device__ __forceinline__ void merge_factors(float m, float mo, float& mn, float& c_self, float& c_other) {
  mn = fmaxf(m, mo);
  c_self = m == -INFINITY ? 0.f : exp2f(m - mn);
  c_other = mo == -INFINITY ? 0.f : exp2f(mo - mn);
}

template <int D, typename KV, bool CLUSTER>
__global__ void __launch_bounds__(kAttnWarps * 32)
    attention_kernel(const float* __restrict__ q, const KV* __restrict__ kc, const KV* __restrict__ vc,
                     const int32_t* __restrict__ pos, const int32_t* __restrict__ start, float* __restrict__ out,
                     int T, int Hq, int Hkv, int S, int P,
                     float qscale) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  if constexpr (CLUSTER) {  // never launched there (the host checks the compute capability)
    __trap();
    return;
  }
#endif
  constexpr int VEC = 16 / sizeof(KV);  // cache elements per 16-byte load
  constexpr int LG = D / VEC;           // lanes per key row
  constexpr int KPW = 32 / LG;          // keys per warp step
  constexpr int U = 4;                  // keys in flight per lane group
  constexpr int STEP = kAttnWarps * KPW;
  static_assert(LG >= 1 && LG <= 32 && (LG & (LG - 1)) == 0, "head dim / vector width");

  __shared__ float s_acc[kAttnWarps][D];
  __shared__ float s_m[kAttnWarps], s_l[kAttnWarps];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane / LG, li = lane % LG;
  const int split = blockIdx.x % P, h = blockIdx.x / P;
  const int grp = h / (Hq / Hkv);
  const int64_t rs = static_cast<int64_t>(Hkv) * D;  // elements per cache row
  const KV* kb = kc + static_cast<int64_t>(grp) * D + li * VEC;
  const KV* vb = vc + static_cast<int64_t>(grp) * D + li * VEC;

  for (int t = blockIdx.y; t < T; t += gridDim.y) {  // uniform across a cluster (same blockIdx.y)
    const int b0 = start ? max(0, start[t]) : 0;        // first visible row
    const int len = max(0, min(pos[t] + 1, S) - b0);    // visible rows b0 .. b0 + len - 1
    const int chunk = (len + P - 1) / P;
    const int kbeg = b0 + split * chunk, kend = b0 + min(len, split * chunk + chunk);

    float qv[VEC];
    const float* qp = q + (static_cast<int64_t>(t) * Hq + h) * D + li * VEC;
#pragma unroll
    for (int e = 0; e < VEC; ++e) qv[e] = qp[e] * qscale;

    float m = -INFINITY, l = 0.f, acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0.f;

    for (int base = kbeg + warp * KPW; base < kend; base += U * STEP) {  // warp-uniform trip count
      uint4 kr[U], vr[U];
      bool ok[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int j = base + u * STEP + sub;
        ok[u] = j < kend;
        kr[u] = ok[u] ? __ldg(reinterpret_cast<const uint4*>(kb + j * rs)) : make_uint4(0, 0, 0, 0);
        vr[u] = ok[u] ? __ldg(reinterpret_cast<const uint4*>(vb + j * rs)) : make_uint4(0, 0, 0, 0);
      }
      float s[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float kf[VEC];
        unpack16(kr[u], kf);
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < VEC; ++e) d = fmaf(qv[e], kf[e], d);
        s[u] = d;
      }
#pragma unroll
      for (int off = LG / 2; off > 0; off >>= 1)
#pragma unroll
        for (int u = 0; u < U; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], off);
      float mx = m;
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (ok[u]) mx = fmaxf(mx, s[u]);
      if (mx != -INFINITY) {  // per lane group; no shuffles below
        const float corr = exp2f(m - mx);  // 0 when m is -inf
        l *= corr;
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[e] *= corr;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          if (!ok[u]) continue;
          const float p = exp2f(s[u] - mx);
          float vf[VEC];
          unpack16(vr[u], vf);
          l += p;
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[e] = fmaf(p, vf[e], acc[e]);
        }
        m = mx;
      }
    }

    // Merge the lane groups of the warp (lanes with the same li hold the same dims).
#pragma unroll
    for (int off = LG; off < 32; off <<= 1) {
      const float mo = __shfl_xor_sync(0xffffffffu, m, off), lo = __shfl_xor_sync(0xffffffffu, l, off);
      float mn, c1, c2;
      merge_factors(m, mo, mn, c1, c2);
      l = l * c1 + lo * c2;
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] = acc[e] * c1 + __shfl_xor_sync(0xffffffffu, acc[e], off) * c2;
      m = mn;
    }
    if (sub == 0) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) s_acc[warp][li * VEC + e] = acc[e];
      if (li == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
      }
    }
    __syncthreads();

    // Merge the warps: thread d < D owns output dim d.
    float bm = -INFINITY, bl = 0.f, ba = 0.f;
    if (threadIdx.x < D) {
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) bm = fmaxf(bm, s_m[w]);
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) {
        const float c = s_m[w] == -INFINITY ? 0.f : exp2f(s_m[w] - bm);
        bl += s_l[w] * c;
        ba += s_acc[w][threadIdx.x] * c;
      }
    }
    float* o = out + (static_cast<int64_t>(t) * Hq + h) * D;
    if constexpr (!CLUSTER) {
      if (threadIdx.x < D) o[threadIdx.x] = bl > 0.f ? ba / bl : 0.f;
      __syncthreads();  // s_acc is rewritten by the next t
    } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      __shared__ float b_acc[D];  // this block's merged state, read by the cluster leader
      __shared__ float b_ml[2];
      cg::cluster_group cluster = cg::this_cluster();
      if (threadIdx.x < D) b_acc[threadIdx.x] = ba;
      if (threadIdx.x == 0) {
        b_ml[0] = bm;
        b_ml[1] = bl;
      }
      cluster.sync();  // every split's state is visible cluster-wide
      if (cluster.block_rank() == 0 && threadIdx.x < D) {
        float cm = -INFINITY, cl = 0.f, ca = 0.f;
        for (int r = 0; r < P; ++r) {
          const float* ml = cluster.map_shared_rank(b_ml, r);
          const float rm = ml[0], rl = ml[1], ra = cluster.map_shared_rank(b_acc, r)[threadIdx.x];
          float mn, c1, c2;
          merge_factors(cm, rm, mn, c1, c2);
          cl = cl * c1 + rl * c2;
          ca = ca * c1 + ra * c2;
          cm = mn;
        }
        o[threadIdx.x] = cl > 0.f ? ca / cl : 0.f;
      }
      cluster.sync();  // the leader has read every block's shared memory before anyone rewrites or exits
#endif
    }
  }
}

template <typename KV>
__global__ void __launch_bounds__(256) kv_write_kernel(KV* __restrict__ kc, KV* __restrict__ vc, const float* __restrict__ k,
                                                       const float* __restrict__ v, const int32_t* __restrict__ pos,
                                                       int64_t total, int64_t row, int64_t S) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = i / row, e = i - t * row;
    const int64_t p = pos[t];
    if (p < 0 || p >= S) continue;  // outside the cache: never write out of bounds
    store_f(kc, p * row + e, k[i]);
    store_f(vc, p * row + e, v[i]);
  }
}

template <int D, typename KV>
void launch_attention(cudaStream_t st, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc,
                      const Tensor& pos, const Tensor& start, float scale) {
  const int T = static_cast<int>(q.dim(0)), Hq = static_cast<int>(q.dim(1));
  const int Hkv = static_cast<int>(kc.dim(1)), S = static_cast<int>(kc.dim(0));
  const DevAttrs dev = current_device_attrs();
  // Split the keys only when (t, h) pairs alone leave most multiprocessors idle, and only where clusters exist.
  const int P = (dev.major >= 9 && static_cast<int64_t>(T) * Hq < 2LL * dev.sms) ? kMaxSplits : 1;
  const dim3 grid(static_cast<unsigned>(Hq * P), static_cast<unsigned>(std::min(T, 65535)));
  const float qscale = scale * kLog2e;
  const auto* qp = q.data<float>();
  const auto* kp = kc.data<KV>();
  const auto* vp = vc.data<KV>();
  const auto* pp = pos.data<int32_t>();
  const int32_t* sp = start.defined() ? start.data<int32_t>() : nullptr;
  float* op = out.data<float>();
  if (P == 1) {
    attention_kernel<D, KV, false><<<grid, kAttnWarps * 32, 0, st>>>(qp, kp, vp, pp, sp, op, T, Hq, Hkv, S, 1, qscale);
    CUDA_CHECK_LAUNCH("attention");
    return;
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(kAttnWarps * 32);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = st;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(P);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, attention_kernel<D, KV, true>, qp, kp, vp, pp, sp, op, T, Hq, Hkv, S, P, qscale));
  CUDA_CHECK_LAUNCH("attention (cluster)");
}

}  // namespace

void kv_write(Context& c, const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& pos) {
  const int64_t total = k.numel(), row = k.dim(1) * k.dim(2), S = kc.dim(0);
  if (total == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 1 << 16));
  if (kc.dtype() == DType::BF16)
    kv_write_kernel<Bf16><<<blocks, 256, 0, stream_of(c)>>>(kc.data<Bf16>(), vc.data<Bf16>(), k.data<float>(),
                                                           v.data<float>(), pos.data<int32_t>(), total, row, S);
  else
    kv_write_kernel<float><<<blocks, 256, 0, stream_of(c)>>>(kc.data<float>(), vc.data<float>(), k.data<float>(),
                                                            v.data<float>(), pos.data<int32_t>(), total, row, S);
  CUDA_CHECK_LAUNCH("kv_write");
}

void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
               float scale, const Tensor& start) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = kc.dim(1), S = kc.dim(0);
  if (T == 0 || Hq == 0) return;
  GLM4_CHECK(D == 32 || D == 64 || D == 128, GLM4_E_UNSUPPORTED, "attention: head dim ", D,
             " is not supported by the CUDA backend (32, 64 or 128); q ", q.describe());
  GLM4_CHECK(Hkv > 0 && Hq % Hkv == 0, GLM4_E_SHAPE, "attention: ", Hq, " query heads over ", Hkv, " KV heads");
  GLM4_CHECK(S * Hkv * D < (int64_t{1} << 31) && Hq * kMaxSplits < (int64_t{1} << 31) && T < (int64_t{1} << 31),
             GLM4_E_UNSUPPORTED, "attention: cache ", kc.describe(), " or q ", q.describe(), " is too large");
  GLM4_CHECK(aligned16(kc.raw()) && aligned16(vc.raw()), GLM4_E_INVALID_ARG, "attention: the caches must be 16-byte aligned");
  cudaStream_t st = stream_of(c);
  const bool bf = kc.dtype() == DType::BF16;
  // The instantiated configurations: D in {32, 64, 128} x cache bf16 | f32.
  switch (D) {
    case 32: bf ? launch_attention<32, Bf16>(st, out, q, kc, vc, pos, start, scale) : launch_attention<32, float>(st, out, q, kc, vc, pos, start, scale); break;
    case 64: bf ? launch_attention<64, Bf16>(st, out, q, kc, vc, pos, start, scale) : launch_attention<64, float>(st, out, q, kc, vc, pos, start, scale); break;
    default: bf ? launch_attention<128, Bf16>(st, out, q, kc, vc, pos, start, scale) : launch_attention<128, float>(st, out, q, kc, vc, pos, start, scale); break;
  }
}

}  // namespace cuda
}  // namespace glm4
