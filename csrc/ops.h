// The op contract: every op, its tensors and their shapes, in one place. Implementations:
//   csrc/cpu/<family>.cc   glm4::cpu::<op>    the reference backend (plain, obviously right)
//   csrc/cuda/<family>.cu  glm4::cuda::<op>   the fast backend (same signature)
// csrc/core/dispatch.cc validates every argument (dtype, shape, device, contiguity) and records the op on the
// context; backends may therefore assume valid, contiguous inputs on their own device.
//
// Conventions: activations are f32; weights bf16 (or f32, f16 where stated); linear weights are [N, K] and
// y = x W^T (+ b) like torch.nn.Linear; token positions come from a device i32 tensor, never from the host,
// so that a recorded decode step can be replayed (CUDA graph) for any position.
#pragma once
#include <cstdint>

#include "core/context.h"
#include "core/int4_layout.h"

namespace glm4 {

// An INT4 linear weight W[N, K] (see core/int4_layout.h). layout 0 is canonical; a backend may repack to its
// own layout at load (layout != 0) and only that backend's matmul accepts it.
struct QWeight {
  Tensor codes;   // i4   [N, K]      (u8 [N, K/2] in memory)
  Tensor scales;  // bf16 [N, K/G]
  Tensor zeros;   // bf16 [N, K/G]
  int64_t n = 0, k = 0;
  int group = 128;
  int layout = 0;
};

// Arguments for rotary / attention, all read on the device.
struct AttnShape {
  int64_t tokens = 0;    // T
  int64_t q_heads = 0;   // Hq
  int64_t kv_heads = 0;  // Hkv
  int64_t head_dim = 0;  // D
};

#define GLM4_OPS_DECLARE(NS)                                                                                   \
  namespace NS {                                                                                               \
  /* out f32[T,H] = table[ids[t]]; table bf16|f32 [V,H]; ids i32[T] (ids outside [0,V) -> row of zeros on CUDA, error on CPU) */ \
  void embedding(Context& c, const Tensor& out, const Tensor& table, const Tensor& ids);                     \
  /* out f32[T,H] = x / sqrt(mean(x^2) + eps) * w;  x f32[T,H], w bf16|f32[H]; out may alias x */            \
  void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps);                 \
  /* canonical INT4 quantization of w bf16|f16|f32 [N,K] into q (codes, scales, zeros, group) */             \
  void quantize_int4(Context& c, const QWeight& q, const Tensor& w);                                       \
  /* out bf16|f32 [N,K] = dequantized canonical q */                                                         \
  void dequantize_int4(Context& c, const Tensor& out, const QWeight& q);                                   \
  /* out f32[M,N] = x f32[M,K] * W^T (+ bias bf16|f32 [N] when defined) */                                   \
  void matmul_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias);   \
  /* out f32[M,N] = x f32[M,K] * w^T (+ bias);  w bf16|f32 [N,K] */                                          \
  void matmul(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias);          \
  /* x f32[M,N] += b bf16|f32 [N] */                                                                         \
  void add_bias(Context& c, const Tensor& x, const Tensor& b);                                               \
  /* In place on x f32[T, heads, D]: GLM-4 rotary on the first rot_dim dims of each head, interleaved pairs:  \
     for i < rot_dim/2, a = pos[t] * theta^(-2i/rot_dim):                                                     \
     (x[2i], x[2i+1]) <- (x[2i] cos a - x[2i+1] sin a, x[2i+1] cos a + x[2i] sin a). */                      \
  void rotary(Context& c, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta);                 \
  /* kcache/vcache bf16|f32 [S, Hkv, D]; k, v f32 [T, Hkv, D]; cache[pos[t]] = k[t], v[t] (pos: cache rows) */  \
  void kv_write(Context& c, const Tensor& kcache, const Tensor& vcache, const Tensor& k, const Tensor& v,     \
                const Tensor& pos);                                                                          \
  /* Fused rotary(q, pos) + rotary(k, pos) + kv_write(kcache, vcache, k, v, rows): q f32[T,Hq,D] and        \
     k f32[T,Hkv,D] rotated in place at positions pos i32[T]; then cache[rows[t]] = k[t], v[t] (v f32[T,Hkv,D], \
     rows i32[T] cache rows). Bit-identical to the three ops in sequence on each backend. */                  \
  void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kcache,      \
                       const Tensor& vcache, const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta); \
  /* out f32[T,Hq,D]: causal GQA attention of q f32[T,Hq,D] over cache rows start[t]..pos[t] (inclusive;    \
     start i32[T] optional: undefined = 0). Several sequences share one cache this way, each owning a slot  \
     of rows (row = slot * S + position, start = slot * S). Query head h reads KV group h / (Hq/Hkv);        \
     softmax(q.k * scale) v */                                                                               \
  void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kcache, const Tensor& vcache,  \
                 const Tensor& pos, const Tensor& start, float scale);                                       \
  /* out f32[M,F] = silu(gu[:, :F]) * gu[:, F:];  gu f32[M,2F] (gate first) */                               \
  void swiglu(Context& c, const Tensor& out, const Tensor& gu);                                              \
  /* out = a + b, all f32 same shape (out may alias a or b) */                                               \
  void add(Context& c, const Tensor& out, const Tensor& a, const Tensor& b);                                 \
  /* Fused residual add + rmsnorm: x f32[T,H] += o f32[T,H] (in place, the sum stored first), then            \
     out f32[T,H] = rmsnorm(x) * w like rmsnorm(out, x, w, eps): the same results as add(x, x, o) followed by  \
     rmsnorm(out, x, w, eps), bit for bit on each backend. out may alias x or o. */                           \
  void add_rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& o, const Tensor& w, float eps); \
  /* out i32[M] = index of the first maximum of each row of x f32[M,V] */                                    \
  void argmax(Context& c, const Tensor& out, const Tensor& x);                                               \
  /* out f32[M,V] = softmax(x / temperature) per row */                                                      \
  void softmax(Context& c, const Tensor& out, const Tensor& x, float temperature);                          \
  /* out = in converted between f32, bf16, f16 (same shape) */                                               \
  void convert(Context& c, const Tensor& out, const Tensor& in);                                             \
  /* out f32|bf16 filled with normal(0, std) + mean from a counter-based generator (seed, element index) */   \
  void fill_random(Context& c, const Tensor& out, uint64_t seed, float mean, float std);                    \
  /* Sampling on one row per sequence: logits f32[M,V]; params f32[M,4] = (temperature, top_p, min_p,         \
     uniform u in [0,1)); top_k i32[M] (0 = off). out i32[M]. temperature <= 0 means argmax. */              \
  void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k); \
  }

GLM4_OPS_DECLARE(cpu)
GLM4_OPS_DECLARE(cuda)

namespace ops {
// The dispatch layer (validation + recording); same names, same arguments.
void embedding(Context& c, const Tensor& out, const Tensor& table, const Tensor& ids);
void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps);
void quantize_int4(Context& c, const QWeight& q, const Tensor& w);
void dequantize_int4(Context& c, const Tensor& out, const QWeight& q);
void matmul_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias);
void matmul(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias);
void add_bias(Context& c, const Tensor& x, const Tensor& b);
void rotary(Context& c, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta);
void kv_write(Context& c, const Tensor& kcache, const Tensor& vcache, const Tensor& k, const Tensor& v, const Tensor& pos);
void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kcache, const Tensor& vcache,
                     const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta);
void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kcache, const Tensor& vcache,
               const Tensor& pos, const Tensor& start, float scale);
void swiglu(Context& c, const Tensor& out, const Tensor& gu);
void add(Context& c, const Tensor& out, const Tensor& a, const Tensor& b);
void add_rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& o, const Tensor& w, float eps);
void argmax(Context& c, const Tensor& out, const Tensor& x);
void softmax(Context& c, const Tensor& out, const Tensor& x, float temperature);
void convert(Context& c, const Tensor& out, const Tensor& in);
void fill_random(Context& c, const Tensor& out, uint64_t seed, float mean, float std);
void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k);
void copy(Context& c, const Tensor& dst, const Tensor& src);  // same dtype and element count, any device pair of this context
}  // namespace ops

}  // namespace glm4
