// KV-cache write and causal GQA attention over a paged KV cache on CUDA (csrc/cpu/attention.cc is the reference,
// csrc/op_list.h the contract). The kernels and the rule that picks one live in attention_kernels.cuh (shared with the
// kernel harness bench/kernels/attention_bench.cu); this file turns tensors into their arguments.
//
// Positions outside the cache: kv_write skips them (the CPU throws). attention never reads outside the pool: a
// query with a negative position or a sequence outside the table gets zeros, positions past the table (or past
// the contiguous cache) are clamped, and a table entry outside the pool reads zeros.
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "attention_kernels.cuh"
#include "ops.h"
#include "util.cuh"

namespace glm4 {
namespace cuda {
namespace {

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

struct DeviceLimits {
  int smem_optin = 0;
  int major = 0;
  int sms = 0;
};
DeviceLimits limits_of(int dev) {
  DeviceLimits d;
  CUDA_CHECK(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev));
  return d;
}

// Plan settings from the environment, read once a process (a way back without a rebuild if a kernel or a default
// misbehaves on some card):
//   GLM4_ATTN_PLAN=old                 the configuration of the first H200 run (16-row prefill, m128 p64 s4 decode)
//   GLM4_ATTN_PLAN=v1                  run5's defaults (decode_kernel with its ticket-tree merge, m256 p64)
//   (default: decode version 2 with m128 p64 up to 8 query rows, run5's kernel with m256 p64 above: PlanKnobs)
//   GLM4_ATTN_DECODE=mink,pfix,stages  decode split rule (keys a split at least, splits at most) and pipeline depth 2..4
//                                      (0: 4 for <= 4 units, else 2, the default)
//   GLM4_ATTN_DECODE=mink,pfix,stages,ver[,pbf16[,pdl]]  also the decode kernel: ver 1 = decode_kernel (tickets),
//                                      2 = decode2_kernel + merge kernel (default), 3 = decode2m_kernel (several splits
//                                      a block, by the grid) + merge kernel, pbf16 1 = bf16 partial states,
//                                      pdl 0 = no programmatic dependent launch
//   GLM4_ATTN_PREFILL=1,warps          prefill_kernel with 4 or 8 warps
//   GLM4_ATTN_PREFILL=2,warps,ks,st    prefill2_kernel: (4,16,2) or (8,16,2) (the instantiated ones; 8,16,2 the default
//                                      until run9, and still where prefill3 has no code)
//   GLM4_ATTN_PREFILL=3,kn,st,pv       prefill3_kernel (wgmma, sm_90a, D 128; prefill2 8,16,2 elsewhere): keys a tile,
//                                      stages, PV width in (64,4,64) (64,4,128) (128,3,128) (128,3,64); 64,4,128 is the
//                                      default
// A malformed value is an error (ERR invalid argument) at the first attention, never a silent default.
struct EnvKnobs {
  attn::PlanKnobs k;
  std::string error;
};
std::vector<int> parse_ints(const char* s) {
  std::vector<int> v;
  std::string cur;
  for (const char* p = s;; ++p) {
    if (*p == ',' || *p == 0) {
      if (cur.empty() || cur.size() > 6 || cur.find_first_not_of("0123456789") != std::string::npos) return {};
      v.push_back(std::stoi(cur));
      cur.clear();
      if (*p == 0) break;
    } else {
      cur += *p;
    }
  }
  return v;
}
const EnvKnobs& env_knobs() {
  static const EnvKnobs e = [] {
    EnvKnobs r;
    const char* plan = std::getenv("GLM4_ATTN_PLAN");
    if (plan && *plan) {
      if (std::string(plan) == "old") r.k = attn::PlanKnobs::old();
      else if (std::string(plan) == "v1") r.k = attn::PlanKnobs::v1();
      else if (std::string(plan) != "default") r.error = std::string("GLM4_ATTN_PLAN=") + plan + ": expected old, v1 or default";
    }
    if (const char* d = std::getenv("GLM4_ATTN_DECODE"); d && *d) {
      const std::vector<int> v = parse_ints(d);
      if (v.size() >= 3 && v.size() <= 6 && v[0] >= 1 && v[1] >= 1 && v[1] <= attn::kMaxSplits &&
          (v[2] == 0 || (v[2] >= 2 && v[2] <= 4)) && (v.size() < 4 || (v[3] >= 1 && v[3] <= 3)) &&
          (v.size() < 5 || v[4] <= 1) && (v.size() < 6 || v[5] <= 1)) {
        r.k.mink = v[0];
        r.k.pfix = v[1];
        r.k.stages = v[2];
        r.k.big_t = 1 << 30;  // one rule and kernel for every T
        if (v.size() >= 4) r.k.dver = v[3];
        if (v.size() >= 5) r.k.pbf16 = v[4];
        if (v.size() >= 6) r.k.pdl = v[5];
      } else {
        r.error = std::string("GLM4_ATTN_DECODE=") + d + ": expected mink,pfix,stages[,ver[,pbf16[,pdl]]] (pfix 1.." +
                  std::to_string(attn::kMaxSplits) + ", stages 2..4 or 0: by the number of units, ver 1..3, pbf16 and pdl 0 or 1)";
      }
    }
    if (const char* f = std::getenv("GLM4_ATTN_PREFILL"); f && *f) {
      const std::vector<int> v = parse_ints(f);
      if (v.size() == 2 && v[0] == 1 && (v[1] == 4 || v[1] == 8)) {
        r.k.pver = 1;
        r.k.warps = v[1];
      } else if (v.size() == 4 && v[0] == 2 && (v[1] == 4 || v[1] == 8) && v[2] == 16 && v[3] == 2) {
        r.k.pver = 2;
        r.k.warps = v[1];
        r.k.pks = v[2];
        r.k.pstages = v[3];
      } else if (v.size() == 4 && v[0] == 3 &&
                 ((v[1] == 64 && v[2] == 4 && (v[3] == 64 || v[3] == 128)) ||
                  (v[1] == 128 && v[2] == 3 && (v[3] == 64 || v[3] == 128)))) {
        r.k.pver = 3;
        r.k.fkn = v[1];
        r.k.fst = v[2];
        r.k.fpv = v[3];
      } else {
        r.error = std::string("GLM4_ATTN_PREFILL=") + f +
                  ": expected 1,4 | 1,8 | 2,4,16,2 | 2,8,16,2 | 3,64,4,64 | 3,64,4,128 | 3,128,3,128 | 3,128,3,64";
      }
    }
    return r;
  }();
  return e;
}

// The kernel plan of csrc/cuda/attention_kernels.cuh for these tensors (the same at record and at run time).
attn::Plan plan_for(int dev, const Tensor& q, const Tensor& kc, const Tensor& table, const Tensor& seq, int64_t block_size) {
  const DeviceLimits lim = limits_of(dev);
  const EnvKnobs& env = env_knobs();
  GLM4_CHECK(env.error.empty(), GLM4_E_INVALID_ARG, "attention: ", env.error);
  const int64_t max_len = table.defined() ? table.dim(1) * block_size : kc.dim(0);
  return attn::plan_attention(static_cast<int>(q.dim(0)), static_cast<int>(q.dim(1)), static_cast<int>(kc.dim(1)),
                              static_cast<int>(q.dim(2)), kc.dtype() == DType::BF16, seq.defined(), max_len,
                              lim.smem_optin, env.k, lim.major, lim.sms);
}

void check_limits(const Tensor& q, const Tensor& kc) {
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = kc.dim(1);
  GLM4_CHECK(D <= 512, GLM4_E_UNSUPPORTED, "attention: head dim ", D, " is above 512, which the CUDA backend does not take");
  GLM4_CHECK(T * Hq < (int64_t{1} << 31) && T * Hkv * ((Hq / std::max<int64_t>(Hkv, 1) + 15) / 16) < (int64_t{1} << 31),
             GLM4_E_UNSUPPORTED, "attention: q ", q.describe(), " is too large");
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

Tensor attention_workspace(Context& c, const Tensor& q, const Tensor& kc, const Tensor& table, const Tensor& seq,
                           int64_t block_size) {
  if (q.dim(0) == 0 || q.dim(1) == 0) return Tensor();
  check_limits(q, kc);
  const int dev = c.device().index;
  int prev = -1;
  CUDA_CHECK(cudaGetDevice(&prev));
  if (prev != dev) CUDA_CHECK(cudaSetDevice(dev));
  const attn::Plan p = plan_for(dev, q, kc, table, seq, block_size);
  Tensor w;
  if (p.work > 0) {
    bool fresh = false;
    w = c.workspace("attention", static_cast<int64_t>(p.work), &fresh);
    // The decode kernel's tickets must be zero at rest (each launch leaves them so): zero a new buffer once, on
    // the legacy stream and synchronously, before any op can use it.
    if (fresh) {
      CUDA_CHECK(cudaMemsetAsync(w.raw(), 0, static_cast<size_t>(w.nbytes()), 0));
      CUDA_CHECK(cudaStreamSynchronize(0));
    }
  }
  if (prev != dev) CUDA_CHECK(cudaSetDevice(prev));
  return w;
}

void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
               float scale, int64_t block_size, const Tensor& table, const Tensor& seq) {
  attention_run(c, out, q, kc, vc, pos, scale, block_size, table, seq,
                attention_workspace(c, q, kc, table, seq, block_size));
}

void attention_run(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
                   float scale, int64_t block_size, const Tensor& table, const Tensor& seq, const Tensor& work) {
  const int64_t T = q.dim(0), Hq = q.dim(1);
  if (T == 0 || Hq == 0) return;
  check_limits(q, kc);
  GLM4_CHECK(aligned16(kc.raw()) && aligned16(vc.raw()) && aligned16(q.raw()) && aligned16(out.raw()), GLM4_E_INVALID_ARG,
             "attention: q, out and the caches must be 16-byte aligned (16-byte loads and stores)");
  const attn::Plan p = plan_for(c.device().index, q, kc, table, seq, block_size);
  GLM4_CHECK(p.work == 0 || (work.defined() && work.nbytes() >= static_cast<int64_t>(p.work)), GLM4_E_INTERNAL,
             "attention: the split-K workspace is missing or too small (", work.defined() ? work.nbytes() : 0, " < ",
             p.work, " bytes)");
  attn::Args a;
  a.q = q.data<float>();
  a.kc = kc.raw();
  a.vc = vc.raw();
  a.pos = pos.data<int32_t>();
  a.table = table.defined() ? table.data<int32_t>() : nullptr;
  a.seq = table.defined() && seq.defined() ? seq.data<int32_t>() : nullptr;
  if (out.dtype() == DType::BF16) a.outb = out.data<__nv_bfloat16>();  // the f32 results rounded (the GEMM's input)
  else a.out = out.data<float>();
  a.work = p.work > 0 ? work.raw() : nullptr;
  a.work_bytes = p.work > 0 ? static_cast<size_t>(work.nbytes()) : 0;
  a.T = static_cast<int>(T);
  a.Hq = static_cast<int>(Hq);
  a.Hkv = static_cast<int>(kc.dim(1));
  a.D = static_cast<int>(q.dim(2));
  a.rows = kc.dim(0);
  if (table.defined()) {
    a.B = static_cast<int>(table.dim(0));
    a.NB = static_cast<int>(table.dim(1));
    while ((int64_t{1} << a.shift) < block_size) ++a.shift;
  }
  a.qscale = scale * attn::kLog2e;
  a.bf16 = kc.dtype() == DType::BF16;
  CUDA_CHECK(attn::launch(a, p, stream_of(c)));
  CUDA_CHECK_LAUNCH("attention");
}

}  // namespace cuda
}  // namespace glm4
