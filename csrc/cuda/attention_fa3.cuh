// prefill3 ("fa3"): causal GQA prefill attention on Hopper's wgmma (sm_90a), D = 128, bf16 paged cache. Included by
// attention_kernels.cuh (same Args, same addressing, same output contract as prefill2_kernel, which stays the kernel
// of sm_80/86/89 and the GLM4_ATTN_PREFILL fallback). Ideas from the FlashAttention-3 paper (warp specialization,
// wgmma with P from registers, the softmax of one tile overlapping the PV product of the previous one); the code is
// this project's own.
//
// Block: 128 rows (token, query head) of one KV group (row r of the group = token r / per, head g * per + r % per:
// for GLM-4 8 tokens x the group's 16 heads, so every K/V tile in shared memory serves all 16 heads), 3 warpgroups:
//  - warpgroup 2 = producer (setmaxnreg 56 or 40: the consumers get 224 or 232 registers): streams the K and V tiles of the causal key range (KN keys a tile) through a STAGES-deep ring
//    with cp.async (16 bytes a copy; rows past the visible range or outside the pool are zero-filled, so no garbage
//    from a half-written page can reach the PV product as 0 * NaN), through the block table at any block size. It
//    keeps two tiles in flight: after issuing tile n it waits for tile n-1's copies, makes them visible to the async
//    proxy (fence.proxy.async: wgmma reads shared memory through it) and arrives on that stage's `full` mbarrier
//    (128 arrivals, one a producer thread).
//  - warps 0-3, 4-7 = two consumer warpgroups of 64 rows each (wgmma's M). Per tile: S = Q K^T by wgmma m64nKNk16
//    (Q scaled to the log2 domain, bf16, held in registers as the A operand, K from shared memory through a
//    128-byte-swizzle K-major descriptor), causal mask only on tiles that cross a row's last visible key, online
//    softmax in registers (S's accumulator layout is the A-fragment layout of P: no shuffle), then O += P V by wgmma
//    with P from registers and V from shared memory as an N-major operand (the transpose bit: the tile is keys x dims,
//    dims contiguous). The two warpgroups run unsynchronized (each waits on the `full` barriers only), so one's
//    softmax overlaps the other's wgmma; within a warpgroup the S product of tile j+1 and the PV product of tile j are
//    issued together and the softmax of tile j+1 runs while the PV product is still in the tensor cores.
//    Each consumer warp arrives on the stage's `empty` mbarrier once its PV product of that tile is complete.
// Shared-memory tile: K and V each [2 halves of 64 dims][KN keys][128 bytes], 16-byte chunk c of key k stored at
// chunk c ^ (k & 7) (the 128-byte swizzle; 1024-byte aligned atoms of 8 keys). For S the descriptor is K-major
// (leading = D, 8-key groups 1024 bytes apart, k16 steps +32 bytes inside a half, then the next half); for PV it is
// N-major: k16 steps = 16 keys = +2048 bytes, the 64-dim halves kHalf bytes apart (the leading byte offset), the
// 8-key groups 1024 bytes apart (the stride byte offset). PVN = 64 issues the PV product as two n64 halves, for which
// the leading offset is unused: both offsets are 1024 (a variant that does not depend on which field the hardware
// takes for the 8-key step). Both validated on the H200 (run9), so the leading offset is the 64-dim stride; PVN = 128
// is the faster (303 vs 298 TFLOP/s at T = 8K) and the default (KN 64, 4 stages).
// Sequences: the rows of a block may belong to several sequences (a batch of prompts); the block runs one pass per
// sequence present (in order of first appearance), each over that sequence's keys; rows of other sequences are masked
// out of the pass. Precomputed at block start into shared memory so that producer and consumers walk the same tiles.
#pragma once

#include "gemm_int4_sm90.cuh"  // mbarrier, wgmma fence / commit / wait, keep(), desc_sw128, Wgmma<N>

namespace glm4 {
namespace cuda {
namespace attn {

template <int KN_, int STAGES_, int PVN_, bool PP_ = false>
struct Fa3Cfg {
  static constexpr int D = 128;
  static constexpr int KN = KN_, STAGES = STAGES_, PVN = PVN_;
  static constexpr bool PP = PP_;  // ping-pong: the two warpgroups take turns issuing their products
  // setmaxnreg split of the 384 x 168 registers the block starts with (128 p + 256 c <= 64512): KN = 64 fits the
  // consumers in 224 and leaves the producer 56 (ptxas: no spills); KN = 128's consumers need 232 (S and P double).
  static constexpr int kProdRegs = KN == 64 ? 56 : 40, kConsRegs = KN == 64 ? 224 : 232;
  static_assert(128 * kProdRegs + 256 * kConsRegs <= 384 * 168, "register split");
  static constexpr int kRows = 128;                  // 2 consumer warpgroups x 64
  static constexpr int kThreads = 384;               // + one producer warpgroup
  static constexpr int kHalf = KN * 128;             // bytes of one 64-dim half of a K or V tile
  static constexpr int kTile = 2 * kHalf;
  static constexpr int kStage = 2 * kTile;           // K then V
  static constexpr int kSmem = STAGES * kStage + 1024;  // + alignment slack (1024-byte swizzle atoms)
  static constexpr int kMaxPass = kRows + 1;         // distinct sequences among the rows, at most
  static_assert(KN == 64 || KN == 128, "key tile");
  static_assert(PVN == 64 || PVN == 128, "PV product width");
  static_assert(STAGES >= 3, "stages: the producer arrives on tile n after issuing tile n + 1 (2 stages would deadlock)");
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// 128-byte-swizzle descriptor with explicit leading / stride byte offsets (N-major operands).
__device__ __forceinline__ uint64_t fa3_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16) |
         (static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32) | (uint64_t{1} << 62);
}
__device__ __forceinline__ void fa3_fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
// mbarrier wait that traps after ~2 s (4e9 cycles) instead of hanging: a schedule bug becomes a launch error that
// the caller sees (the harness then reruns without the variant) rather than a hung process.
__device__ __forceinline__ void fa3_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  long long t0 = 0;
  for (int it = 0;; ++it) {
    asm volatile(
        "{\n.reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
    if (done) return;
    if (it == 0) t0 = clock64();
    else if ((it & 1023) == 0 && clock64() - t0 > 4000000000LL) __trap();
  }
}
#endif

// grid.x = ceil(T * per / 128) * Hkv (heaviest row tile first, the KV groups interleaved), block 384 threads.
template <int KN, int STAGES, int PVN, bool PP = false>
__global__ void __launch_bounds__(384, 1) prefill3_kernel(Args a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = Fa3Cfg<KN, STAGES, PVN, PP>;
  constexpr int D = 128;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __shared__ __align__(8) uint64_t s_bar[2 * STAGES];  // full[s], then empty[s]
  __shared__ int s_rseq[Cfg::kRows], s_rlen[Cfg::kRows];
  __shared__ int s_pseq[Cfg::kMaxPass], s_pend[Cfg::kMaxPass];
  __shared__ int s_npass;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = static_cast<int>(blockIdx.x % a.Hkv);
  const int64_t ntile = gridDim.x / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const int64_t nrows_all = static_cast<int64_t>(a.T) * per;
  const int64_t row0 = (ntile - 1 - blockIdx.x / a.Hkv) * Cfg::kRows;  // heaviest first
  const uint32_t sbase = (gemmk::smem_u32(smem_raw) + 1023u) & ~1023u;
  const uint32_t bar0 = gemmk::smem_u32(s_bar);
  auto full_bar = [&](int s) { return bar0 + 8u * s; };
  auto empty_bar = [&](int s) { return bar0 + 8u * (STAGES + s); };

  // Rows: sequence and visible length (0: no keys: the row's output is zeros).
  if (tid < Cfg::kRows) {
    const int64_t r = row0 + tid;
    int sq = -1, len = 0;
    if (r < nrows_all) {
      const int tok = static_cast<int>(r / per);
      const QueryKeys qk = query_keys(a, tok);
      len = qk.len;
      sq = a.seq ? a.seq[tok] : 0;
    }
    s_rseq[tid] = sq;
    s_rlen[tid] = len;
  }
  if (tid == 0) {
    s_npass = 0x7fffffff;  // first valid row, then the pass count
    s_pend[0] = 0;
  }
  if (tid == Cfg::kRows) {
    for (int s = 0; s < STAGES; ++s) {
      gemmk::mbar_init(full_bar(s), 128);  // one arrival per producer thread
      gemmk::mbar_init(empty_bar(s), 8);   // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();
  if (tid < Cfg::kRows && s_rlen[tid] > 0) atomicMin(&s_npass, tid);
  __syncthreads();
  const int first = s_npass;
  // One sequence among the valid rows (the usual case): one pass, found in parallel; else thread 0 lists the passes.
  const bool one = __syncthreads_and(tid >= Cfg::kRows || first == 0x7fffffff || s_rlen[tid] <= 0 ||
                                     s_rseq[tid] == s_rseq[first]);
  if (one) {
    if (tid < Cfg::kRows && s_rlen[tid] > 0) atomicMax(&s_pend[0], s_rlen[tid]);
    if (tid == 0) {
      s_pseq[0] = first == 0x7fffffff ? 0 : s_rseq[first];
      s_npass = first == 0x7fffffff ? 0 : 1;
    }
  } else if (tid == 0) {  // passes: distinct sequences in order of first appearance, each with its longest range
    int np = 0;
    for (int r = 0; r < Cfg::kRows; ++r) {
      const int len = s_rlen[r];
      if (len <= 0) continue;
      const int sq = s_rseq[r];
      int i = np - 1;
      while (i >= 0 && s_pseq[i] != sq) --i;
      if (i < 0) {
        s_pseq[np] = sq;
        s_pend[np] = len;
        ++np;
      } else if (len > s_pend[i]) {
        s_pend[i] = len;
      }
    }
    s_npass = np;
  }
  __syncthreads();
  const int npass = s_npass;

  if (warp >= 8) {
    // ------------------------------------------------ producer warpgroup
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(Cfg::kProdRegs));
    const int pt = tid - 256;  // 0..127
    const __nv_bfloat16* kp = static_cast<const __nv_bfloat16*>(a.kc);
    const __nv_bfloat16* vp = static_cast<const __nv_bfloat16*>(a.vc);
    const int64_t rs = static_cast<int64_t>(a.Hkv) * D;  // elements per pool row
    const int c = pt & 15;                                // this thread's 16-byte chunk of a key row
    const int64_t off = static_cast<int64_t>(g) * D + c * 8;
    const uint32_t half = static_cast<uint32_t>(c >> 3) * Cfg::kHalf, cc = c & 7;
    int stage = 0, prev = -1;
    uint32_t phase = 0;
    for (int p = 0; p < npass; ++p) {
      const int sq = s_pseq[p], kend = s_pend[p];
      const int32_t* tb = a.table ? a.table + static_cast<int64_t>(sq) * a.NB : nullptr;
      const int nt = (kend + KN - 1) / KN;
      for (int j = 0; j < nt; ++j) {
        fa3_wait(empty_bar(stage), phase ^ 1);
        const uint32_t ks = sbase + stage * Cfg::kStage, vs = ks + Cfg::kTile;
#pragma unroll 4
        for (int k = pt >> 4; k < KN; k += 8) {
          const int pk = j * KN + k;
          const int64_t r = pk < kend ? key_row(a, tb, pk) : -1;
          const bool ok = r >= 0;
          const int64_t e = ok ? r * rs + off : 0;
          const uint32_t so = half + static_cast<uint32_t>(k) * 128u + ((cc ^ (k & 7)) << 4);
          cp_async16(ks + so, kp + e, ok);
          cp_async16(vs + so, vp + e, ok);
        }
        cp_async_commit();
        if (prev >= 0) {
          cp_async_wait<1>();      // this thread's copies of the previous tile have landed
          fa3_fence_async_smem();  // ... and are visible to wgmma (async proxy)
          gemmk::mbar_arrive(full_bar(prev));
        }
        prev = stage;
        if (++stage == STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    if (prev >= 0) {
      cp_async_wait<0>();
      fa3_fence_async_smem();
      gemmk::mbar_arrive(full_bar(prev));
    }
    return;
  }

  // ------------------------------------------------ consumers: warpgroup cw, rows cw * 64 + 16 w + gq + 8 h
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(Cfg::kConsRegs));
  using MS = gemmk::Wgmma<KN>;
  constexpr int NS = KN / 2;   // S accumulators a thread: s[4 i + 2 h + e] = S[row gq + 8h][key 8i + 2t + e]
  const int cw = warp >> 2, w = warp & 3, gq = lane >> 2, tq = lane & 3;
  int rloc[2], rseq[2], rpos[2];
  const float* qrow[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    rloc[h] = cw * 64 + w * 16 + gq + 8 * h;
    rseq[h] = s_rseq[rloc[h]];
    rpos[h] = s_rlen[rloc[h]] - 1;  // last visible key; -1: none
    qrow[h] = nullptr;
    const int64_t r = row0 + rloc[h];
    if (rpos[h] >= 0) {
      const int tok = static_cast<int>(r / per), hd = g * per + static_cast<int>(r % per);
      qrow[h] = a.q + (static_cast<int64_t>(tok) * a.Hq + hd) * D;
    }
  }
  uint32_t qa[D / 16][4];
  load_q_frags<D>(qa, qrow[0], qrow[1], a.qscale);

  float o[64];  // o[4 n + 2 h + e] = O[row gq + 8h][dim 8n + 2t + e]
#pragma unroll
  for (int i = 0; i < 64; ++i) o[i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t pa[KN / 16][4];  // P of the tile whose PV product is issued next (bf16 A fragments)
  float s[NS];
  int stage = 0;
  uint32_t phase = 0;

  // S = Q K^T of the tile in `st` (issued, committed; not waited for).
  auto issue_s = [&](int st) {
#pragma unroll
    for (int i = 0; i < NS; ++i) s[i] = 0.f;
    gemmk::wgmma_fence();
    const uint32_t ks = sbase + st * Cfg::kStage;
#pragma unroll
    for (int kd = 0; kd < D / 16; ++kd)
      MS::mma(s, qa[kd][0], qa[kd][1], qa[kd][2], qa[kd][3],
              gemmk::desc_sw128(ks + (kd >> 2) * Cfg::kHalf + (kd & 3) * 32));
  };
  // O += P V of the tile in `st` (issued; the caller commits).
  auto issue_pv = [&](int st) {
    const uint32_t vs = sbase + st * Cfg::kStage + Cfg::kTile;
#pragma unroll
    for (int kk = 0; kk < KN / 16; ++kk) {
      if constexpr (PVN == 128) {
        gemmk::Wgmma<128>::mma_tb(o, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3],
                                  fa3_desc(vs + kk * 2048, Cfg::kHalf, 1024));
      } else {
        float(&o0)[32] = *reinterpret_cast<float(*)[32]>(o);
        float(&o1)[32] = *reinterpret_cast<float(*)[32]>(o + 32);
        gemmk::Wgmma<64>::mma_tb(o0, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3], fa3_desc(vs + kk * 2048, 1024, 1024));
        gemmk::Wgmma<64>::mma_tb(o1, pa[kk][0], pa[kk][1], pa[kk][2], pa[kk][3],
                                 fa3_desc(vs + Cfg::kHalf + kk * 2048, 1024, 1024));
      }
    }
  };
  // Mask (where needed) and the online softmax of s for keys k0 ..; returns the O rescale factors in corr (O is not
  // touched: a PV product may still be reading it... no: writing it; the caller rescales after the wait).
  auto softmax = [&](int k0, const bool (&act)[2], int wfull, float (&corr)[2]) {
    if (k0 + KN > wfull) {
#pragma unroll
      for (int i = 0; i < NS / 4; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e >> 1, key = k0 + 8 * i + 2 * tq + (e & 1);
          if (!act[h] || key > rpos[h]) s[4 * i + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < NS / 4; ++i) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * h], s[4 * i + 2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float mn = fmaxf(m[h], mx);
      const float mu = mn == -INFINITY ? 0.f : mn;  // nothing visible yet: everything stays 0
      corr[h] = exp2f(m[h] - mu);                   // 0 when m was -inf, 1 when the max did not move
      float sum = 0.f;
#pragma unroll
      for (int i = 0; i < NS / 4; ++i) {
        s[4 * i + 2 * h] = exp2f(s[4 * i + 2 * h] - mu);
        s[4 * i + 2 * h + 1] = exp2f(s[4 * i + 2 * h + 1] - mu);
        sum += s[4 * i + 2 * h] + s[4 * i + 2 * h + 1];
      }
      l[h] = l[h] * corr[h] + sum;
      m[h] = mn;
    }
  };
  auto rescale = [&](const float (&corr)[2]) {
    if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        o[4 * n] *= corr[0];
        o[4 * n + 1] *= corr[0];
        o[4 * n + 2] *= corr[1];
        o[4 * n + 3] *= corr[1];
      }
    }
  };
  // P (bf16) from s: k16 step kk takes key tiles 2kk, 2kk+1 (the mma A fragment: rows g / g+8, keys 2t.. / 2t+8..).
  auto pack_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < KN / 16; ++kk) {
      pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };
  auto next_stage = [&]() {
    if (++stage == STAGES) {
      stage = 0;
      phase ^= 1;
    }
  };
  // Ping-pong (PP): warpgroup cw issues its products only on its turn (named barrier 1 + cw, 256 threads: its own
  // 128 waiting + the other's 128 arriving) and hands the turn over right after, so that one warpgroup's softmax
  // runs while the other's products occupy the tensor cores. Both warpgroups have the same number of issue points
  // (same passes, same tiles); warpgroup 1 gives the first turn, warpgroup 0 takes the last hand-over at the end.
  auto turn_wait = [&]() {
    if constexpr (PP) asm volatile("bar.sync %0, 256;" ::"r"(1 + cw) : "memory");
  };
  auto turn_pass = [&]() {
    if constexpr (PP) asm volatile("bar.arrive %0, 256;" ::"r"(2 - cw) : "memory");
  };
  if (cw == 1) {
    if constexpr (PP) asm volatile("bar.arrive 1, 256;" ::: "memory");
  }

  for (int p = 0; p < npass; ++p) {
    const int sq = s_pseq[p], kend = s_pend[p];
    const int nt = (kend + KN - 1) / KN;
    bool act[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) act[h] = rpos[h] >= 0 && rseq[h] == sq;
    // keys below wfull are visible to every row of this warp (no mask needed there)
    const int wfull = __reduce_min_sync(0xffffffffu, min(act[0] ? rpos[0] : -1, act[1] ? rpos[1] : -1)) + 1;
    float corr[2];

    // tile 0: S, softmax, P
    fa3_wait(full_bar(stage), phase);
    turn_wait();
    issue_s(stage);
    gemmk::wgmma_commit();
    turn_pass();
    gemmk::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < NS; ++i) gemmk::keep(s[i]);
    softmax(0, act, wfull, corr);
    rescale(corr);
    pack_p();
    int cur = stage;
    next_stage();
    for (int j = 1; j < nt; ++j) {
      fa3_wait(full_bar(stage), phase);
      turn_wait();
      issue_s(stage);          // S of tile j (the fence in issue_s also orders the O / P writes above)
      gemmk::wgmma_commit();
      issue_pv(cur);           // O += P V of tile j - 1
      gemmk::wgmma_commit();
      turn_pass();
      gemmk::wgmma_wait<1>();  // S of tile j is complete
#pragma unroll
      for (int i = 0; i < NS; ++i) gemmk::keep(s[i]);
      softmax(j * KN, act, wfull, corr);  // overlaps the PV product in flight
      gemmk::wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) gemmk::keep(o[i]);
#pragma unroll
      for (int kk = 0; kk < KN / 16; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) gemmk::keep(pa[kk][e]);
      if (lane == 0) gemmk::mbar_arrive(empty_bar(cur));  // tile j - 1 is no longer read
      rescale(corr);
      pack_p();
      cur = stage;
      next_stage();
    }
    turn_wait();
    gemmk::wgmma_fence();
    issue_pv(cur);
    gemmk::wgmma_commit();
    turn_pass();
    gemmk::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) gemmk::keep(o[i]);
    if (lane == 0) gemmk::mbar_arrive(empty_bar(cur));
  }

  if (cw == 0) {
    if constexpr (PP) asm volatile("bar.sync 1, 256;" ::: "memory");  // warpgroup 1's last hand-over
  }
  // Epilogue: the quad's partial row sums, O / l (rows with nothing visible: zeros).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float li = l[h];
    li += __shfl_xor_sync(0xffffffffu, li, 1);
    li += __shfl_xor_sync(0xffffffffu, li, 2);
    const int64_t r = row0 + rloc[h];
    if (r >= nrows_all) continue;
    const int tok = static_cast<int>(r / per), hd = g * per + static_cast<int>(r % per);
    const int64_t orow = (static_cast<int64_t>(tok) * a.Hq + hd) * D;
    const float inv = li > 0.f ? 1.f / li : 0.f;
#pragma unroll
    for (int n = 0; n < 16; ++n) out_store2(a, orow + n * 8 + 2 * tq, o[4 * n + 2 * h] * inv, o[4 * n + 2 * h + 1] * inv);
  }
#endif
}

// True where prefill3_kernel has code: a device of compute capability 9.0 (the addon's sm_90a image). Cached per device.
inline bool fa3_device_ok() {
  static std::atomic<uint64_t> known{0}, ok{0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  const uint64_t bit = uint64_t{1} << (dev & 63);
  if (!(known.load() & bit)) {
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
    if (major == 9 && minor == 0) ok.fetch_or(bit);
    known.fetch_or(bit);
  }
  return (ok.load() & bit) != 0;
}

}  // namespace attn
}  // namespace cuda
}  // namespace glm4
