// The op list, written once: X(name, jsName, (parameters)) per op. It generates the backend declarations
// (glm4::cpu::<name>, glm4::cuda::<name>), the dispatch declarations (glm4::ops::<name>, csrc/ops.h), the
// Context's N-API methods (csrc/napi/context_wrap.cc: `jsName`, arguments in the order below, after the Context)
// and the addon's `opList()` that the tests hold the op case table and the TypeScript NativeContext against.
//
// Adding an op: one line here, the two backends (csrc/cpu/<family>.cc, csrc/cuda/<family>.cu), its argument
// checks in csrc/core/dispatch.cc, its typed method in the native contract (lib/) and its cases in
// test/helpers/cases.ts. Nothing else: a missing case or method fails test/ops.test.ts.
//
// Parameter types the N-API layer reads (csrc/napi/op_binding.h): `const Tensor&` (a Tensor; undefined or null
// gives an undefined Tensor, which the dispatch rejects unless the op documents it as optional: optional tensors
// come last), `const QWeight&` ({codes, scales, zeros, groupSize, layout?, codebook?}), `float` (a number),
// `int64_t` (an integer), `uint64_t` (a non-negative integer below 2^53). Parameter names are the ones errors and
// opList() report.
//
// Conventions: activations are f32 (the outputs that only a tensor-core GEMM reads may be bf16 where stated: the
// normed h, SwiGLU's act, attention's out); weights bf16 (or f32, f16 where stated); linear weights are [N, K] and
// y = x W^T (+ b) like torch.nn.Linear; token positions come from a device i32 tensor, never from the host,
// so that a recorded decode step can be replayed (CUDA graph) for any position.
#pragma once

// clang-format off
#define GLM4_OP_LIST(X)                                                                                             \
  /* out f32[T,H] = table[ids[t]]; table bf16|f32 [V,H]; ids i32[T] (ids outside [0,V) -> row of zeros on CUDA,     \
     error on CPU) */                                                                                               \
  X(embedding, "embedding", (Context& c, const Tensor& out, const Tensor& table, const Tensor& ids))                \
  /* out f32|bf16 [T,H] = x / sqrt(mean(x^2) + eps) * w;  x f32[T,H], w bf16|f32[H]; out may alias x (f32 out);    \
     a bf16 out holds the f32 result rounded to nearest even (what convert gives), for a GEMM that reads bf16 */    \
  X(rmsnorm, "rmsnorm", (Context& c, const Tensor& out, const Tensor& x, const Tensor& weight, float eps))          \
  /* canonical INT4 quantization of w bf16|f16|f32 [N,K] into q (codes, scales, zeros, group; layout 0) by scheme   \
     (core/int4_layout.h): 0 asymmetric min/max, 1 symmetric absmax (zero 8), both codebook 0; 2 NF4 absmax (zero 0, \
     codebook 1). col_scale f32 [K] (optional): quantize w * col_scale (per input column; activation-aware scaling) */ \
  X(quantize_int4, "quantizeInt4", (Context& c, const QWeight& q, const Tensor& w, int64_t scheme,                  \
                                    const Tensor& col_scale))                                                       \
  /* out bf16|f32 [N,K] = dequantized q (codebook 0: (q - z) * s; 1: (NF4[q] - z) * s) */                          \
  X(dequantize_int4, "dequantizeInt4", (Context& c, const Tensor& out, const QWeight& q))                           \
  /* dst = src in the other layout (0 -> 1 or 1 -> 0; core/int4_layout.h): same n, k, group, codebook; codes,       \
     scales and zeros moved bit for bit; dst must not overlap src. Layout 1 needs N % 16 == 0 and K % 64 == 0. */   \
  X(repack_int4, "repackInt4", (Context& c, const QWeight& dst, const QWeight& src))                                \
  /* out f32[M,N] = x f32[M,K] * W^T (+ bias bf16|f32 [N] when defined; optional). CUDA, layout 1, M > 8: x may   \
     be bf16 (the tensor-core GEMM's input; f32 is converted first), and out bf16 (the f32 result rounded to      \
     nearest even, from whole tiles: no K pieces), see kInt4GemvMaxM in ops.h */                                    \
  X(matmul_int4, "matmulInt4", (Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias)) \
  /* The fused INT4 linear of decode: y = xn W^T (+ bias), xn = x, or rmsnorm(x) * norm_weight (eps) like rmsnorm()  \
     when norm_weight is given; then by mode (LinearMode, ops.h): 0 out f32[M,N] = y, 1 out f32[M,N] += y (residual \
     add), 2 out f32[M,N/2] = silu(y[:, :N/2]) * y[:, N/2:] (gate first). x f32[M,K]; bias bf16|f32 [N] and         \
     norm_weight bf16|f32 [K] optional; out must not overlap x. CPU: layout 0, exactly rmsnorm + matmul_int4 +      \
     add|swiglu; CUDA: layout 1, the tensor-core GEMV (x rounded to bf16 as it is staged), 8 tokens a launch;      \
     x bf16 with M > 8, no norm_weight, mode 0 or 1: the tensor-core GEMM, the add in its epilogue (CUDA only). */  \
  X(linear_int4, "linearInt4", (Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps,          \
                                int64_t mode, const Tensor& bias, const Tensor& norm_weight))                       \
  /* out f32[M,N] = x f32[M,K] * w^T (+ bias; optional);  w bf16|f32 [N,K] */                                       \
  X(matmul, "matmul", (Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias))        \
  /* x f32[M,N] += b bf16|f32 [N] */                                                                                \
  X(add_bias, "addBias", (Context& c, const Tensor& x, const Tensor& bias))                                         \
  /* In place on x f32[T, heads, D]: GLM-4 rotary on the first rot_dim dims of each head, interleaved pairs:        \
     for i < rot_dim/2, a = pos[t] * theta^(-2i/rot_dim):                                                           \
     (x[2i], x[2i+1]) <- (x[2i] cos a - x[2i+1] sin a, x[2i+1] cos a + x[2i] sin a). */                            \
  X(rotary, "rotary", (Context& c, const Tensor& x, const Tensor& positions, int64_t rot_dim, float theta))         \
  /* kcache/vcache bf16|f32 [S, Hkv, D]; k, v f32 [T, Hkv, D]; cache[pos[t]] = k[t], v[t] (pos: cache rows) */      \
  X(kv_write, "kvWrite", (Context& c, const Tensor& kcache, const Tensor& vcache, const Tensor& k, const Tensor& v,   \
                          const Tensor& positions))                                                                 \
  /* Fused rotary(q, pos) + rotary(k, pos) + kv_write(kcache, vcache, k, v, rows): q f32[T,Hq,D] and              \
     k f32[T,Hkv,D] rotated in place at positions pos i32[T]; then cache[rows[t]] = k[t], v[t] (v f32[T,Hkv,D],    \
     rows i32[T] cache rows). Bit-identical to the three ops in sequence on each backend. */                        \
  X(rotary_kv_write, "rotaryKvWrite", (Context& c, const Tensor& q, const Tensor& k, const Tensor& v,               \
                                       const Tensor& kcache, const Tensor& vcache, const Tensor& positions,         \
                                       const Tensor& rows, int64_t rot_dim, float theta))                           \
  /* rotary_kv_write reading q, k, v out of one packed QKV row: qkv f32|bf16 [T,(Hq+2Hkv)*D] (the fused QKV       \
     GEMM's output: q heads, then k heads, then v heads; left unchanged; bf16 values are widened exactly, as by     \
     convert). q f32[T,Hq,D] (out) = the rotated q heads; cache[rows[t]] = rotated k[t], v[t] (Hkv, D from the      \
     cache). Bit-identical to rotary_kv_write on the unpacked (f32) q, k, v on each backend. q must not overlap qkv. */ \
  X(rotary_kv_write_qkv, "rotaryKvWriteQkv", (Context& c, const Tensor& q, const Tensor& qkv, const Tensor& kcache,  \
                                              const Tensor& vcache, const Tensor& positions, const Tensor& rows,    \
                                              int64_t rot_dim, float theta))                                        \
  /* Causal GQA attention over a (paged) KV cache: out f32|bf16 [T,Hq,D] = softmax(q.k * scale) v for q f32[T,Hq,D] \
     (a bf16 out: the f32 result rounded to nearest even, bit for bit what convert would give).                     \
     kcache/vcache bf16|f32 [R, Hkv, D]: the rows of every sequence; query head h reads KV group h / (Hq/Hkv).     \
     Query t attends positions 0..positions[t] (inclusive) of its sequence:                                       \
     - table undefined (optional): one contiguous sequence, position p is row p (block_size 0, seq undefined);    \
     - table i32[B, NB]: sequence b's position p is row table[b][p / bs] * bs + p % bs (bs = block_size, a power  \
       of two in 16..256); query t belongs to sequence seq[t] (seq i32[T], optional: all sequence 0).             \
     Contiguous slots are the special case table[b][i] = b * (S / bs) + i; a chunk of new tokens over a cached    \
     prefix is queries at positions p0..p0+T-1. Rows of other sequences are never read. The CPU throws on a       \
     position, sequence or table entry outside the pool; CUDA never reads outside the pool (such a query gets      \
     zeros or undefined values). CUDA kernels: csrc/cuda/attention_kernels.cuh. */                                \
  X(attention, "attention", (Context& c, const Tensor& out, const Tensor& q, const Tensor& kcache,                  \
                             const Tensor& vcache, const Tensor& positions, float scale, int64_t block_size,        \
                             const Tensor& table, const Tensor& seq))                                              \
  /* out f32|bf16 [M,F] = silu(gu[:, :F]) * gu[:, F:];  gu f32|bf16 [M,2F] (gate first; a bf16 gu gives exactly    \
     convert(gu) to f32 + this op: the GEMM's bf16 gate_up at T > 8); bf16 out: the f32 result rounded */           \
  X(swiglu, "swiglu", (Context& c, const Tensor& out, const Tensor& gate_up))                                       \
  /* out = a + b, all f32 same shape (out may alias a or b) */                                                      \
  X(add, "add", (Context& c, const Tensor& out, const Tensor& a, const Tensor& b))                                  \
  /* Fused residual add + rmsnorm: x f32[T,H] += o f32[T,H] (in place, the sum stored first), then                 \
     out f32|bf16 [T,H] = rmsnorm(x) * w like rmsnorm(out, x, w, eps): the same results as add(x, x, o) followed by  \
     rmsnorm(out, x, w, eps), bit for bit on each backend. An f32 out may alias x or o; a bf16 out overlaps neither. */ \
  X(add_rmsnorm, "addRmsnorm", (Context& c, const Tensor& out, const Tensor& x, const Tensor& o,                    \
                                const Tensor& weight, float eps))                                                   \
  /* out i32[M] = index of the first maximum of each row of x f32[M,V] */                                           \
  X(argmax, "argmax", (Context& c, const Tensor& out, const Tensor& x))                                             \
  /* out f32[M,V] = softmax(x / temperature) per row */                                                             \
  X(softmax, "softmax", (Context& c, const Tensor& out, const Tensor& x, float temperature))                        \
  /* out = in converted between f32, bf16, f16 (same shape) */                                                      \
  X(convert, "convert", (Context& c, const Tensor& out, const Tensor& input))                                       \
  /* out f32|bf16 filled with normal(0, std) + mean from a counter-based generator (seed, element index) */         \
  X(fill_random, "fillRandom", (Context& c, const Tensor& out, uint64_t seed, float mean, float std))               \
  /* Sampling on one row per sequence: logits f32[M,V]; params f32[M,4|5] = (temperature, top_p, min_p,             \
     uniform u in [0,1), repetition penalty); top_k i32[M] (0 = off). out i32[M]. temperature <= 0 means argmax.     \
     Optional (both or neither; params then [M,5]): penalty_ids i32[M,L] and penalty_len i32[M]: the logits of       \
     ids[i][0..len[i]) (len clamped to [0,L]; ids outside [0,V) ignored; repeats count once) are divided by the      \
     penalty when positive, multiplied by it otherwise (HF's repetition penalty), before anything else. */           \
  X(sample, "sample", (Context& c, const Tensor& out, const Tensor& logits, const Tensor& params,                    \
                       const Tensor& top_k, const Tensor& penalty_ids, const Tensor& penalty_len))                  \
  /* dst = src: same dtype and element count, both on the context's device (any shapes) */                         \
  X(copy, "copy", (Context& c, const Tensor& dst, const Tensor& src))
// clang-format on
