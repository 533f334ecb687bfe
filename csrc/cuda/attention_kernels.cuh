// Causal GQA attention over a paged KV cache: the kernels and their launchers, on raw pointers, so that the op
// (csrc/cuda/attention.cu) and the kernel harness (bench/kernels/attention_bench.cu) run the same code. The op's
// contract is in csrc/ops.h; csrc/cpu/attention.cc is the reference.
//
// Addressing. The pool holds rows [R, Hkv, D]. Query t belongs to sequence s = seq[t] (0 without seq) and sees
// positions 0..pos[t] of it; position p lives at row table[s][p >> shift] * bs + (p & (bs - 1)), or at row p
// when there is no table. A key whose row falls outside the pool is never read (its K/V arrive as zeros).
//
// Three kernels (plan_attention below picks one from the shapes alone, never from the lengths, so a captured
// decode step replays for any length):
//  - decode (bf16 cache, D 32/64/128, few queries): one block per (query token, KV group, 16 query heads of the
//    group, key split). The block streams its split's K/V tiles (64 keys) through shared memory with a cp.async
//    pipeline, and the 16 heads' scores come from one tensor-core mma (q [16 heads x D] . K^T is an m16 tile):
//    each K/V byte is read from memory once per token for all the heads of its group. Four warps take 16 keys
//    of each tile each (online softmax per warp), merged through shared memory at the end. Long contexts are
//    split over blocks (grid.y = the most splits the shapes allow; each (token, group) derives its own split
//    count from its length on the device, empty splits exit at once). Splits write partial (max, sum, output)
//    states to a workspace and the last split to arrive (an atomic ticket per (token, group)) merges them and
//    resets its ticket to 0, so the ticket area is all zeros again after every launch (no memset node, one
//    kernel). The ticket area is the buffer's first N/64 bytes whatever the launch's shapes (decode_work).
//  - decode version 2 (decode2_kernel + decode_merge_kernel, the default up to 8 query rows; see "decode, version 2"
//    below and PlanKnobs): the same streaming, no tickets: each split writes its partial state and a second kernel,
//    chained by PDL, merges them with the splits spread over a block's threads.
//  - prefill (bf16 cache, D 32/64/128, many queries): flash attention on the tensor cores. A block takes 16*NW
//    (prefill_kernel) or 32*NW (prefill2_kernel: two m16 row tiles a warp share each K/V fragment; the default where
//    prefill3_kernel has no code: attention_fa3.cuh's wgmma kernel is the default on sm_90 for D 128)
//    rows of (token, query head) pairs of one KV group (the heads of a token are adjacent rows, so each K/V tile
//    in shared memory serves every head of the group), streams the causal key range in 64-key tiles
//    (cp.async pipeline), S = Q K^T and O += P V with mma.sync m16n8k16 (bf16 in, f32 accumulate; P is
//    rounded to bf16 for the PV product), online softmax in registers, no T x T matrix anywhere. Rows of several
//    sequences in one tile are handled in passes, one sequence's keys per pass.
//  - generic (any cache dtype, any D <= 512): one warp per (token, head), plain f32 arithmetic. The fallback for
//    what the fast kernels do not take; never an error on a valid model.
// Scores are in the log2 domain throughout (q pre-scaled by scale * log2(e), exp2f).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace glm4 {
namespace cuda {
namespace attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr int kKeyTile = 64;     // keys per shared-memory tile (decode and prefill)
constexpr int kMaxSplits = 128;  // upper bound of decode splits per (token, group, head tile): 16 merge groups
constexpr int kMergeFan = 8;     // decode splits merged together at the first level of the merge tree

// ----------------------------------------------------------------------------------------------- arguments
struct Args {
  const float* q = nullptr;       // [T, Hq, D] f32
  const void* kc = nullptr;       // [R, Hkv, D] bf16 | f32
  const void* vc = nullptr;       // [R, Hkv, D]
  const int32_t* pos = nullptr;   // [T] position of each query in its sequence
  const int32_t* table = nullptr; // [B, NB] block table, or null (one contiguous sequence, position = row)
  const int32_t* seq = nullptr;   // [T] sequence of each query, or null (all 0)
  float* out = nullptr;           // [T, Hq, D] f32
  __nv_bfloat16* outb = nullptr;  // [T, Hq, D] bf16, written instead of out when set (the f32 results rounded)
  void* work = nullptr;           // decode split-K workspace (its ticket area zero at rest), or null
  size_t work_bytes = 0;          // its size (where the ticket area ends depends on it)
  int T = 0, Hq = 0, Hkv = 0, D = 0;
  int64_t rows = 0;               // R
  int B = 1, NB = 0, shift = 0;   // table rows, blocks per row, log2(block size)
  float qscale = 0.f;             // scale * log2(e)
  bool bf16 = true;               // cache dtype (else f32)
};

// Where one query's keys live: its table row (or null), how many positions it sees.
struct QueryKeys {
  const int32_t* tb;
  int len;  // 0 for an invalid query (negative position, sequence outside the table)
};

__device__ __forceinline__ QueryKeys query_keys(const Args& a, int t) {
  QueryKeys k{nullptr, 0};
  const int p = a.pos[t];
  if (p < 0) return k;
  if (a.table) {
    const int s = a.seq ? a.seq[t] : 0;
    if (s < 0 || s >= a.B) return k;
    k.tb = a.table + static_cast<int64_t>(s) * a.NB;
    k.len = static_cast<int>(min(static_cast<int64_t>(p) + 1, static_cast<int64_t>(a.NB) << a.shift));
  } else {
    k.len = static_cast<int>(min(static_cast<int64_t>(p) + 1, a.rows));
  }
  return k;
}

// Pool row of position p (p < len of its query), or -1 when the table points outside the pool.
__device__ __forceinline__ int64_t key_row(const Args& a, const int32_t* tb, int p) {
  if (!tb) return p;
  const int64_t blk = __ldg(tb + (p >> a.shift));
  const int64_t r = (blk << a.shift) + (p & ((1 << a.shift) - 1));
  return (blk >= 0 && r < a.rows) ? r : -1;
}

// ----------------------------------------------------------------------------------------------- primitives
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16 bytes global -> shared, bypassing L1 (the cache is streamed); zero-filled when !valid (nothing is read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldsm_x4(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// c[16x8] += a[16x16] b[16x8], bf16 in, f32 accumulate. Fragments (g = lane / 4, t = lane % 4):
//   a: {a0a1 (row g, k 2t..2t+1), a2a3 (row g+8, k 2t..), a4a5 (row g, k 2t+8..), a6a7 (row g+8, k 2t+8..)}
//   b: {b0b1 (k 2t..2t+1, col g), b2b3 (k 2t+8.., col g)};  c: {c0c1 (row g, col 2t..2t+1), c2c3 (row g+8, ..)}
// The lower-indexed element of each pair sits in the low 16 bits.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The output: f32, or bf16 rounded to nearest even exactly like the convert op (util.cuh's f_to_bf16_bits, NaN kept
// quiet with its sign; repeated here because this header stands alone for the kernel harness). i: element index
// (out_store2: even, out_store4: a multiple of 4; the op checks 16-byte alignment of the buffer).
__device__ __forceinline__ uint32_t out_bf16_bits(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}
__device__ __forceinline__ void out_store1(const Args& a, int64_t i, float x) {
  if (a.outb) reinterpret_cast<uint16_t*>(a.outb)[i] = static_cast<uint16_t>(out_bf16_bits(x));
  else a.out[i] = x;
}
__device__ __forceinline__ void out_store2(const Args& a, int64_t i, float x, float y) {
  if (a.outb) *reinterpret_cast<uint32_t*>(a.outb + i) = out_bf16_bits(x) | (out_bf16_bits(y) << 16);
  else *reinterpret_cast<float2*>(a.out + i) = make_float2(x, y);
}
__device__ __forceinline__ void out_store4(const Args& a, int64_t i, float4 v) {
  if (a.outb)
    *reinterpret_cast<uint2*>(a.outb + i) =
        make_uint2(out_bf16_bits(v.x) | (out_bf16_bits(v.y) << 16), out_bf16_bits(v.z) | (out_bf16_bits(v.w) << 16));
  else *reinterpret_cast<float4*>(a.out + i) = v;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ----------------------------------------------------------------------------------------------- tiles
// A tile of kKeyTile keys x D bf16 in shared memory, rows padded by 16 bytes: the 8 row addresses of an
// ldmatrix phase then fall on 8 different 16-byte bank groups (no conflicts), and cp.async stays 16-byte aligned.
template <int D>
struct Tile {
  static constexpr int kLd = D + 8;                          // elements per smem row
  static constexpr int kBytes = kKeyTile * kLd * 2;          // one K or V tile
  static constexpr int kChunks = D / 8;                      // 16-byte chunks per key row
};

// Issues the cp.async of keys [k0, k0 + kKeyTile) of one query's sequence into ks/vs; keys >= kend (or rows
// outside the pool) are zero-filled. NT threads cooperate; each thread owns one 16-byte column of several keys.
template <int D, int NT>
__device__ __forceinline__ void load_kv_tile(const Args& a, const int32_t* tb, int grp, int k0, int kend,
                                             uint32_t ks, uint32_t vs) {
  constexpr int C = Tile<D>::kChunks;
  static_assert(NT % C == 0 && (kKeyTile * C) % NT == 0, "threads vs tile");
  constexpr int KSTEP = NT / C;  // keys covered by one pass of the threads
  const int col = threadIdx.x % C;
  const __nv_bfloat16* kp = static_cast<const __nv_bfloat16*>(a.kc);
  const __nv_bfloat16* vp = static_cast<const __nv_bfloat16*>(a.vc);
  const int64_t rs = static_cast<int64_t>(a.Hkv) * D;  // elements per pool row
  const int64_t off = static_cast<int64_t>(grp) * D + col * 8;
#pragma unroll
  for (int key = threadIdx.x / C; key < kKeyTile; key += KSTEP) {
    const int p = k0 + key;
    const int64_t r = p < kend ? key_row(a, tb, p) : -1;
    const bool ok = r >= 0;
    const int64_t e = ok ? r * rs + off : 0;
    const uint32_t so = static_cast<uint32_t>((key * Tile<D>::kLd + col * 8) * 2);
    cp_async16(ks + so, kp + e, ok);
    cp_async16(vs + so, vp + e, ok);
  }
}

// Q fragments of one m16 tile: rows r0 (g) and r1 (g+8) as f32 pointers (null: zero row), scaled, to bf16.
template <int D>
__device__ __forceinline__ void load_q_frags(uint32_t (&qa)[D / 16][4], const float* r0, const float* r1, float qscale) {
  const int t = threadIdx.x & 3;
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
    const int c = kd * 16 + 2 * t;
    float2 x0 = r0 ? *reinterpret_cast<const float2*>(r0 + c) : make_float2(0.f, 0.f);
    float2 x1 = r1 ? *reinterpret_cast<const float2*>(r1 + c) : make_float2(0.f, 0.f);
    float2 x2 = r0 ? *reinterpret_cast<const float2*>(r0 + c + 8) : make_float2(0.f, 0.f);
    float2 x3 = r1 ? *reinterpret_cast<const float2*>(r1 + c + 8) : make_float2(0.f, 0.f);
    qa[kd][0] = pack_bf16(x0.x * qscale, x0.y * qscale);
    qa[kd][1] = pack_bf16(x1.x * qscale, x1.y * qscale);
    qa[kd][2] = pack_bf16(x2.x * qscale, x2.y * qscale);
    qa[kd][3] = pack_bf16(x3.x * qscale, x3.y * qscale);
  }
}

// S[16 x 8*NP] = Q K^T for keys kbase .. kbase + 8*NP - 1 of the tile at ks (NP even).
template <int D, int NP>
__device__ __forceinline__ void qk_tile(float (&s)[NP][4], const uint32_t (&qa)[D / 16][4], uint32_t ks, int kbase) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NP; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  // ldmatrix x4 over 16 keys x 16 dims: matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7),
  // (keys 8-15, d 8-15) = b0b1, b2b3 of key tile n, then of key tile n+1.
  const int krow = kbase + (lane & 7) + ((lane >> 4) << 3);
  const int kcol = ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
#pragma unroll
    for (int np = 0; np < NP / 2; ++np) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4(b0, b1, b2, b3, ks + static_cast<uint32_t>(((krow + np * 16) * Tile<D>::kLd + kd * 16 + kcol) * 2));
      mma_bf16(s[2 * np], qa[kd], b0, b1);
      mma_bf16(s[2 * np + 1], qa[kd], b2, b3);
    }
  }
}

// O[16 x D] += P[16 x 8*NP] V for keys kbase .. of the tile at vs; P from the S accumulators (rounded to bf16).
template <int D, int NP>
__device__ __forceinline__ void pv_tile(float (&o)[D / 8][4], const float (&p)[NP][4], uint32_t vs, int kbase) {
  const int lane = threadIdx.x & 31;
  // ldmatrix x4 .trans over 16 keys x 16 dims: (keys 0-7, d 0-7), (keys 8-15, d 0-7), (keys 0-7, d 8-15),
  // (keys 8-15, d 8-15) = b0b1, b2b3 of dim tile n, then of dim tile n+1.
  const int vrow = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int vcol = (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < NP / 2; ++kk) {
    const uint32_t pa[4] = {pack_bf16(p[2 * kk][0], p[2 * kk][1]), pack_bf16(p[2 * kk][2], p[2 * kk][3]),
                            pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]), pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3])};
#pragma unroll
    for (int dn = 0; dn < D / 16; ++dn) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4_t(b0, b1, b2, b3,
                vs + static_cast<uint32_t>(((kbase + kk * 16 + vrow) * Tile<D>::kLd + dn * 16 + vcol) * 2));
      mma_bf16(o[2 * dn], pa, b0, b1);
      mma_bf16(o[2 * dn + 1], pa, b2, b3);
    }
  }
}

// Online softmax over one S tile for the thread's two rows (i = 0: row g, elements 0,1; i = 1: row g+8, 2,3).
// Masked scores are -inf on entry. Rescales o and the thread's partial row sums l; m is the running max (shared
// by the quad). S becomes P = exp2(S - m).
template <int D, int NP>
__device__ __forceinline__ void softmax_update(float (&s)[NP][4], float (&m)[2], float (&l)[2], float (&o)[D / 8][4]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NP; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m[i], mx);
    const float mu = mn == -INFINITY ? 0.f : mn;  // a row with nothing visible yet: keep everything at 0
    const float corr = exp2f(m[i] - mu);          // 0 when m was -inf
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      s[n][2 * i] = exp2f(s[n][2 * i] - mu);
      s[n][2 * i + 1] = exp2f(s[n][2 * i + 1] - mu);
      sum += s[n][2 * i] + s[n][2 * i + 1];
    }
    l[i] = l[i] * corr + sum;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][2 * i] *= corr;
      o[n][2 * i + 1] *= corr;
    }
    m[i] = mn;
  }
}

// Merge factors of two online-softmax states (max a with b): scale for each side.
__device__ __forceinline__ float merge_scale(float m, float mmax) { return m == -INFINITY ? 0.f : exp2f(m - mmax); }

// ----------------------------------------------------------------------------------------------- decode
// The decode kernel's workspace, a buffer of N bytes (N >= decode_work_bytes(units, P, D) of the launch):
//   [0, decode_ticket_cap(N)): tickets u32, at most 1 + groups per (token, group, head tile) unit, all zero at rest
//   then level-1 states: (max, sum) float2 [units][P][16], outputs f32 [units][P][16][D]
//   | level-2 states (one per group of kMergeFan splits): float2 [units][groups][16], f32 [units][groups][16][D].
// The ticket area depends on the buffer size alone, never on the launch's shapes: launches of other shapes (decode
// buckets of other batch sizes, other split counts) share the buffer, and partial states of one must never land
// where another expects zero tickets (run2 on the H200: B = 32 after B = 1 failed validation with stale tickets).
// Each launch leaves every ticket it took at zero, so the area stays zero after the first clearing.
__host__ __device__ inline int decode_groups(int P) { return (P + kMergeFan - 1) / kMergeFan; }
__host__ __device__ inline int decode_tickets_per_unit(int P) { return 1 + decode_groups(P); }
__host__ __device__ inline size_t decode_ticket_cap(size_t n) { return n / 64 / 256 * 256; }
__host__ __device__ inline size_t decode_data_bytes(int64_t units, int P, int D) {
  return static_cast<size_t>(units) * (P + decode_groups(P)) * 16 * (2 + D) * 4;
}
// Bytes to ask for: n with decode_ticket_cap(n) >= the tickets and n - decode_ticket_cap(n) >= the states (and so
// for every larger n too: the cap grows by at most n / 64 while n grows).
__host__ __device__ inline size_t decode_work_bytes(int64_t units, int P, int D) {
  const size_t tickets = static_cast<size_t>(units) * decode_tickets_per_unit(P) * 4;
  const size_t data = decode_data_bytes(units, P, D);
  return (data + data / 32 + 64 * tickets + 64 * 512 + 255) / 256 * 256;
}
struct DecodeWork {
  unsigned* tickets;
  float2* ml1;
  float* po1;
  float2* ml2;
  float* po2;
};
__device__ __forceinline__ DecodeWork decode_work(void* base, size_t bytes, int units, int P, int D) {
  DecodeWork w;
  unsigned char* b = static_cast<unsigned char*>(base);
  const size_t n1 = static_cast<size_t>(units) * P * 16, n2 = static_cast<size_t>(units) * decode_groups(P) * 16;
  w.tickets = reinterpret_cast<unsigned*>(b);
  w.ml1 = reinterpret_cast<float2*>(b + decode_ticket_cap(bytes));
  w.ml2 = w.ml1 + n1;
  w.po1 = reinterpret_cast<float*>(w.ml2 + n2);
  w.po2 = w.po1 + n1 * D;
  return w;
}

static_assert(kMergeFan <= 16 && kMaxSplits / kMergeFan <= 16, "merge_states takes at most 16 states");
// Merges n partial states (ml[i*16 + r] = (max, sum), po[(i*16 + r)*D + d] = unnormalized output) of 16 rows:
// into the op's output (oa set: rows 0..nrows-1 from element obase, row stride D, normalized), else into one state
// (ml_dst, po_dst).
// Block-wide; partials are read through L2 (written by other blocks of this launch). fac: smem [n][16]. n <= kMaxMerge.
// Every partial a thread needs is loaded before the first is used (a fixed, unrolled bound with predicates): the
// L2 round trips overlap instead of following one another (a merge is on the critical path of a B = 1 decode step);
// the sums keep their order (i ascending), so the result is the same bit for bit as one load at a time.
constexpr int kMaxMerge = 16;  // = max(kMergeFan, kMaxSplits / kMergeFan)
template <int D>
__device__ __forceinline__ void merge_states(const float2* ml, const float* po, int n, float* fac, int nrows, const Args* oa,
                                             int64_t obase, float2* ml_dst, float* po_dst) {
  const bool out = oa != nullptr;
  if (threadIdx.x < 16) {
    const int r = threadIdx.x;
    float2 x[kMaxMerge];
#pragma unroll
    for (int i = 0; i < kMaxMerge; ++i)
      if (i < n) x[i] = __ldcg(&ml[i * 16 + r]);
    float M = -INFINITY;
#pragma unroll
    for (int i = 0; i < kMaxMerge; ++i)
      if (i < n) M = fmaxf(M, x[i].x);
    float L = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxMerge; ++i)
      if (i < n) {
        const float f = merge_scale(x[i].x, M);
        fac[i * 16 + r] = f;
        L += x[i].y * f;
      }
    if (out) {
      const float inv = L > 0.f ? 1.f / L : 0.f;
      for (int i = 0; i < n; ++i) fac[i * 16 + r] *= inv;
    } else {
      ml_dst[r] = make_float2(M, L);
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < nrows * D / 4; e += blockDim.x) {
    const int r = e / (D / 4), d = (e % (D / 4)) * 4;
    float4 x[kMaxMerge];
#pragma unroll
    for (int i = 0; i < kMaxMerge; ++i)
      if (i < n) x[i] = __ldcg(reinterpret_cast<const float4*>(po + (i * 16 + r) * D + d));
    float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int i = 0; i < kMaxMerge; ++i)
      if (i < n) {
        const float f = fac[i * 16 + r];
        O.x += x[i].x * f; O.y += x[i].y * f; O.z += x[i].z * f; O.w += x[i].w * f;
      }
    if (out) out_store4(*oa, obase + r * D + d, O);
    else *reinterpret_cast<float4*>(po_dst + r * D + d) = O;
  }
  __syncthreads();  // fac is reused by the next merge
}

template <int D, int STAGES>
struct DecodeCfg {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kStageBytes = 2 * Tile<D>::kBytes;
  static constexpr int kMergeBytes = kWarps * 16 * (D + 2) * 4 + kMaxSplits * 16 * 4;
  static constexpr int kSmem = STAGES * kStageBytes > kMergeBytes ? STAGES * kStageBytes : kMergeBytes;
  static_assert(kWarps * 16 == kKeyTile, "each warp takes 16 keys of a tile");
};

// grid.x = T * Hkv * RT units (unit = ((t * Hkv) + g) * RT + rt), grid.y = P >= the most splits any unit takes,
// block 128 threads. Split rule (mink: fewest keys a split takes, a multiple of kKeyTile; pfix: most splits): it
// depends on the unit's length alone, not on the grid, so a sequence decoded alone or in a batch of any size
// gets the same arithmetic bit for bit.
template <int D, int STAGES>
__global__ void __launch_bounds__(128) decode_kernel(Args a, int RT, int mink, int pfix) {
  using Cfg = DecodeCfg<D, STAGES>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int unit = blockIdx.x, split = blockIdx.y, P = gridDim.y;
  const int rt = unit % RT, g = (unit / RT) % a.Hkv, t = unit / RT / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const QueryKeys qk = query_keys(a, t);
  const int len = qk.len;

  // The split rule: at most pfix splits of at least mink keys, each a multiple of the tile; `live` of them are
  // non-empty (live <= P: the host sizes the grid for the longest length).
  int live = 0, chunk = 0;
  if (len > 0) {
    const int want = min(pfix, (len + mink - 1) / mink);
    chunk = ((len + want - 1) / want + kKeyTile - 1) / kKeyTile * kKeyTile;
    live = (len + chunk - 1) / chunk;
  }
  const int h0 = g * per + rt * 16;  // query head of row 0 of this unit
  const int nrows = min(16, per - rt * 16);
  if (live == 0) {  // nothing visible: zeros (written once, by split 0)
    if (split == 0)
      for (int i = threadIdx.x; i < nrows * D; i += blockDim.x)
        out_store1(a, (static_cast<int64_t>(t) * a.Hq + h0 + i / D) * D + i % D, 0.f);
    return;
  }
  if (split >= live) return;
  const int kb = split * chunk, ke = min(len, kb + chunk);
  const int ntiles = (ke - kb + kKeyTile - 1) / kKeyTile;

  // Q rows gq and gq + 8 of this warp (every warp holds all 16 rows: they split the keys, not the rows).
  uint32_t qa[D / 16][4];
  {
    const float* qb = a.q + (static_cast<int64_t>(t) * a.Hq + h0) * D;
    load_q_frags<D>(qa, gq < nrows ? qb + gq * D : nullptr, gq + 8 < nrows ? qb + (gq + 8) * D : nullptr, a.qscale);
  }
  const uint32_t sbase = smem_addr(smem);
  auto ks_of = [&](int st) { return sbase + st * Cfg::kStageBytes; };
  auto vs_of = [&](int st) { return sbase + st * Cfg::kStageBytes + Tile<D>::kBytes; };

#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles) load_kv_tile<D, Cfg::kThreads>(a, qk.tb, g, kb + st * kKeyTile, ke, ks_of(st), vs_of(st));
    cp_async_commit();
  }

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int j = 0; j < ntiles; ++j) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();  // tile j is visible to all; everyone is done with tile j - 1 (its buffer is refilled next)
    {
      const int nj = j + STAGES - 1;
      if (nj < ntiles) load_kv_tile<D, Cfg::kThreads>(a, qk.tb, g, kb + nj * kKeyTile, ke, ks_of(nj % STAGES), vs_of(nj % STAGES));
      cp_async_commit();
    }
    const int key0 = kb + j * kKeyTile + warp * 16;  // this warp's first key
    if (key0 < ke) {
      float s[2][4];
      qk_tile<D, 2>(s, qa, ks_of(j % STAGES), warp * 16);
      if (key0 + 16 > ke) {
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + n * 8 + 2 * tq + (e & 1) >= ke) s[n][e] = -INFINITY;
      }
      softmax_update<D, 2>(s, m, l, o);
      pv_tile<D, 2>(o, s, vs_of(j % STAGES), warp * 16);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the merge area

  // Warp states -> shared: wm/wl [4][16], wo [4][16][D].
  float* wm = reinterpret_cast<float*>(smem);
  float* wl = wm + Cfg::kWarps * 16;
  float* wo = wl + Cfg::kWarps * 16;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    const int r = gq + 8 * i;
    if (tq == 0) {
      wm[warp * 16 + r] = m[i];
      wl[warp * 16 + r] = l[i];
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(wo + (warp * 16 + r) * D + n * 8 + 2 * tq) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
  }
  __syncthreads();

  // Block state per (row, dim), 4 consecutive dims a thread: max M, sum L, output sum O.
  const int units = gridDim.x;
  const DecodeWork w = decode_work(a.work, a.work_bytes, units, P, D);
  const int gi = split / kMergeFan, ngroups = (live + kMergeFan - 1) / kMergeFan;
  for (int i = threadIdx.x; i < 16 * D / 4; i += blockDim.x) {
    const int r = i / (D / 4), d = (i % (D / 4)) * 4;
    float M = -INFINITY;
#pragma unroll
    for (int w8 = 0; w8 < Cfg::kWarps; ++w8) M = fmaxf(M, wm[w8 * 16 + r]);
    float L = 0.f;
    float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w8 = 0; w8 < Cfg::kWarps; ++w8) {
      const float f = merge_scale(wm[w8 * 16 + r], M);
      const float4 x = *reinterpret_cast<const float4*>(wo + (w8 * 16 + r) * D + d);
      L += wl[w8 * 16 + r] * f;
      O.x += x.x * f; O.y += x.y * f; O.z += x.z * f; O.w += x.w * f;
    }
    if (live == 1) {
      if (r < nrows) {
        const float inv = L > 0.f ? 1.f / L : 0.f;
        out_store4(a, (static_cast<int64_t>(t) * a.Hq + h0 + r) * D + d, make_float4(O.x * inv, O.y * inv, O.z * inv, O.w * inv));
      }
    } else {
      const size_t slot = (static_cast<size_t>(unit) * P + split) * 16 + r;
      *reinterpret_cast<float4*>(w.po1 + slot * D + d) = O;
      if (d == 0) w.ml1[slot] = make_float2(M, L);
    }
  }
  if (live == 1) return;

  // Split-K merge as a two-level tree of tickets: the last split of each group of kMergeFan to arrive merges its
  // group (at most kMergeFan partial states read back: the merge stays short), and the last group to finish
  // merges the groups. Each last arrival resets its ticket: the workspace is zeros again after the launch.
  __shared__ int s_last;
  float* fac = wo + Cfg::kWarps * 16 * D;  // merge factors [n][16]
  const int64_t obase0 = (static_cast<int64_t>(t) * a.Hq + h0) * D;
  unsigned* tickets = w.tickets + static_cast<size_t>(unit) * decode_tickets_per_unit(P);
  __threadfence();  // this block's partial state is visible device-wide before its ticket is taken
  __syncthreads();
  const int gsize = min(kMergeFan, live - gi * kMergeFan);
  if (threadIdx.x == 0) s_last = atomicAdd(&tickets[1 + gi], 1u) == static_cast<unsigned>(gsize - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const size_t g1 = static_cast<size_t>(unit) * P + gi * kMergeFan;  // first partial of the group
  if (ngroups == 1) {
    merge_states<D>(w.ml1 + g1 * 16, w.po1 + g1 * 16 * D, gsize, fac, nrows, &a, obase0, nullptr, nullptr);
    if (threadIdx.x == 0) tickets[1 + gi] = 0u;
    return;
  }
  const size_t g2 = static_cast<size_t>(unit) * decode_groups(P) + gi;
  merge_states<D>(w.ml1 + g1 * 16, w.po1 + g1 * 16 * D, gsize, fac, 16, nullptr, 0, w.ml2 + g2 * 16, w.po2 + g2 * 16 * D);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    tickets[1 + gi] = 0u;
    s_last = atomicAdd(&tickets[0], 1u) == static_cast<unsigned>(ngroups - 1);
  }
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const size_t u2 = static_cast<size_t>(unit) * decode_groups(P);
  merge_states<D>(w.ml2 + u2 * 16, w.po2 + u2 * 16 * D, ngroups, fac, nrows, &a, obase0, nullptr, nullptr);
  if (threadIdx.x == 0) tickets[0] = 0u;
}

// ----------------------------------------------------------------------------------------------- decode, version 2
// decode2_kernel + decode_merge_kernel (issue 12): the same streaming of a split's K/V tiles as decode_kernel, but
// no ticket tree: every split of a unit that splits writes its partial state (max, sum, unnormalized output) and a
// second kernel, chained by programmatic dependent launch (PDL, sm_90), merges them with one block per (unit, row)
// and the splits spread over the block's threads (run5 on the H200: B = 1 at 8K spent most of its 18.9 us in the
// last-arriving block merging up to 8 partials of 16 x 128 f32 per level, serially, two levels).
//   - split rule: the same function of the length alone (decode_live), so batch == solo bit for bit; splits as short
//     as 64 keys so that B = 1 covers the SMs;
//   - partials f32 (PB = false) or bf16 (PB = true: half the merge traffic, which at B = 32 and 128-key splits is
//     ~25 % of the cache bytes in f32), same layout as decode_kernel's level-1 states (after the ticket area, which
//     this version never touches: a harness or an op may switch between versions on one workspace);
//   - the merge sums the splits in a fixed order (slice s of the block takes splits s, s + S, ...; the slices are
//     added in order s = 0..S-1), so the result depends on the length alone.
// Both kernels start with griddepcontrol.wait (a no-op without PDL) before any load or store of shared data, and
// trigger their dependents right after it: the merge blocks (and after the merge the next kernel, e.g. the o GEMV
// whose weight loads precede its own wait) are resident while the splits stream.
__device__ __forceinline__ void attn_pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void attn_pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Splits of a unit of length len (> 0): chunk keys each (a multiple of the tile), `live` of them. Length alone.
struct SplitRule {
  int live, chunk;
};
__host__ __device__ __forceinline__ SplitRule decode_live(int len, int mink, int pfix) {
  SplitRule r{0, 0};
  if (len <= 0) return r;
  const int want = min(pfix, (len + mink - 1) / mink);
  r.chunk = ((len + want - 1) / want + kKeyTile - 1) / kKeyTile * kKeyTile;
  r.live = (len + r.chunk - 1) / r.chunk;
  return r;
}

// Partial states of decode2 in the workspace: ml [units][P][16] float2, then po [units][P][16][D] (f32, or bf16
// when PB), both after the ticket area (decode_work_bytes(units, P, D) is enough for either).
__device__ __forceinline__ float2* decode2_ml(void* base, size_t bytes) {
  return reinterpret_cast<float2*>(static_cast<unsigned char*>(base) + decode_ticket_cap(bytes));
}
__device__ __forceinline__ void* decode2_po(void* base, size_t bytes, int units, int P) {
  return decode2_ml(base, bytes) + static_cast<size_t>(units) * P * 16;
}

// MODE: 0 = the kernel, 1 = probe "no work": same grid, shared memory and PDL, returns after the trigger (the launch
// floor of this grid), 2 = probe "loads only": streams the tiles, no arithmetic, no output (harness only).
template <int D, int STAGES, bool PB, int MODE = 0>
__global__ void __launch_bounds__(128) decode2_kernel(Args a, int RT, int mink, int pfix) {
  using Cfg = DecodeCfg<D, STAGES>;
  extern __shared__ __align__(16) unsigned char smem[];
  attn_pdl_wait();
  attn_pdl_trigger();
  if (MODE == 1) return;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int unit = blockIdx.x, split = blockIdx.y, P = gridDim.y;
  const int rt = unit % RT, g = (unit / RT) % a.Hkv, t = unit / RT / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const QueryKeys qk = query_keys(a, t);
  const SplitRule sr = decode_live(qk.len, mink, pfix);
  const int live = sr.live, chunk = sr.chunk;
  const int h0 = g * per + rt * 16;
  const int nrows = min(16, per - rt * 16);
  if (live == 0) {
    if (split == 0 && MODE == 0)
      for (int i = threadIdx.x; i < nrows * D; i += blockDim.x)
        out_store1(a, (static_cast<int64_t>(t) * a.Hq + h0 + i / D) * D + i % D, 0.f);
    return;
  }
  if (split >= live) return;
  const int kb = split * chunk, ke = min(qk.len, kb + chunk);
  const int ntiles = (ke - kb + kKeyTile - 1) / kKeyTile;
  const uint32_t sbase = smem_addr(smem);
  auto ks_of = [&](int st) { return sbase + st * Cfg::kStageBytes; };
  auto vs_of = [&](int st) { return sbase + st * Cfg::kStageBytes + Tile<D>::kBytes; };
  // The first tiles' loads go out before the Q fragments are built (Q is 16 rows of f32 from L2: its latency
  // overlaps the K/V round trip instead of preceding it).
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles) load_kv_tile<D, Cfg::kThreads>(a, qk.tb, g, kb + st * kKeyTile, ke, ks_of(st), vs_of(st));
    cp_async_commit();
  }
  if (MODE == 2) {
    for (int j = 0; j < ntiles; ++j) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();
      const int nj = j + STAGES - 1;
      if (nj < ntiles) load_kv_tile<D, Cfg::kThreads>(a, qk.tb, g, kb + nj * kKeyTile, ke, ks_of(nj % STAGES), vs_of(nj % STAGES));
      cp_async_commit();
    }
    cp_async_wait<0>();
    return;
  }
  uint32_t qa[D / 16][4];
  {
    const float* qb = a.q + (static_cast<int64_t>(t) * a.Hq + h0) * D;
    load_q_frags<D>(qa, gq < nrows ? qb + gq * D : nullptr, gq + 8 < nrows ? qb + (gq + 8) * D : nullptr, a.qscale);
  }
  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int j = 0; j < ntiles; ++j) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nj = j + STAGES - 1;
      if (nj < ntiles) load_kv_tile<D, Cfg::kThreads>(a, qk.tb, g, kb + nj * kKeyTile, ke, ks_of(nj % STAGES), vs_of(nj % STAGES));
      cp_async_commit();
    }
    const int key0 = kb + j * kKeyTile + warp * 16;
    if (key0 < ke) {
      float s[2][4];
      qk_tile<D, 2>(s, qa, ks_of(j % STAGES), warp * 16);
      if (key0 + 16 > ke) {
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + n * 8 + 2 * tq + (e & 1) >= ke) s[n][e] = -INFINITY;
      }
      softmax_update<D, 2>(s, m, l, o);
      pv_tile<D, 2>(o, s, vs_of(j % STAGES), warp * 16);
    }
  }
  cp_async_wait<0>();
  __syncthreads();

  float* wm = reinterpret_cast<float*>(smem);
  float* wl = wm + Cfg::kWarps * 16;
  float* wo = wl + Cfg::kWarps * 16;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    const int r = gq + 8 * i;
    if (tq == 0) {
      wm[warp * 16 + r] = m[i];
      wl[warp * 16 + r] = l[i];
    }
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<float2*>(wo + (warp * 16 + r) * D + n * 8 + 2 * tq) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
  }
  __syncthreads();
  const int units = gridDim.x;
  float2* mlw = decode2_ml(a.work, a.work_bytes);
  void* pow_ = decode2_po(a.work, a.work_bytes, units, P);
  for (int i = threadIdx.x; i < 16 * D / 4; i += blockDim.x) {
    const int r = i / (D / 4), d = (i % (D / 4)) * 4;
    if (r >= nrows) continue;
    float M = -INFINITY;
#pragma unroll
    for (int w8 = 0; w8 < Cfg::kWarps; ++w8) M = fmaxf(M, wm[w8 * 16 + r]);
    float L = 0.f;
    float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w8 = 0; w8 < Cfg::kWarps; ++w8) {
      const float f = merge_scale(wm[w8 * 16 + r], M);
      const float4 x = *reinterpret_cast<const float4*>(wo + (w8 * 16 + r) * D + d);
      L += wl[w8 * 16 + r] * f;
      O.x += x.x * f; O.y += x.y * f; O.z += x.z * f; O.w += x.w * f;
    }
    if (live == 1) {
      const float inv = L > 0.f ? 1.f / L : 0.f;
      out_store4(a, (static_cast<int64_t>(t) * a.Hq + h0 + r) * D + d, make_float4(O.x * inv, O.y * inv, O.z * inv, O.w * inv));
    } else {
      const size_t slot = (static_cast<size_t>(unit) * P + split) * 16 + r;
      if (PB) {
        const float sc = L > 0.f ? 1.f / L : 0.f;  // bf16 partials hold O / L (bounded by max |v|), ml holds (M, L)
        *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(pow_) + slot * D + d) =
            make_uint2(pack_bf16(O.x * sc, O.y * sc), pack_bf16(O.z * sc, O.w * sc));
      } else {
        *reinterpret_cast<float4*>(static_cast<float*>(pow_) + slot * D + d) = O;
      }
      if (d == 0) mlw[slot] = make_float2(M, L);
    }
  }
}

// decode2m_kernel: decode2_kernel with several consecutive splits of a unit in one block (spb of them; grid.y =
// ceil(P / spb)), streamed as one run of tiles: the cp.async pipeline runs on across split boundaries, and at each
// boundary the split's state is combined over the warps in a shared-memory area of its own (the pipeline buffers
// keep the next tiles in flight) and written as decode2_kernel writes it. Each split's tiles, warp assignment, masking
// and combine are decode2_kernel's, so its partial (or output) is the same bit for bit whatever spb: spb may follow
// the batch (few long-streaming blocks at large B, one split a block at B = 1) without changing any result.
template <int D, int STAGES>
struct Decode2mCfg {
  static constexpr int kStageBytes = 2 * Tile<D>::kBytes;
  static constexpr int kPipe = STAGES * kStageBytes;
  static constexpr int kComb = 4 * 16 * (D + 2) * 4;  // wm, wl [4][16], wo [4][16][D] f32
  static constexpr int kSmem = kPipe + kComb;
};
template <int D, int STAGES, bool PB>
__global__ void __launch_bounds__(128) decode2m_kernel(Args a, int RT, int mink, int pfix, int P, int spb) {
  using Cfg = Decode2mCfg<D, STAGES>;
  extern __shared__ __align__(16) unsigned char smem[];
  attn_pdl_wait();
  attn_pdl_trigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int unit = blockIdx.x;
  const int rt = unit % RT, g = (unit / RT) % a.Hkv, t = unit / RT / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const QueryKeys qk = query_keys(a, t);
  const SplitRule sr = decode_live(qk.len, mink, pfix);
  const int live = sr.live, chunk = sr.chunk;
  const int h0 = g * per + rt * 16;
  const int nrows = min(16, per - rt * 16);
  if (live == 0) {
    if (blockIdx.y == 0)
      for (int i = threadIdx.x; i < nrows * D; i += blockDim.x)
        out_store1(a, (static_cast<int64_t>(t) * a.Hq + h0 + i / D) * D + i % D, 0.f);
    return;
  }
  const int s0 = blockIdx.y * spb;
  if (s0 >= live) return;
  const int s1 = min(live, s0 + spb);
  const int kb = s0 * chunk, ke = min(qk.len, s1 * chunk);
  const int ntiles = (ke - kb + kKeyTile - 1) / kKeyTile;
  const int tps = chunk / kKeyTile;  // tiles a split (the last split of the unit may have fewer)
  const uint32_t sbase = smem_addr(smem);
  auto ks_of = [&](int st) { return sbase + st * Cfg::kStageBytes; };
  auto vs_of = [&](int st) { return sbase + st * Cfg::kStageBytes + Tile<D>::kBytes; };
#pragma unroll
  for (int st = 0; st < STAGES - 1; ++st) {
    if (st < ntiles) load_kv_tile<D, 128>(a, qk.tb, g, kb + st * kKeyTile, ke, ks_of(st), vs_of(st));
    cp_async_commit();
  }
  uint32_t qa[D / 16][4];
  {
    const float* qb = a.q + (static_cast<int64_t>(t) * a.Hq + h0) * D;
    load_q_frags<D>(qa, gq < nrows ? qb + gq * D : nullptr, gq + 8 < nrows ? qb + (gq + 8) * D : nullptr, a.qscale);
  }
  float* wm = reinterpret_cast<float*>(smem + Cfg::kPipe);
  float* wl = wm + 4 * 16;
  float* wo = wl + 4 * 16;
  float2* mlw = decode2_ml(a.work, a.work_bytes);
  void* pow_ = decode2_po(a.work, a.work_bytes, gridDim.x, P);
  float o[D / 8][4];
  float m[2], l[2];
  auto reset = [&]() {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
  };
  reset();
  for (int j = 0; j < ntiles; ++j) {
    cp_async_wait<STAGES - 2>();
    __syncthreads();
    {
      const int nj = j + STAGES - 1;
      if (nj < ntiles) load_kv_tile<D, 128>(a, qk.tb, g, kb + nj * kKeyTile, ke, ks_of(nj % STAGES), vs_of(nj % STAGES));
      cp_async_commit();
    }
    const int split = s0 + j / tps;
    const int send = min(qk.len, (split + 1) * chunk);  // the split's end: its masking is decode2_kernel's
    const int key0 = kb + j * kKeyTile + warp * 16;
    if (key0 < send) {
      float s[2][4];
      qk_tile<D, 2>(s, qa, ks_of(j % STAGES), warp * 16);
      if (key0 + 16 > send) {
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (key0 + n * 8 + 2 * tq + (e & 1) >= send) s[n][e] = -INFINITY;
      }
      softmax_update<D, 2>(s, m, l, o);
      pv_tile<D, 2>(o, s, vs_of(j % STAGES), warp * 16);
    }
    if ((j + 1) % tps != 0 && j + 1 < ntiles) continue;
    // ---- the end of split `split`: combine the warps (decode2_kernel's expressions) and write its state
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
      const int r = gq + 8 * i;
      if (tq == 0) {
        wm[warp * 16 + r] = m[i];
        wl[warp * 16 + r] = l[i];
      }
#pragma unroll
      for (int n = 0; n < D / 8; ++n)
        *reinterpret_cast<float2*>(wo + (warp * 16 + r) * D + n * 8 + 2 * tq) = make_float2(o[n][2 * i], o[n][2 * i + 1]);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * D / 4; i += blockDim.x) {
      const int r = i / (D / 4), d = (i % (D / 4)) * 4;
      if (r >= nrows) continue;
      float M = -INFINITY;
#pragma unroll
      for (int w8 = 0; w8 < 4; ++w8) M = fmaxf(M, wm[w8 * 16 + r]);
      float L = 0.f;
      float4 O = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int w8 = 0; w8 < 4; ++w8) {
        const float f = merge_scale(wm[w8 * 16 + r], M);
        const float4 x = *reinterpret_cast<const float4*>(wo + (w8 * 16 + r) * D + d);
        L += wl[w8 * 16 + r] * f;
        O.x += x.x * f; O.y += x.y * f; O.z += x.z * f; O.w += x.w * f;
      }
      if (live == 1) {
        const float inv = L > 0.f ? 1.f / L : 0.f;
        out_store4(a, (static_cast<int64_t>(t) * a.Hq + h0 + r) * D + d, make_float4(O.x * inv, O.y * inv, O.z * inv, O.w * inv));
      } else {
        const size_t slot = (static_cast<size_t>(unit) * P + split) * 16 + r;
        if (PB) {
          const float sc = L > 0.f ? 1.f / L : 0.f;
          *reinterpret_cast<uint2*>(static_cast<__nv_bfloat16*>(pow_) + slot * D + d) =
              make_uint2(pack_bf16(O.x * sc, O.y * sc), pack_bf16(O.z * sc, O.w * sc));
        } else {
          *reinterpret_cast<float4*>(static_cast<float*>(pow_) + slot * D + d) = O;
        }
        if (d == 0) mlw[slot] = make_float2(M, L);
      }
    }
    reset();
    // The combine area is rewritten at the next boundary only after the next tile's __syncthreads (>= 1 tile later).
  }
  cp_async_wait<0>();
}

// Merge of decode2's partials: grid (units, 16 rows), 256 threads = S slices of D/4 threads (4 dims a thread);
// slice s adds splits s, s + S, ... (every load of a slice issued before the first use, 8 at a time), the slices
// are added in order through shared memory. Units that did not split (live <= 1) were finished by decode2_kernel.
constexpr int kMergeThreads = 256;
template <int D, bool PB>
__global__ void __launch_bounds__(kMergeThreads) decode_merge_kernel(Args a, int RT, int mink, int pfix, int P) {
  constexpr int NL = D / 4, S = kMergeThreads / NL;
  __shared__ float s_ml[2];
  __shared__ __align__(16) float4 s_red[S][NL];
  attn_pdl_wait();
  attn_pdl_trigger();
  const int unit = blockIdx.x, r = blockIdx.y;
  const int rt = unit % RT, g = (unit / RT) % a.Hkv, t = unit / RT / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const int nrows = min(16, per - rt * 16);
  if (r >= nrows) return;
  const QueryKeys qk = query_keys(a, t);
  const int live = decode_live(qk.len, mink, pfix).live;
  if (live <= 1) return;
  const int units = gridDim.x;
  const float2* ml = decode2_ml(a.work, a.work_bytes) + static_cast<size_t>(unit) * P * 16 + r;  // split i: ml[i * 16]
  const size_t pbase = (static_cast<size_t>(unit) * P * 16 + r) * D;                             // split i: + i * 16 * D
  const int s = threadIdx.x / NL, ln = threadIdx.x % NL;
  // Warp 0: the row's max and sum over every split (lane-strided, then a fixed shuffle tree).
  if (threadIdx.x < 32) {
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < live; i += 32) mx = fmaxf(mx, __ldcg(&ml[i * 16]).x);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float L = 0.f;
    for (int i = threadIdx.x; i < live; i += 32) {
      const float2 x = __ldcg(&ml[i * 16]);
      L += x.y * merge_scale(x.x, mx);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (threadIdx.x == 0) {
      s_ml[0] = mx;
      s_ml[1] = L > 0.f ? 1.f / L : 0.f;
    }
  }
  // The first kU partials of this thread's slice are loaded before the max is known (they do not depend on it), so
  // the max's L2 round trip and theirs overlap; later ones (live > S * kU) follow kU at a time.
  constexpr int kU = 8;
  const float* pof = static_cast<const float*>(decode2_po(a.work, a.work_bytes, units, P));
  const __nv_bfloat16* pob = static_cast<const __nv_bfloat16*>(decode2_po(a.work, a.work_bytes, units, P));
  float4 x[kU];
  float2 mi[kU];
  auto load = [&](int i0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int i = i0 + u * S;
      if (i < live) {
        mi[u] = __ldcg(&ml[i * 16]);
        const size_t e = pbase + static_cast<size_t>(i) * 16 * D + ln * 4;
        if (PB) {
          const uint2 b = __ldcg(reinterpret_cast<const uint2*>(pob + e));
          x[u] = make_float4(__uint_as_float(b.x << 16), __uint_as_float(b.x & 0xffff0000u), __uint_as_float(b.y << 16),
                             __uint_as_float(b.y & 0xffff0000u));
        } else {
          x[u] = __ldcg(reinterpret_cast<const float4*>(pof + e));
        }
      }
    }
  };
  load(s);
  __syncthreads();  // s_ml written
  const float M = s_ml[0];
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  for (int i0 = s;;) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int i = i0 + u * S;
      if (i < live) {
        // f32 partials are unnormalized (weight exp2(m - M)); bf16 ones hold O / l (weight l exp2(m - M)).
        const float f = PB ? mi[u].y * merge_scale(mi[u].x, M) : merge_scale(mi[u].x, M);
        acc.x += x[u].x * f; acc.y += x[u].y * f; acc.z += x[u].z * f; acc.w += x[u].w * f;
      }
    }
    i0 += S * kU;
    if (i0 >= live) break;
    load(i0);
  }
  s_red[s][ln] = acc;
  __syncthreads();
  if (s == 0) {
    float4 O = s_red[0][ln];
#pragma unroll
    for (int k = 1; k < S; ++k) {
      const float4 y = s_red[k][ln];
      O.x += y.x; O.y += y.y; O.z += y.z; O.w += y.w;
    }
    const float inv = s_ml[1];
    out_store4(a, (static_cast<int64_t>(t) * a.Hq + g * per + rt * 16 + r) * D + ln * 4,
               make_float4(O.x * inv, O.y * inv, O.z * inv, O.w * inv));
  }
}

// ----------------------------------------------------------------------------------------------- prefill
template <int D, int NW>
struct PrefillCfg {
  static constexpr int kThreads = NW * 32;
  static constexpr int kRows = NW * 16;
  static constexpr int kStageBytes = 2 * Tile<D>::kBytes;
  static constexpr int kSmem = 2 * kStageBytes;
};

// grid.x = ceil(T * per / kRows) row tiles (heaviest first), grid.y = Hkv. Row r of the group: token r / per,
// query head g * per + r % per.
template <int D, int NW>
__global__ void __launch_bounds__(NW * 32, 1) prefill_kernel(Args a) {
  using Cfg = PrefillCfg<D, NW>;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_first, s_kmax;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int g = blockIdx.y;
  const int per = a.Hq / a.Hkv;
  const int64_t nrows_all = static_cast<int64_t>(a.T) * per;
  const int64_t row0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * Cfg::kRows;  // long rows first

  // This thread's two rows (warp rows gq and gq + 8).
  int rloc[2], rseq[2], rpos[2];
  bool pending[2];
  const float* qrow[2];
  int64_t orow[2];  // element index of the row's output, -1: no row
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    rloc[i] = warp * 16 + gq + 8 * i;
    const int64_t r = row0 + rloc[i];
    qrow[i] = nullptr;
    orow[i] = -1;
    rseq[i] = -1;
    rpos[i] = -1;
    pending[i] = false;
    if (r < nrows_all) {
      const int tok = static_cast<int>(r / per), h = g * per + static_cast<int>(r % per);
      qrow[i] = a.q + (static_cast<int64_t>(tok) * a.Hq + h) * D;
      orow[i] = (static_cast<int64_t>(tok) * a.Hq + h) * D;
      const QueryKeys qk = query_keys(a, tok);
      if (qk.len > 0) {
        rseq[i] = a.seq ? a.seq[tok] : 0;
        rpos[i] = qk.len - 1;  // last visible position (clamped)
        pending[i] = true;
      }
    }
  }
  uint32_t qa[D / 16][4];
  load_q_frags<D>(qa, qrow[0], qrow[1], a.qscale);

  float o[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  const uint32_t sbase = smem_addr(smem);
  auto ks_of = [&](int st) { return sbase + st * Cfg::kStageBytes; };
  auto vs_of = [&](int st) { return sbase + st * Cfg::kStageBytes + Tile<D>::kBytes; };

  // One pass per sequence present among the rows (one pass for a single sequence).
  for (;;) {
    __syncthreads();  // the previous pass's smem reads and s_* reads are done
    if (threadIdx.x == 0) {
      s_first = 0x7fffffff;
      s_kmax = -1;
    }
    __syncthreads();
    if (tq == 0)
#pragma unroll
      for (int i = 0; i < 2; ++i)
        if (pending[i]) atomicMin(&s_first, rloc[i]);
    __syncthreads();
    const int first = s_first;
    if (first == 0x7fffffff) break;
    int sq;
    const int32_t* tb = nullptr;
    {
      const int tok = static_cast<int>((row0 + first) / per);
      sq = a.seq ? a.seq[tok] : 0;
      if (a.table) tb = a.table + static_cast<int64_t>(sq) * a.NB;
    }
    bool act[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) act[i] = pending[i] && rseq[i] == sq;
    if (tq == 0)
#pragma unroll
      for (int i = 0; i < 2; ++i)
        if (act[i]) atomicMax(&s_kmax, rpos[i]);
    __syncthreads();
    const int kend = s_kmax + 1;  // keys 0 .. kend-1 of sequence sq
    const int ntiles = (kend + kKeyTile - 1) / kKeyTile;
    // Per warp: tiles below wfull need no mask (every row active and sees the whole tile); tiles from wmax on
    // are invisible to every row of the warp.
    const int vmin = min(act[0] ? rpos[0] : -1, act[1] ? rpos[1] : -1);
    const int vmax = max(act[0] ? rpos[0] : -1, act[1] ? rpos[1] : -1);
    const int wfull = __reduce_min_sync(0xffffffffu, vmin) + 1;   // keys < wfull are visible to all rows
    const int wmax = __reduce_max_sync(0xffffffffu, vmax) + 1;    // keys >= wmax are visible to none

    load_kv_tile<D, Cfg::kThreads>(a, tb, g, 0, kend, ks_of(0), vs_of(0));
    cp_async_commit();
    for (int j = 0; j < ntiles; ++j) {
      if (j + 1 < ntiles) load_kv_tile<D, Cfg::kThreads>(a, tb, g, (j + 1) * kKeyTile, kend, ks_of((j + 1) & 1), vs_of((j + 1) & 1));
      cp_async_commit();
      cp_async_wait<1>();
      __syncthreads();
      const int k0 = j * kKeyTile;
      if (k0 < wmax) {
        float s[8][4];
        qk_tile<D, 8>(s, qa, ks_of(j & 1), 0);
        if (k0 + kKeyTile > wfull) {
#pragma unroll
          for (int n = 0; n < 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int key = k0 + n * 8 + 2 * tq + (e & 1);
              const int i = e >> 1;
              if (!act[i] || key > rpos[i]) s[n][e] = -INFINITY;
            }
        }
        softmax_update<D, 8>(s, m, l, o);
        pv_tile<D, 8>(o, s, vs_of(j & 1), 0);
      }
      __syncthreads();  // the buffer of tile j is refilled by the next iteration's load
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) pending[i] = pending[i] && !act[i];
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    if (orow[i] < 0) continue;
    const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) out_store2(a, orow[i] + n * 8 + 2 * tq, o[n][2 * i] * inv, o[n][2 * i + 1] * inv);
  }
}

// ----------------------------------------------------------------------------------------------- prefill, 32 rows a warp
// prefill2_kernel: the same flash attention with two m16 row tiles per warp (32 rows), so that every K and V
// fragment read from shared memory (ldmatrix) feeds two mma instead of one. Why: on the H200 (run2) the 16-row kernel
// reached 248 TFLOP/s at T = 32K; a 16-row warp reads 256 B of shared memory per m16n8k16 mma, twice what 128 B/clk
// of shared memory bandwidth sustains at one mma per clock per SM, so it is bound by ldmatrix, not by the tensor
// cores. Keys go KS at a time through the 64-key tile (S is KS/8 x 4 registers per row tile, so that the 32 rows' O
// (128 f32) and Q (64 u32) stay in registers); the O rescale is skipped when no row's max moved (exact: the factor
// would be 1). Blocks are ordered heaviest row tile first, the KV groups interleaved (grid.x = tiles * Hkv).
template <int D, int NW, int KS, int STAGES>
struct Prefill2Cfg {
  static constexpr int kThreads = NW * 32;
  static constexpr int kRows = NW * 32;
  static constexpr int kStageBytes = 2 * Tile<D>::kBytes;
  static constexpr int kSmem = STAGES * kStageBytes;
  static_assert(KS % 16 == 0 && kKeyTile % KS == 0 && STAGES >= 2, "keys per step");
};

// S[mt][16 x 8*NS] = Q[mt] K^T for keys kbase .. kbase + 8*NS - 1 of the tile at ks (both row tiles share each
// K fragment; the fragment order is qk_tile's).
template <int D, int NS>
__device__ __forceinline__ void qk_tile2(float (&s)[2][NS][4], const uint32_t (&qa)[2][D / 16][4], uint32_t ks, int kbase) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int n = 0; n < NS; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
  const int krow = kbase + (lane & 7) + ((lane >> 4) << 3);
  const int kcol = ((lane >> 3) & 1) * 8;
#pragma unroll
  for (int kd = 0; kd < D / 16; ++kd) {
#pragma unroll
    for (int np = 0; np < NS / 2; ++np) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4(b0, b1, b2, b3, ks + static_cast<uint32_t>(((krow + np * 16) * Tile<D>::kLd + kd * 16 + kcol) * 2));
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(s[mt][2 * np], qa[mt][kd], b0, b1);
        mma_bf16(s[mt][2 * np + 1], qa[mt][kd], b2, b3);
      }
    }
  }
}

// O[mt] += P[mt] V for keys kbase .. kbase + 8*NS - 1 of the tile at vs (both row tiles share each V fragment).
template <int D, int NS>
__device__ __forceinline__ void pv_tile2(float (&o)[2][D / 8][4], const float (&p)[2][NS][4], uint32_t vs, int kbase) {
  const int lane = threadIdx.x & 31;
  const int vrow = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int vcol = (lane >> 4) * 8;
#pragma unroll
  for (int kk = 0; kk < NS / 2; ++kk) {
    uint32_t pa[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      pa[mt][0] = pack_bf16(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      pa[mt][1] = pack_bf16(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      pa[mt][2] = pack_bf16(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      pa[mt][3] = pack_bf16(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dn = 0; dn < D / 16; ++dn) {
      uint32_t b0, b1, b2, b3;
      ldsm_x4_t(b0, b1, b2, b3,
                vs + static_cast<uint32_t>(((kbase + kk * 16 + vrow) * Tile<D>::kLd + dn * 16 + vcol) * 2));
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        mma_bf16(o[mt][2 * dn], pa[mt], b0, b1);
        mma_bf16(o[mt][2 * dn + 1], pa[mt], b2, b3);
      }
    }
  }
}

// softmax_update, with the O rescale skipped when the warp's row maxima did not move (corr == 1 exactly: the
// product would be unchanged, so the result is the same bit for bit).
template <int D, int NP>
__device__ __forceinline__ void softmax_update_lazy(float (&s)[NP][4], float (&m)[2], float (&l)[2], float (&o)[D / 8][4]) {
  float corr[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NP; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * i], s[n][2 * i + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mn = fmaxf(m[i], mx);
    const float mu = mn == -INFINITY ? 0.f : mn;
    corr[i] = exp2f(m[i] - mu);
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < NP; ++n) {
      s[n][2 * i] = exp2f(s[n][2 * i] - mu);
      s[n][2 * i + 1] = exp2f(s[n][2 * i + 1] - mu);
      sum += s[n][2 * i] + s[n][2 * i + 1];
    }
    l[i] = l[i] * corr[i] + sum;
    m[i] = mn;
  }
  if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      o[n][0] *= corr[0];
      o[n][1] *= corr[0];
      o[n][2] *= corr[1];
      o[n][3] *= corr[1];
    }
  }
}

// grid.x = ceil(T * per / kRows) * Hkv, block kRows rows of one KV group: row r (of the group) is token r / per,
// query head g * per + r % per; this thread's rows are warp * 32 + 16 mt + gq + 8 i (mt, i in {0, 1}).
template <int D, int NW, int KS, int STAGES>
__global__ void __launch_bounds__(NW * 32, NW <= 4 ? 2 : 1) prefill2_kernel(Args a) {
  using Cfg = Prefill2Cfg<D, NW, KS, STAGES>;
  constexpr int NS = KS / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_first, s_kmax;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, gq = lane >> 2, tq = lane & 3;
  const int g = static_cast<int>(blockIdx.x % a.Hkv);
  const int64_t ntile = gridDim.x / a.Hkv;
  const int per = a.Hq / a.Hkv;
  const int64_t nrows_all = static_cast<int64_t>(a.T) * per;
  const int64_t row0 = (ntile - 1 - blockIdx.x / a.Hkv) * Cfg::kRows;  // heaviest first

  // This thread's four rows, index r = 2 mt + i.
  int rloc[4], rseq[4], rpos[4];
  bool pending[4];
  uint32_t qa[2][D / 16][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
    const float* qrow[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int ri = 2 * mt + i;
      rloc[ri] = warp * 32 + mt * 16 + gq + 8 * i;
      const int64_t r = row0 + rloc[ri];
      qrow[i] = nullptr;
      rseq[ri] = -1;
      rpos[ri] = -1;
      pending[ri] = false;
      if (r < nrows_all) {
        const int tok = static_cast<int>(r / per), h = g * per + static_cast<int>(r % per);
        qrow[i] = a.q + (static_cast<int64_t>(tok) * a.Hq + h) * D;
        const QueryKeys qk = query_keys(a, tok);
        if (qk.len > 0) {
          rseq[ri] = a.seq ? a.seq[tok] : 0;
          rpos[ri] = qk.len - 1;  // last visible position (clamped)
          pending[ri] = true;
        }
      }
    }
    load_q_frags<D>(qa[mt], qrow[0], qrow[1], a.qscale);
  }

  float o[2][D / 8][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
  float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}}, l[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
  const uint32_t sbase = smem_addr(smem);
  auto ks_of = [&](int st) { return sbase + st * Cfg::kStageBytes; };
  auto vs_of = [&](int st) { return sbase + st * Cfg::kStageBytes + Tile<D>::kBytes; };

  // One pass per sequence present among the rows (one pass for a single sequence).
  for (;;) {
    __syncthreads();  // the previous pass's smem reads and s_* reads are done
    if (threadIdx.x == 0) {
      s_first = 0x7fffffff;
      s_kmax = -1;
    }
    __syncthreads();
    if (tq == 0)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (pending[r]) atomicMin(&s_first, rloc[r]);
    __syncthreads();
    const int first = s_first;
    if (first == 0x7fffffff) break;
    int sq;
    const int32_t* tb = nullptr;
    {
      const int tok = static_cast<int>((row0 + first) / per);
      sq = a.seq ? a.seq[tok] : 0;
      if (a.table) tb = a.table + static_cast<int64_t>(sq) * a.NB;
    }
    bool act[4];
    int vmin = 0x7fffffff, vmax = -1;
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      act[r] = pending[r] && rseq[r] == sq;
      vmin = min(vmin, act[r] ? rpos[r] : -1);
      vmax = max(vmax, act[r] ? rpos[r] : -1);
    }
    if (tq == 0)
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (act[r]) atomicMax(&s_kmax, rpos[r]);
    __syncthreads();
    const int kend = s_kmax + 1;  // keys 0 .. kend-1 of sequence sq
    const int ntiles = (kend + kKeyTile - 1) / kKeyTile;
    // Per warp: keys below wfull need no mask (every row active and sees them); keys from wmax on are invisible
    // to every row of the warp.
    const int wfull = __reduce_min_sync(0xffffffffu, vmin) + 1;
    const int wmax = __reduce_max_sync(0xffffffffu, vmax) + 1;

#pragma unroll
    for (int st = 0; st < STAGES - 1; ++st) {
      if (st < ntiles) load_kv_tile<D, Cfg::kThreads>(a, tb, g, st * kKeyTile, kend, ks_of(st), vs_of(st));
      cp_async_commit();
    }
    for (int j = 0; j < ntiles; ++j) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // tile j is visible to all; everyone is done with tile j - 1 (its buffer is refilled next)
      {
        const int nj = j + STAGES - 1;
        if (nj < ntiles) load_kv_tile<D, Cfg::kThreads>(a, tb, g, nj * kKeyTile, kend, ks_of(nj % STAGES), vs_of(nj % STAGES));
        cp_async_commit();
      }
      const int k0 = j * kKeyTile;
      const uint32_t ks = ks_of(j % STAGES), vs = vs_of(j % STAGES);
#pragma unroll
      for (int sub = 0; sub < kKeyTile / KS; ++sub) {
        const int kb = k0 + sub * KS;
        if (kb < wmax) {  // warp-uniform
          float s[2][NS][4];
          qk_tile2<D, NS>(s, qa, ks, sub * KS);
          if (kb + KS > wfull) {
#pragma unroll
            for (int mt = 0; mt < 2; ++mt)
#pragma unroll
              for (int n = 0; n < NS; ++n)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                  const int key = kb + n * 8 + 2 * tq + (e & 1);
                  const int r = 2 * mt + (e >> 1);
                  if (!act[r] || key > rpos[r]) s[mt][n][e] = -INFINITY;
                }
          }
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) softmax_update_lazy<D, NS>(s[mt], m[mt], l[mt], o[mt]);
          pv_tile2<D, NS>(o, s, vs, sub * KS);
        }
      }
    }
    cp_async_wait<0>();
#pragma unroll
    for (int r = 0; r < 4; ++r) pending[r] = pending[r] && !act[r];
  }

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float li = l[mt][i];
      li += __shfl_xor_sync(0xffffffffu, li, 1);
      li += __shfl_xor_sync(0xffffffffu, li, 2);
      const int64_t r = row0 + rloc[2 * mt + i];
      if (r >= nrows_all) continue;
      const int tok = static_cast<int>(r / per), h = g * per + static_cast<int>(r % per);
      const int64_t orow = (static_cast<int64_t>(tok) * a.Hq + h) * D;
      const float inv = li > 0.f ? 1.f / li : 0.f;
#pragma unroll
      for (int n = 0; n < D / 8; ++n) out_store2(a, orow + n * 8 + 2 * tq, o[mt][n][2 * i] * inv, o[mt][n][2 * i + 1] * inv);
    }
}

}  // namespace attn
}  // namespace cuda
}  // namespace glm4

// ----------------------------------------------------------------------------------------------- prefill on wgmma
#include "attention_fa3.cuh"  // prefill3_kernel (sm_90a; D 128)

namespace glm4 {
namespace cuda {
namespace attn {

// ----------------------------------------------------------------------------------------------- generic
__device__ __forceinline__ float load_kv(const void* p, int64_t i, bool bf16) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}

// One warp per (token, head); lane owns dims lane, lane + 32, ... (NCH = ceil(D / 32) of them).
template <int NCH>
__global__ void __launch_bounds__(128) generic_kernel(Args a) {
  const int lane = threadIdx.x & 31;
  const int64_t th = static_cast<int64_t>(blockIdx.x) * 4 + (threadIdx.x >> 5);
  if (th >= static_cast<int64_t>(a.T) * a.Hq) return;
  const int t = static_cast<int>(th / a.Hq), h = static_cast<int>(th % a.Hq), D = a.D;
  const int g = h / (a.Hq / a.Hkv);
  const QueryKeys qk = query_keys(a, t);
  float qv[NCH], acc[NCH];
#pragma unroll
  for (int c = 0; c < NCH; ++c) {
    const int d = lane + 32 * c;
    qv[c] = d < D ? a.q[th * D + d] * a.qscale : 0.f;
    acc[c] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  const int64_t rs = static_cast<int64_t>(a.Hkv) * D;
  for (int j = 0; j < qk.len; ++j) {
    const int64_t r = key_row(a, qk.tb, j);
    if (r < 0) continue;
    const int64_t base = r * rs + static_cast<int64_t>(g) * D;
    float dot = 0.f;
#pragma unroll
    for (int c = 0; c < NCH; ++c) {
      const int d = lane + 32 * c;
      if (d < D) dot = fmaf(qv[c], load_kv(a.kc, base + d, a.bf16), dot);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float mn = fmaxf(m, dot);
    const float corr = exp2f(m - mn), p = exp2f(dot - mn);
    l = l * corr + p;
#pragma unroll
    for (int c = 0; c < NCH; ++c) {
      const int d = lane + 32 * c;
      acc[c] = acc[c] * corr + (d < D ? p * load_kv(a.vc, base + d, a.bf16) : 0.f);
    }
    m = mn;
  }
  const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
  for (int c = 0; c < NCH; ++c) {
    const int d = lane + 32 * c;
    if (d < D) out_store1(a, th * D + d, acc[c] * inv);
  }
}

// ----------------------------------------------------------------------------------------------- host side
enum class Kind { Generic, Decode, Prefill };

struct Plan {
  Kind kind = Kind::Generic;
  int rt = 1;          // decode: 16-head tiles per group
  int splits = 1;      // decode: grid.y (most splits per unit)
  int mink = 128;      // decode: fewest keys per split
  int pfix = 64;       // decode: most splits per unit
  int stages = 2;      // decode: pipeline depth
  int dver = 2;        // decode: 1 = decode_kernel (ticket-tree merge), 2 = decode2_kernel + decode_merge_kernel,
                       //   3 = decode2m_kernel (spb splits a block, streamed as one run) + decode_merge_kernel
  int spb = 1;         // decode2m: splits a block (grid.y = ceil(splits / spb))
  bool pbf16 = false;  // decode2: bf16 partial states (else f32)
  bool pdl = false;    // decode2: programmatic dependent launch of both kernels (sm_90)
  int pver = 2;        // prefill: 1 = prefill_kernel (16 rows a warp), 2 = prefill2_kernel (32 rows a warp),
                       // 3 = prefill3_kernel (wgmma, sm_90a, D 128; elsewhere prefill2 with 8 warps runs instead)
  int warps = 4;       // prefill 1, 2: warps per block
  int pks = 16;        // prefill2: keys per softmax step
  int pstages = 2;     // prefill2: pipeline depth
  int fkn = 64;        // prefill3: keys per tile (64 | 128)
  int fst = 4;         // prefill3: pipeline depth (stages of K + V tiles)
  int fpv = 128;       // prefill3: width of the PV wgmma (128: one n128 product; 64: two n64 halves)
  size_t work = 0;     // decode: workspace bytes (0 when it does not split)
};

// Tunable settings of plan_attention (defaults: the H200 measurements in bench/NOTES.md). The op reads overrides
// from the environment (csrc/cuda/attention.cu: GLM4_ATTN_PLAN=old restores the configuration of the first H200 run;
// GLM4_ATTN_DECODE=mink,pfix,stages and GLM4_ATTN_PREFILL=ver,... set each part).
// Prefill default from run9 (H200, scripts/gpu/fa3.sh; bench/NOTES.md): prefill3 (wgmma) with 64-key tiles, 4 stages,
// one n128 PV product: 303 TFLOP/s at T = 8K, 323 at 32K, 315 on a 2048-token chunk after 30720 keys, 246 at 2K
// (prefill2 w8: 252 / 266 / 260 / 212; 128-key tiles 256-274, ping-pong no gain); where prefill3 has no code (not an
// sm_90 device, D != 128) prefill2 with 8 warps runs, run5's default (266 TFLOP/s at 32K). Decode from run5: splits
// of >= 256 keys, <= 64 of them, the pipeline depth by the number of units (plan_attention).
// Decode (dattn, issue 12; H200 run9, scripts/gpu/dattn.sh, bench/NOTES.md "dattn"): up to big_t query rows (the
// rows whose logits the engine keeps equal to their solo decode bit for bit: its GEMV path takes 1..8 rows, wider
// steps go through the tensor-core GEMMs, which do not) take decode version 2, splits of >= 128 keys, <= 64 of them,
// merged by a second kernel (B = 1: 6.8 / 10.3 / 11.9 / 21.0 us at ctx 128 / 2K / 8K / 32K, run5's kernel 7.2 / 14.6
// / 19.1 / 26.3; B = 8: 6.9 / 17.0 / 41.2 / 91.9 vs 7.3 / 17.5 / 43.7 / 99.9). Wider steps keep run5's ticket-tree
// kernel with splits of >= 256 keys (B = 32: 8.7 / 40.4 / 114 / 334 us vs version 2's 7.9 / 50.3 / 135 / 328; B = 64:
// 10.0 / 62 / 207 / 655 vs 9.0 / 91 / 262 / 646: the merge grid, a separate phase after the splits, costs 15-45 us
// there). So the split rule is a function of the sequence's length alone for every T <= big_t (a row of a 1..8-row
// step equals its solo decode), and of the length and the step's width above. GLM4_ATTN_PLAN=v1 restores run5's
// kernel and rule for every T, GLM4_ATTN_DECODE sets one rule and kernel for every T.
struct PlanKnobs {
  int mink = 128, pfix = 64, stages = 0;                // decode split rule and pipeline (0 stages: by units)
  int dver = 2, pbf16 = 0, pdl = 1;                     // decode kernel version, bf16 partials, PDL where sm_90
  int spb = 0;                                          // decode2m: splits a block (0: by the grid, see plan_attention)
  int big_t = 8;                                        // above this many query rows: the settings below
  int big_dver = 1, big_mink = 256, big_pfix = 64;      //   (run5's kernel and rule)
  int pver = 3, warps = 8, pks = 16, pstages = 2;      // prefill kernel; warps, pks, pstages: prefill / prefill2
  int fkn = 64, fst = 4, fpv = 128;                    // prefill3
  static PlanKnobs old() {
    PlanKnobs k;
    k.mink = 128;
    k.stages = 4;
    k.dver = 1;
    k.big_t = 1 << 30;
    k.pver = 1;
    k.warps = 4;
    return k;
  }
  static PlanKnobs v1() {  // the defaults before decode version 2 (run5)
    PlanKnobs k;
    k.mink = 256;
    k.dver = 1;
    k.big_t = 1 << 30;
    return k;
  }
};

// The kernel for these shapes and the device's opt-in shared memory per block. Only shapes enter (T, heads, D,
// dtype, whether queries carry sequence ids, the longest visible range), so a captured step replays for any
// length. Decode serves few queries (one token per sequence, or a handful of one sequence); the rest goes to the
// prefill kernel. Decode splits: up to pfix splits of at least mink keys per (token, group), a rule on the length
// alone (a sequence decoded in a batch gets the same splits as alone: bit for bit the same output).
inline Plan plan_attention(int T, int Hq, int Hkv, int D, bool bf16, bool multi_seq, int64_t max_len, int smem_optin,
                           const PlanKnobs& k = PlanKnobs(), int cc_major = 0, int sms = 132) {
  Plan p;
  if (!bf16 || (D != 32 && D != 64 && D != 128)) return p;
  const int per = Hq / Hkv;
  const bool decode = multi_seq ? T <= 256 : T <= 4;
  if (!decode) {
    p.kind = Kind::Prefill;
    p.pver = k.pver;
    p.warps = k.warps;
    p.pks = k.pks;
    p.pstages = k.pstages;
    p.fkn = k.fkn;
    p.fst = k.fst;
    p.fpv = k.fpv;
    return p;
  }
  p.kind = Kind::Decode;
  p.rt = (per + 15) / 16;
  const int64_t units = static_cast<int64_t>(T) * Hkv * p.rt;
  // Pipeline depth (it never changes the arithmetic: the split rule alone does): a few units (B = 1: 2 units x <= 64
  // splits, about one block an SM) take 4 stages, the most bytes in flight a block; more units take 2 stages, 3
  // blocks an SM, so that one block's prologue and merge overlap the others' streaming. run5 (H200, m256 p64):
  // B = 1 32K s4 26.2 us, s3 26.4, s2 28.7; B = 32 8K s2 114 us, s3 130, s4 177; B = 32 32K s2 334, s3 365, s4 528.
  const int stage_bytes = 2 * (kKeyTile * (D + 8) * 2);
  p.stages = k.stages > 0 ? k.stages : (units <= 4 ? 4 : 2);
  if (p.stages * stage_bytes > smem_optin) p.stages = 2;
  const bool big = T > k.big_t;
  p.mink = std::max(kKeyTile, ((big ? k.big_mink : k.mink) + kKeyTile - 1) / kKeyTile * kKeyTile);
  p.pfix = std::max(1, std::min(big ? k.big_pfix : k.pfix, kMaxSplits));
  p.splits = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(p.pfix, (max_len + p.mink - 1) / p.mink)));
  p.work = p.splits > 1 ? decode_work_bytes(units, p.splits, D) : 0;
  const int dver = big ? k.big_dver : k.dver;
  p.dver = dver == 1 ? 1 : dver == 3 ? 3 : 2;
  p.pbf16 = p.dver >= 2 && k.pbf16 != 0;
  p.pdl = p.dver >= 2 && k.pdl != 0 && cc_major >= 9;
  if (p.dver == 3) {
    // Its own combine area beside the pipeline: fall back to fewer stages where the opt-in cannot hold both.
    const int comb = 4 * 16 * (D + 2) * 4;
    while (p.stages > 2 && p.stages * stage_bytes + comb > smem_optin) --p.stages;
    // Splits a block: about two blocks an SM over the whole grid (the arithmetic does not depend on it).
    const int64_t blocks = units * p.splits, target = 2 * static_cast<int64_t>(std::max(sms, 1));
    p.spb = k.spb > 0 ? k.spb : static_cast<int>(std::max<int64_t>(1, (blocks + target - 1) / target));
    p.spb = std::max(1, std::min(p.spb, p.splits));
  }
  return p;
}

// Sets a kernel's dynamic shared memory limit once per device (a function attribute, not a stream operation).
// `done` is the calling launcher's own flag set (one per kernel instantiation).
template <typename K>
inline cudaError_t allow_smem(std::atomic<uint64_t>& done, K kernel, int bytes) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  const uint64_t bit = uint64_t{1} << (dev & 63);
  if (done.load() & bit) return cudaSuccess;
  e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e == cudaSuccess) done.fetch_or(bit);
  return e;
}

template <int D, int STAGES>
inline cudaError_t launch_decode_d(const Args& a, const Plan& p, cudaStream_t st) {
  using Cfg = DecodeCfg<D, STAGES>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, decode_kernel<D, STAGES>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(a.T) * a.Hkv * p.rt), static_cast<unsigned>(p.splits));
  decode_kernel<D, STAGES><<<grid, Cfg::kThreads, Cfg::kSmem, st>>>(a, p.rt, p.mink, p.pfix);
  return cudaGetLastError();
}

// decode2: the split kernel, then (when some unit may split) the merge kernel; both with the PDL attribute when
// p.pdl (each waits for its predecessor with griddepcontrol.wait before touching shared data).
template <typename K, typename... A>
inline cudaError_t launch_ex(K kernel, dim3 grid, int threads, int smem, bool pdl, cudaStream_t st, A... args) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = grid;
  lc.blockDim = dim3(static_cast<unsigned>(threads), 1, 1);
  lc.dynamicSmemBytes = static_cast<size_t>(smem);
  lc.stream = st;
  cudaLaunchAttribute at[1];
  at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  at[0].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = at;
  lc.numAttrs = pdl ? 1 : 0;
  return cudaLaunchKernelEx(&lc, kernel, args...);
}
template <int D, int STAGES, bool PB, int MODE = 0>
inline cudaError_t launch_decode2_d(const Args& a, const Plan& p, cudaStream_t st, bool merge = true) {
  using Cfg = DecodeCfg<D, STAGES>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, decode2_kernel<D, STAGES, PB, MODE>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const unsigned units = static_cast<unsigned>(static_cast<int64_t>(a.T) * a.Hkv * p.rt);
  e = launch_ex(decode2_kernel<D, STAGES, PB, MODE>, dim3(units, static_cast<unsigned>(p.splits)), Cfg::kThreads, Cfg::kSmem,
                p.pdl, st, a, p.rt, p.mink, p.pfix);
  if (e != cudaSuccess || p.splits <= 1 || !merge) return e;
  return launch_ex(decode_merge_kernel<D, PB>, dim3(units, 16u), kMergeThreads, 0, p.pdl, st, a, p.rt, p.mink, p.pfix,
                   p.splits);
}
template <int D, int STAGES, bool PB>
inline cudaError_t launch_decode2m_d(const Args& a, const Plan& p, cudaStream_t st) {
  using Cfg = Decode2mCfg<D, STAGES>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, decode2m_kernel<D, STAGES, PB>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const unsigned units = static_cast<unsigned>(static_cast<int64_t>(a.T) * a.Hkv * p.rt);
  const int spb = std::max(1, p.spb);
  e = launch_ex(decode2m_kernel<D, STAGES, PB>, dim3(units, static_cast<unsigned>((p.splits + spb - 1) / spb)), 128,
                Cfg::kSmem, p.pdl, st, a, p.rt, p.mink, p.pfix, p.splits, spb);
  if (e != cudaSuccess || p.splits <= 1) return e;
  return launch_ex(decode_merge_kernel<D, PB>, dim3(units, 16u), kMergeThreads, 0, p.pdl, st, a, p.rt, p.mink, p.pfix,
                   p.splits);
}
template <int D, int STAGES>
inline cudaError_t launch_decode2_any(const Args& a, const Plan& p, cudaStream_t st) {
  if (p.dver == 3) return p.pbf16 ? launch_decode2m_d<D, STAGES, true>(a, p, st) : launch_decode2m_d<D, STAGES, false>(a, p, st);
  return p.pbf16 ? launch_decode2_d<D, STAGES, true>(a, p, st) : launch_decode2_d<D, STAGES, false>(a, p, st);
}
template <int D>
inline cudaError_t launch_decode_any(const Args& a, const Plan& p, cudaStream_t st) {
  if (p.dver >= 2)
    return p.stages >= 4 ? launch_decode2_any<D, 4>(a, p, st) : p.stages == 3 ? launch_decode2_any<D, 3>(a, p, st) : launch_decode2_any<D, 2>(a, p, st);
  return p.stages >= 4 ? launch_decode_d<D, 4>(a, p, st) : p.stages == 3 ? launch_decode_d<D, 3>(a, p, st) : launch_decode_d<D, 2>(a, p, st);
}

template <int D, int NW>
inline cudaError_t launch_prefill_d(const Args& a, cudaStream_t st) {
  using Cfg = PrefillCfg<D, NW>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, prefill_kernel<D, NW>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const int64_t tiles = (static_cast<int64_t>(a.T) * (a.Hq / a.Hkv) + Cfg::kRows - 1) / Cfg::kRows;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(a.Hkv));
  prefill_kernel<D, NW><<<grid, Cfg::kThreads, Cfg::kSmem, st>>>(a);
  return cudaGetLastError();
}

template <int D, int NW, int KS, int STAGES>
inline cudaError_t launch_prefill2_d(const Args& a, cudaStream_t st) {
  using Cfg = Prefill2Cfg<D, NW, KS, STAGES>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, prefill2_kernel<D, NW, KS, STAGES>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const int64_t tiles = (static_cast<int64_t>(a.T) * (a.Hq / a.Hkv) + Cfg::kRows - 1) / Cfg::kRows;
  prefill2_kernel<D, NW, KS, STAGES><<<static_cast<unsigned>(tiles * a.Hkv), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  return cudaGetLastError();
}

template <int KN, int STAGES, int PVN, bool PP = false>
inline cudaError_t launch_prefill3_d(const Args& a, cudaStream_t st) {
  using Cfg = Fa3Cfg<KN, STAGES, PVN, PP>;
  static std::atomic<uint64_t> done{0};
  cudaError_t e = allow_smem(done, prefill3_kernel<KN, STAGES, PVN, PP>, Cfg::kSmem);
  if (e != cudaSuccess) return e;
  const int64_t tiles = (static_cast<int64_t>(a.T) * (a.Hq / a.Hkv) + Cfg::kRows - 1) / Cfg::kRows;
  prefill3_kernel<KN, STAGES, PVN, PP><<<static_cast<unsigned>(tiles * a.Hkv), Cfg::kThreads, Cfg::kSmem, st>>>(a);
  return cudaGetLastError();
}

// prefill3 where it has code (sm_90 device, D 128, bf16 cache: plan_attention sends nothing else to prefill); the
// configurations instantiated: (keys a tile, stages, PV width) in {(64, 4, 64), (64, 4, 128), (128, 3, 128),
// (128, 3, 64)}. Returns false when it does not take the launch (the caller runs prefill2).
inline bool launch_prefill3_any(const Args& a, const Plan& p, cudaStream_t st, cudaError_t* err) {
  if (a.D != 128 || !a.bf16 || !fa3_device_ok()) return false;
  if (p.fkn == 64 && p.fst == 4 && p.fpv == 64) *err = launch_prefill3_d<64, 4, 64>(a, st);
  else if (p.fkn == 64 && p.fst == 4 && p.fpv == 128) *err = launch_prefill3_d<64, 4, 128>(a, st);
  else if (p.fkn == 128 && p.fst == 3 && p.fpv == 128) *err = launch_prefill3_d<128, 3, 128>(a, st);
  else if (p.fkn == 128 && p.fst == 3 && p.fpv == 64) *err = launch_prefill3_d<128, 3, 64>(a, st);
  else *err = cudaErrorInvalidValue;
  return true;
}

template <int D>
inline cudaError_t launch_prefill_any(const Args& a, const Plan& p, cudaStream_t st) {
  if (p.pver == 3) {
    cudaError_t e = cudaSuccess;
    if (D == 128 && launch_prefill3_any(a, p, st, &e)) return e;
    return launch_prefill2_d<D, 8, 16, 2>(a, st);  // prefill3 has no code here (not sm_90, or D != 128)
  }
  if (p.pver == 2) {
    if (p.warps == 4 && p.pks == 16 && p.pstages == 2) return launch_prefill2_d<D, 4, 16, 2>(a, st);
    if (p.warps == 8 && p.pks == 16 && p.pstages == 2) return launch_prefill2_d<D, 8, 16, 2>(a, st);
    return cudaErrorInvalidValue;  // not instantiated (the harness launches its other configurations itself)
  }
  return p.warps >= 8 ? launch_prefill_d<D, 8>(a, st) : launch_prefill_d<D, 4>(a, st);
}

// The instantiated configurations, listed here: decode D {32, 64, 128} x stages {2, 3, 4} x (decode_kernel,
// decode2_kernel, decode2m_kernel, each with f32 or bf16 partials); prefill3 (D 128, sm_90a) (keys a tile, stages,
// PV width) {(64, 4, 64), (64, 4, 128), (128, 3, 128), (128, 3, 64)}; prefill D {32, 64, 128}
// x (prefill_kernel warps {4, 8}, prefill2_kernel (warps, keys a step, stages) {(4, 16, 2), (8, 16, 2)}); generic
// NCH {1, 2, 4, 8, 16} (D <= 512).
inline cudaError_t launch(const Args& a, const Plan& p, cudaStream_t st) {
  if (a.T == 0 || a.Hq == 0) return cudaSuccess;
  if (p.kind == Kind::Decode) {
    switch (a.D) {
      case 32: return launch_decode_any<32>(a, p, st);
      case 64: return launch_decode_any<64>(a, p, st);
      default: return launch_decode_any<128>(a, p, st);
    }
  }
  if (p.kind == Kind::Prefill) {
    switch (a.D) {
      case 32: return launch_prefill_any<32>(a, p, st);
      case 64: return launch_prefill_any<64>(a, p, st);
      default: return launch_prefill_any<128>(a, p, st);
    }
  }
  const unsigned blocks = static_cast<unsigned>((static_cast<int64_t>(a.T) * a.Hq + 3) / 4);
  const int nch = (a.D + 31) / 32;
  if (nch <= 1) generic_kernel<1><<<blocks, 128, 0, st>>>(a);
  else if (nch <= 2) generic_kernel<2><<<blocks, 128, 0, st>>>(a);
  else if (nch <= 4) generic_kernel<4><<<blocks, 128, 0, st>>>(a);
  else if (nch <= 8) generic_kernel<8><<<blocks, 128, 0, st>>>(a);
  else generic_kernel<16><<<blocks, 128, 0, st>>>(a);
  return cudaGetLastError();
}

}  // namespace attn
}  // namespace cuda
}  // namespace glm4
