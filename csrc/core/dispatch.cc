// Validation and recording for every op (the one dispatch point). Checks here run synchronously when JS calls
// the op, so a bad shape is an immediate error naming the shapes; the recorded closure then calls the backend
// of the context's device.
#include <cmath>

#include "ops.h"
#include "core/backend_cuda.h"

namespace glm4 {
namespace ops {

namespace {

bool is_cuda(const Context& c) { return c.device().type == DeviceType::CUDA; }

void on_ctx(const char* op, const Context& c, const Tensor& t, const char* arg) {
  GLM4_CHECK(t.defined(), GLM4_E_INVALID_ARG, op, ": ", arg, " is missing");
  GLM4_CHECK(t.device() == c.device(), GLM4_E_DEVICE, op, ": ", arg, " ", t.describe(), " is not on the context's device ",
             c.device().name());
  GLM4_CHECK(t.is_contiguous(), GLM4_E_SHAPE, op, ": ", arg, " must be contiguous, got ", t.describe());
}

// cpu_tiled: the op reads layout 1 on the CPU too (repack_int4 and dequantize_int4: the reference of the layout;
// the CPU matmuls need layout 0, the CPU backend never repacks for itself).
void check_q(const char* op, const Context& c, const QWeight& q, bool cpu_tiled = false) {
  on_ctx(op, c, q.codes, "codes");
  on_ctx(op, c, q.scales, "scales");
  on_ctx(op, c, q.zeros, "zeros");
  GLM4_CHECK(valid_group(q.group), GLM4_E_INVALID_ARG, op, ": group size ", q.group, " is not 32, 64 or 128");
  GLM4_CHECK(q.layout == 0 || q.layout == 1, GLM4_E_INVALID_ARG, op, ": unknown layout ", q.layout,
             " (0 canonical, 1 the CUDA kernel layout)");
  GLM4_CHECK(is_cuda(c) || cpu_tiled || q.layout == 0, GLM4_E_INVALID_ARG, op,
             ": the CPU backend needs the canonical layout (0), got layout ", q.layout);
  GLM4_CHECK(valid_codebook(q.codebook), GLM4_E_INVALID_ARG, op, ": unknown codebook ", q.codebook,
             " (0 integer codes, 1 NF4)");
  check_dtype(op, "codes", q.codes, DType::I4);
  check_dtype(op, "scales", q.scales, DType::BF16);
  check_dtype(op, "zeros", q.zeros, DType::BF16);
  check_ndim(op, "codes", q.codes, 2);
  GLM4_CHECK(q.codes.dim(0) == q.n && q.codes.dim(1) == q.k, GLM4_E_SHAPE, op, ": codes ", q.codes.describe(),
             " do not match the weight shape [", q.n, ",", q.k, "]");
  GLM4_CHECK(q.k % q.group == 0, GLM4_E_SHAPE, op, ": K=", q.k, " is not a multiple of group ", q.group);
  const std::vector<int64_t> gs{q.n, q.k / q.group};
  GLM4_CHECK(q.scales.shape() == gs, GLM4_E_SHAPE, op, ": scales must be ", shape_str(gs), ", got ", q.scales.describe());
  GLM4_CHECK(q.zeros.shape() == gs, GLM4_E_SHAPE, op, ": zeros must be ", shape_str(gs), ", got ", q.zeros.describe());
  GLM4_CHECK(q.layout != kInt4LayoutTiled || int4_tiled_shape_ok(q.n, q.k), GLM4_E_SHAPE, op,
             ": layout 1 needs N % 16 == 0 and K % 64 == 0, got [", q.n, ",", q.k, "]");
}

// Whether two (contiguous) tensors share any byte.
bool overlap(const Tensor& a, const Tensor& b) {
  const char* a0 = static_cast<const char*>(a.raw());
  const char* b0 = static_cast<const char*>(b.raw());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

// An activation output that a tensor-core GEMM may read directly: f32, or bf16 (the f32 result rounded to nearest
// even, bit for bit what convert gives, so that matmul_int4 needs no conversion pass).
void check_act_out(const char* op, const Tensor& out) {
  GLM4_CHECK(out.dtype() == DType::F32 || out.dtype() == DType::BF16, GLM4_E_DTYPE, op, ": out must be f32 or bf16 (bf16: ",
             "the f32 result rounded, for a GEMM that reads bf16), got ", out.describe());
}

// A bf16 out never aliases an f32 input in place (the kernels read each input element before writing the same
// index, which only works when both have the same element size).
void check_no_overlap_bf16(const char* op, const Tensor& out, const Tensor& in, const char* arg) {
  GLM4_CHECK(out.dtype() != DType::BF16 || out.numel() == 0 || in.numel() == 0 || !overlap(out, in), GLM4_E_INVALID_ARG, op,
             ": a bf16 out ", out.describe(), " must not overlap ", arg, " ", in.describe());
}

void need_rows(const char* op, const char* arg, const Tensor& t, int64_t rows) {
  GLM4_CHECK(t.dim(0) == rows, GLM4_E_SHAPE, op, ": ", arg, " must have ", rows, " rows, got ", t.describe());
}

void check_bias(const char* op, const Context& c, const Tensor& bias, int64_t n) {
  if (!bias.defined()) return;
  on_ctx(op, c, bias, "bias");
  check_dtype2(op, "bias", bias, DType::F32, DType::BF16);
  GLM4_CHECK(bias.ndim() == 1 && bias.dim(0) == n, GLM4_E_SHAPE, op, ": bias must be [", n, "], got ", bias.describe());
}

#if defined(GLM4_WITH_CUDA)
#define GLM4_RECORD(c, NAME, ...)                                            \
  do {                                                                      \
    if (is_cuda(c))                                                         \
      (c).enqueue([=](Context& cx) { cuda::NAME(cx, __VA_ARGS__); }, #NAME); \
    else                                                                    \
      (c).enqueue([=](Context& cx) { cpu::NAME(cx, __VA_ARGS__); }, #NAME);  \
  } while (0)
#else
#define GLM4_RECORD(c, NAME, ...)                                                                   \
  do {                                                                                             \
    GLM4_CHECK(!is_cuda(c), GLM4_E_NO_CUDA, #NAME ": this build of the addon has no CUDA backend"); \
    (c).enqueue([=](Context& cx) { cpu::NAME(cx, __VA_ARGS__); }, #NAME);                          \
  } while (0)
#endif

}  // namespace

void embedding(Context& c, const Tensor& out, const Tensor& table, const Tensor& ids) {
  const char* op = "embedding";
  on_ctx(op, c, out, "out"); on_ctx(op, c, table, "table"); on_ctx(op, c, ids, "ids");
  check_dtype(op, "out", out, DType::F32);
  check_dtype2(op, "table", table, DType::BF16, DType::F32);
  check_dtype(op, "ids", ids, DType::I32);
  check_ndim(op, "table", table, 2); check_ndim(op, "out", out, 2); check_ndim(op, "ids", ids, 1);
  need_rows(op, "out", out, ids.dim(0));
  check_dim(op, "out", out, 1, table.dim(1), "hidden size of the table");
  GLM4_RECORD(c, embedding, out, table, ids);
}

void rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  const char* op = "rmsnorm";
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x"); on_ctx(op, c, w, "weight");
  check_act_out(op, out); check_dtype(op, "x", x, DType::F32);
  check_dtype2(op, "weight", w, DType::BF16, DType::F32);
  check_ndim(op, "x", x, 2); check_ndim(op, "weight", w, 1);
  GLM4_CHECK(out.shape() == x.shape(), GLM4_E_SHAPE, op, ": out ", out.describe(), " must match x ", x.describe());
  check_dim(op, "weight", w, 0, x.dim(1), "hidden size of x");
  GLM4_CHECK(eps > 0.f && std::isfinite(eps), GLM4_E_INVALID_ARG, op, ": eps must be positive and finite, got ", eps);
  check_no_overlap_bf16(op, out, x, "x");
  GLM4_RECORD(c, rmsnorm, out, x, w, eps);
}

void quantize_int4(Context& c, const QWeight& q, const Tensor& w, int64_t scheme, const Tensor& col_scale) {
  const char* op = "quantize_int4";
  check_q(op, c, q);
  GLM4_CHECK(q.layout == 0, GLM4_E_INVALID_ARG, op, ": quantization writes the canonical layout (0), got layout ", q.layout);
  GLM4_CHECK(valid_scheme(scheme), GLM4_E_INVALID_ARG, op, ": unknown scheme ", scheme,
             " (0 asymmetric, 1 symmetric, 2 NF4)");
  GLM4_CHECK((scheme == kInt4SchemeNf4) == (q.codebook == kInt4CodebookNf4), GLM4_E_INVALID_ARG, op, ": scheme ", scheme,
             " writes ", scheme == kInt4SchemeNf4 ? "NF4 codes (codebook 1)" : "integer codes (codebook 0)",
             ", but q has codebook ", q.codebook);
  on_ctx(op, c, w, "w");
  GLM4_CHECK(w.dtype() == DType::BF16 || w.dtype() == DType::F16 || w.dtype() == DType::F32, GLM4_E_DTYPE, op,
             ": w must be bf16, f16 or f32, got ", w.describe());
  check_ndim(op, "w", w, 2);
  GLM4_CHECK(w.dim(0) == q.n && w.dim(1) == q.k, GLM4_E_SHAPE, op, ": w ", w.describe(), " does not match codes ",
             q.codes.describe());
  if (col_scale.defined()) {
    on_ctx(op, c, col_scale, "col_scale");
    check_dtype(op, "col_scale", col_scale, DType::F32);
    GLM4_CHECK(col_scale.ndim() == 1 && col_scale.dim(0) == q.k, GLM4_E_SHAPE, op, ": col_scale must be [", q.k,
               "] (one factor per input column), got ", col_scale.describe());
  }
  GLM4_RECORD(c, quantize_int4, q, w, scheme, col_scale);
}

void dequantize_int4(Context& c, const Tensor& out, const QWeight& q) {
  const char* op = "dequantize_int4";
  check_q(op, c, q, /*cpu_tiled=*/true);
  on_ctx(op, c, out, "out");
  check_dtype2(op, "out", out, DType::F32, DType::BF16);
  GLM4_CHECK(out.ndim() == 2 && out.dim(0) == q.n && out.dim(1) == q.k, GLM4_E_SHAPE, op, ": out ", out.describe(),
             " must be [", q.n, ",", q.k, "]");
  GLM4_RECORD(c, dequantize_int4, out, q);
}

void matmul_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, const Tensor& bias) {
  const char* op = "matmul_int4";
  check_q(op, c, w);
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x");
  // x and out are f32, or bf16 where the tensor-core GEMM reads x / writes out (CUDA, layout 1, M > kInt4GemvMaxM;
  // a bf16 out holds the f32 result rounded to nearest even).
  const bool tc_path = is_cuda(c) && w.layout == 1 && x.ndim() == 2 && x.dim(0) > kInt4GemvMaxM;
  if (tc_path) {
    check_dtype2(op, "x", x, DType::F32, DType::BF16);
    check_dtype2(op, "out", out, DType::F32, DType::BF16);
  } else {
    GLM4_CHECK(x.dtype() == DType::F32, GLM4_E_DTYPE, op, ": x must be f32 here (bf16 only for CUDA layout 1 with M > ",
               kInt4GemvMaxM, "), got ", x.describe());
    GLM4_CHECK(out.dtype() == DType::F32, GLM4_E_DTYPE, op, ": out must be f32 here (bf16 only for CUDA layout 1 with M > ",
               kInt4GemvMaxM, "), got ", out.describe());
  }
  check_ndim(op, "x", x, 2); check_ndim(op, "out", out, 2);
  GLM4_CHECK(x.dim(1) == w.k, GLM4_E_SHAPE, op, ": x ", x.describe(), " has K=", x.dim(1), " but the weight is [", w.n,
             ",", w.k, "]");
  GLM4_CHECK(out.dim(0) == x.dim(0) && out.dim(1) == w.n, GLM4_E_SHAPE, op, ": out ", out.describe(), " must be [",
             x.dim(0), ",", w.n, "]");
  check_bias(op, c, bias, w.n);
  if (tc_path && x.dtype() == DType::F32) {
    // The tensor-core GEMM reads bf16 activations (its TMA copies bytes): convert into a buffer that the recorded
    // closures own, so that a captured plan keeps it alive. Producers that write bf16 skip this pass.
    const Tensor xb = c.empty(DType::BF16, x.shape());
    GLM4_RECORD(c, convert, xb, x);
    GLM4_RECORD(c, matmul_int4, out, xb, w, bias);
    return;
  }
  GLM4_RECORD(c, matmul_int4, out, x, w, bias);
}

void repack_int4(Context& c, const QWeight& dst, const QWeight& src) {
  const char* op = "repack_int4";
  check_q(op, c, dst, /*cpu_tiled=*/true);
  check_q(op, c, src, /*cpu_tiled=*/true);
  GLM4_CHECK(dst.n == src.n && dst.k == src.k && dst.group == src.group && dst.codebook == src.codebook, GLM4_E_SHAPE,
             op, ": dst [", dst.n, ",", dst.k, "] group ", dst.group, " codebook ", dst.codebook, " must match src [", src.n,
             ",", src.k, "] group ", src.group, " codebook ", src.codebook);
  GLM4_CHECK(dst.layout != src.layout, GLM4_E_INVALID_ARG, op, ": dst and src are both layout ", src.layout,
             " (repack converts 0 -> 1 or 1 -> 0)");
  for (const Tensor* t : {&dst.codes, &dst.scales, &dst.zeros})
    for (const Tensor* u : {&src.codes, &src.scales, &src.zeros})
      GLM4_CHECK(t->numel() == 0 || !overlap(*t, *u), GLM4_E_INVALID_ARG, op, ": dst ", t->describe(), " overlaps src ",
                 u->describe(), " (repacking is not in place)");
  GLM4_RECORD(c, repack_int4, dst, src);
}

void linear_int4(Context& c, const Tensor& out, const Tensor& x, const QWeight& w, float eps, int64_t mode,
                 const Tensor& bias, const Tensor& norm_weight) {
  const char* op = "linear_int4";
  check_q(op, c, w);
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x");
  check_ndim(op, "x", x, 2); check_ndim(op, "out", out, 2);
  check_dtype(op, "out", out, DType::F32);
  GLM4_CHECK(mode >= 0 && mode <= 2, GLM4_E_INVALID_ARG, op, ": unknown mode ", mode, " (0 store, 1 accumulate, 2 swiglu)");
  const bool swiglu = mode == static_cast<int64_t>(LinearMode::SwiGlu);
  // x bf16: the tensor-core GEMM's input (CUDA, layout 1, M > kInt4GemvMaxM, no norm, store or accumulate), which
  // runs the op with the store or the residual add in its epilogue. Everywhere else x is f32.
  const bool gemm_x = is_cuda(c) && w.layout == kInt4LayoutTiled && x.dim(0) > kInt4GemvMaxM && !norm_weight.defined() && !swiglu;
  if (gemm_x)
    check_dtype2(op, "x", x, DType::F32, DType::BF16);
  else
    GLM4_CHECK(x.dtype() == DType::F32, GLM4_E_DTYPE, op, ": x must be f32 here (bf16 only for CUDA layout 1 with M > ",
               kInt4GemvMaxM, ", no norm_weight, mode 0 or 1), got ", x.describe());
  GLM4_CHECK(x.dim(1) == w.k, GLM4_E_SHAPE, op, ": x ", x.describe(), " has K=", x.dim(1), " but the weight is [", w.n,
             ",", w.k, "]");
  GLM4_CHECK(!swiglu || w.n % 2 == 0, GLM4_E_SHAPE, op, ": swiglu needs an even N (gate | up), got ", w.n);
  const int64_t nout = swiglu ? w.n / 2 : w.n;
  GLM4_CHECK(out.dim(0) == x.dim(0) && out.dim(1) == nout, GLM4_E_SHAPE, op, ": out ", out.describe(), " must be [",
             x.dim(0), ",", nout, "]");
  GLM4_CHECK(out.numel() == 0 || x.numel() == 0 || !overlap(out, x), GLM4_E_INVALID_ARG, op, ": out ", out.describe(),
             " overlaps x ", x.describe());
  GLM4_CHECK(!is_cuda(c) || w.layout == kInt4LayoutTiled, GLM4_E_INVALID_ARG, op,
             ": the CUDA backend reads layout 1 (repack_int4 at load), got layout ", w.layout);
  GLM4_CHECK(!is_cuda(c) || !swiglu || (w.n / 2) % 16 == 0, GLM4_E_SHAPE, op,
             ": swiglu on CUDA needs N/2 a multiple of 16 (gate and up row tiles), got N=", w.n);
  check_bias(op, c, bias, w.n);
  if (norm_weight.defined()) {
    on_ctx(op, c, norm_weight, "norm_weight");
    check_dtype2(op, "norm_weight", norm_weight, DType::BF16, DType::F32);
    GLM4_CHECK(norm_weight.ndim() == 1 && norm_weight.dim(0) == w.k, GLM4_E_SHAPE, op, ": norm_weight must be [", w.k,
               "], got ", norm_weight.describe());
    GLM4_CHECK(eps > 0.f && std::isfinite(eps), GLM4_E_INVALID_ARG, op, ": eps must be positive and finite, got ", eps);
  }
#if defined(GLM4_WITH_CUDA)
  if (is_cuda(c) && x.dtype() == DType::BF16) {
    c.enqueue([=](Context& cx) { cuda::linear_int4_gemm(cx, out, x, w, mode, bias); }, "linear_int4");
    return;
  }
  if (is_cuda(c)) {
    // the v3 GEMV's split-K scratch is taken now and held by the recorded op (as attention's)
    const Tensor work = cuda::linear_int4_workspace(c, x, w, mode);
    c.enqueue([=](Context& cx) { cuda::linear_int4_run(cx, out, x, w, eps, mode, bias, norm_weight, work); }, "linear_int4");
    return;
  }
#endif
  GLM4_RECORD(c, linear_int4, out, x, w, eps, mode, bias, norm_weight);
}

void matmul(Context& c, const Tensor& out, const Tensor& x, const Tensor& w, const Tensor& bias) {
  const char* op = "matmul";
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x"); on_ctx(op, c, w, "w");
  check_dtype(op, "out", out, DType::F32); check_dtype(op, "x", x, DType::F32);
  check_dtype2(op, "w", w, DType::BF16, DType::F32);
  check_ndim(op, "x", x, 2); check_ndim(op, "w", w, 2); check_ndim(op, "out", out, 2);
  GLM4_CHECK(x.dim(1) == w.dim(1), GLM4_E_SHAPE, op, ": x ", x.describe(), " and w ", w.describe(),
             " disagree on K (x is [M,K], w is [N,K])");
  GLM4_CHECK(out.dim(0) == x.dim(0) && out.dim(1) == w.dim(0), GLM4_E_SHAPE, op, ": out ", out.describe(), " must be [",
             x.dim(0), ",", w.dim(0), "]");
  check_bias(op, c, bias, w.dim(0));
  GLM4_RECORD(c, matmul, out, x, w, bias);
}

void add_bias(Context& c, const Tensor& x, const Tensor& b) {
  const char* op = "add_bias";
  on_ctx(op, c, x, "x");
  check_dtype(op, "x", x, DType::F32);
  check_ndim(op, "x", x, 2);
  GLM4_CHECK(b.defined(), GLM4_E_INVALID_ARG, op, ": bias is missing");
  check_bias(op, c, b, x.dim(1));
  GLM4_RECORD(c, add_bias, x, b);
}

static void check_pos(const char* op, const Context& c, const Tensor& pos, int64_t t) {
  on_ctx(op, c, pos, "positions");
  check_dtype(op, "positions", pos, DType::I32);
  GLM4_CHECK(pos.ndim() == 1 && pos.dim(0) == t, GLM4_E_SHAPE, op, ": positions must be [", t, "], got ", pos.describe());
}

void rotary(Context& c, const Tensor& x, const Tensor& pos, int64_t rot_dim, float theta) {
  const char* op = "rotary";
  on_ctx(op, c, x, "x");
  check_dtype(op, "x", x, DType::F32);
  check_ndim(op, "x", x, 3);
  check_pos(op, c, pos, x.dim(0));
  GLM4_CHECK(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= x.dim(2), GLM4_E_INVALID_ARG, op, ": rot_dim ", rot_dim,
             " must be even and at most the head dim ", x.dim(2));
  GLM4_CHECK(theta > 1.f && std::isfinite(theta), GLM4_E_INVALID_ARG, op, ": theta must be > 1, got ", theta);
  GLM4_RECORD(c, rotary, x, pos, rot_dim, theta);
}

static void check_cache(const char* op, const Context& c, const Tensor& kc, const Tensor& vc) {
  on_ctx(op, c, kc, "kcache"); on_ctx(op, c, vc, "vcache");
  check_dtype2(op, "kcache", kc, DType::BF16, DType::F32);
  GLM4_CHECK(vc.dtype() == kc.dtype() && vc.shape() == kc.shape(), GLM4_E_SHAPE, op, ": vcache ", vc.describe(),
             " must match kcache ", kc.describe());
  check_ndim(op, "kcache", kc, 3);
}

void kv_write(Context& c, const Tensor& kc, const Tensor& vc, const Tensor& k, const Tensor& v, const Tensor& pos) {
  const char* op = "kv_write";
  check_cache(op, c, kc, vc);
  on_ctx(op, c, k, "k"); on_ctx(op, c, v, "v");
  check_dtype(op, "k", k, DType::F32); check_dtype(op, "v", v, DType::F32);
  check_ndim(op, "k", k, 3);
  GLM4_CHECK(v.shape() == k.shape(), GLM4_E_SHAPE, op, ": v ", v.describe(), " must match k ", k.describe());
  GLM4_CHECK(k.dim(1) == kc.dim(1) && k.dim(2) == kc.dim(2), GLM4_E_SHAPE, op, ": k ", k.describe(),
             " does not fit the cache ", kc.describe());
  check_pos(op, c, pos, k.dim(0));
  GLM4_RECORD(c, kv_write, kc, vc, k, v, pos);
}

void rotary_kv_write(Context& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kc, const Tensor& vc,
                     const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  const char* op = "rotary_kv_write";
  check_cache(op, c, kc, vc);
  on_ctx(op, c, q, "q"); on_ctx(op, c, k, "k"); on_ctx(op, c, v, "v");
  check_dtype(op, "q", q, DType::F32); check_dtype(op, "k", k, DType::F32); check_dtype(op, "v", v, DType::F32);
  check_ndim(op, "q", q, 3); check_ndim(op, "k", k, 3);
  GLM4_CHECK(v.shape() == k.shape(), GLM4_E_SHAPE, op, ": v ", v.describe(), " must match k ", k.describe());
  GLM4_CHECK(k.dim(1) == kc.dim(1) && k.dim(2) == kc.dim(2), GLM4_E_SHAPE, op, ": k ", k.describe(),
             " does not fit the cache ", kc.describe());
  GLM4_CHECK(q.dim(0) == k.dim(0) && q.dim(2) == k.dim(2), GLM4_E_SHAPE, op, ": q ", q.describe(), " and k ", k.describe(),
             " must agree on tokens and head dim");
  // The kernel rotates q and k in place while other threads read k and v: they must not share memory.
  GLM4_CHECK(k.numel() == 0 || (q.raw() != k.raw() && q.raw() != v.raw() && k.raw() != v.raw()), GLM4_E_INVALID_ARG, op,
             ": q, k and v must be distinct tensors");
  check_pos(op, c, pos, q.dim(0));
  on_ctx(op, c, rows, "rows");
  check_dtype(op, "rows", rows, DType::I32);
  GLM4_CHECK(rows.ndim() == 1 && rows.dim(0) == q.dim(0), GLM4_E_SHAPE, op, ": rows must be [", q.dim(0), "], got ",
             rows.describe());
  GLM4_CHECK(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= q.dim(2), GLM4_E_INVALID_ARG, op, ": rot_dim ", rot_dim,
             " must be even and at most the head dim ", q.dim(2));
  GLM4_CHECK(theta > 1.f && std::isfinite(theta), GLM4_E_INVALID_ARG, op, ": theta must be > 1, got ", theta);
  GLM4_RECORD(c, rotary_kv_write, q, k, v, kc, vc, pos, rows, rot_dim, theta);
}

void rotary_kv_write_qkv(Context& c, const Tensor& q, const Tensor& qkv, const Tensor& kc, const Tensor& vc,
                         const Tensor& pos, const Tensor& rows, int64_t rot_dim, float theta) {
  const char* op = "rotary_kv_write_qkv";
  check_cache(op, c, kc, vc);
  on_ctx(op, c, q, "q"); on_ctx(op, c, qkv, "qkv");
  check_dtype(op, "q", q, DType::F32); check_dtype2(op, "qkv", qkv, DType::F32, DType::BF16);
  check_ndim(op, "q", q, 3); check_ndim(op, "qkv", qkv, 2);
  const int64_t T = q.dim(0), Hq = q.dim(1), D = q.dim(2), Hkv = kc.dim(1);
  GLM4_CHECK(D == kc.dim(2), GLM4_E_SHAPE, op, ": head dim of q ", q.describe(), " and cache ", kc.describe(), " differ");
  GLM4_CHECK(qkv.dim(0) == T && qkv.dim(1) == (Hq + 2 * Hkv) * D, GLM4_E_SHAPE, op, ": qkv must be [", T, ",",
             (Hq + 2 * Hkv) * D, "] (", Hq, " q heads, then ", Hkv, " k and ", Hkv, " v heads of ", D, "), got ",
             qkv.describe());
  GLM4_CHECK(q.numel() == 0 || !overlap(q, qkv), GLM4_E_INVALID_ARG, op, ": q ", q.describe(), " overlaps qkv ", qkv.describe());
  check_pos(op, c, pos, T);
  on_ctx(op, c, rows, "rows");
  check_dtype(op, "rows", rows, DType::I32);
  GLM4_CHECK(rows.ndim() == 1 && rows.dim(0) == T, GLM4_E_SHAPE, op, ": rows must be [", T, "], got ", rows.describe());
  GLM4_CHECK(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= D, GLM4_E_INVALID_ARG, op, ": rot_dim ", rot_dim,
             " must be even and at most the head dim ", D);
  GLM4_CHECK(theta > 1.f && std::isfinite(theta), GLM4_E_INVALID_ARG, op, ": theta must be > 1, got ", theta);
  GLM4_RECORD(c, rotary_kv_write_qkv, q, qkv, kc, vc, pos, rows, rot_dim, theta);
}

void attention(Context& c, const Tensor& out, const Tensor& q, const Tensor& kc, const Tensor& vc, const Tensor& pos,
               float scale, int64_t block_size, const Tensor& table, const Tensor& seq) {
  const char* op = "attention";
  check_cache(op, c, kc, vc);
  on_ctx(op, c, out, "out"); on_ctx(op, c, q, "q");
  check_act_out(op, out); check_dtype(op, "q", q, DType::F32);
  check_ndim(op, "q", q, 3);
  GLM4_CHECK(out.shape() == q.shape(), GLM4_E_SHAPE, op, ": out ", out.describe(), " must match q ", q.describe());
  GLM4_CHECK(out.numel() == 0 || !overlap(out, q), GLM4_E_INVALID_ARG, op, ": out ", out.describe(), " overlaps q ", q.describe());
  GLM4_CHECK(q.dim(2) == kc.dim(2), GLM4_E_SHAPE, op, ": head dim of q ", q.describe(), " and cache ", kc.describe(), " differ");
  GLM4_CHECK(kc.dim(1) > 0 && q.dim(1) % kc.dim(1) == 0, GLM4_E_SHAPE, op, ": ", q.dim(1),
             " query heads are not a multiple of ", kc.dim(1), " KV heads");
  check_pos(op, c, pos, q.dim(0));
  GLM4_CHECK(scale > 0.f && std::isfinite(scale), GLM4_E_INVALID_ARG, op, ": scale must be positive, got ", scale);
  if (table.defined()) {
    on_ctx(op, c, table, "table");
    check_dtype(op, "table", table, DType::I32);
    check_ndim(op, "table", table, 2);
    GLM4_CHECK(block_size >= 16 && block_size <= 256 && (block_size & (block_size - 1)) == 0, GLM4_E_INVALID_ARG, op,
               ": block size ", block_size, " is not a power of two in [16, 256]");
    GLM4_CHECK(table.dim(0) > 0 && table.dim(1) > 0 && table.dim(1) * block_size < (int64_t{1} << 31), GLM4_E_SHAPE, op,
               ": block table ", table.describe(), " must be [B >= 1, blocks >= 1] with blocks * ", block_size,
               " < 2^31 positions");
    if (seq.defined()) {
      on_ctx(op, c, seq, "seq");
      check_dtype(op, "seq", seq, DType::I32);
      GLM4_CHECK(seq.ndim() == 1 && seq.dim(0) == q.dim(0), GLM4_E_SHAPE, op, ": seq must be [", q.dim(0), "], got ",
                 seq.describe());
    }
  } else {
    GLM4_CHECK(block_size == 0, GLM4_E_INVALID_ARG, op, ": block size ", block_size,
               " without a block table (a contiguous cache takes 0)");
    GLM4_CHECK(!seq.defined(), GLM4_E_INVALID_ARG, op, ": seq needs a block table (without one the cache is a single sequence)");
  }
#if defined(GLM4_WITH_CUDA)
  if (is_cuda(c)) {
    // The split-K scratch is taken now, when the op is recorded, and held by the recorded op (and by a plan
    // captured with it): allocating while a graph is captured is not allowed.
    const Tensor work = cuda::attention_workspace(c, q, kc, table, seq, block_size);
    c.enqueue([=](Context& cx) { cuda::attention_run(cx, out, q, kc, vc, pos, scale, block_size, table, seq, work); },
              "attention");
    return;
  }
#endif
  GLM4_RECORD(c, attention, out, q, kc, vc, pos, scale, block_size, table, seq);
}

void swiglu(Context& c, const Tensor& out, const Tensor& gu) {
  const char* op = "swiglu";
  on_ctx(op, c, out, "out"); on_ctx(op, c, gu, "gate_up");
  check_act_out(op, out); check_dtype2(op, "gate_up", gu, DType::F32, DType::BF16);
  check_ndim(op, "out", out, 2); check_ndim(op, "gate_up", gu, 2);
  GLM4_CHECK(gu.dim(0) == out.dim(0) && gu.dim(1) == 2 * out.dim(1), GLM4_E_SHAPE, op, ": gate_up ", gu.describe(),
             " must be [M, 2F] for out ", out.describe());
  GLM4_CHECK(out.numel() == 0 || !overlap(out, gu), GLM4_E_INVALID_ARG, op, ": out ", out.describe(), " overlaps gate_up ",
             gu.describe());
  GLM4_RECORD(c, swiglu, out, gu);
}

void add(Context& c, const Tensor& out, const Tensor& a, const Tensor& b) {
  const char* op = "add";
  on_ctx(op, c, out, "out"); on_ctx(op, c, a, "a"); on_ctx(op, c, b, "b");
  check_dtype(op, "out", out, DType::F32); check_dtype(op, "a", a, DType::F32); check_dtype(op, "b", b, DType::F32);
  GLM4_CHECK(a.shape() == b.shape() && out.shape() == a.shape(), GLM4_E_SHAPE, op, ": shapes differ: out ", out.describe(),
             ", a ", a.describe(), ", b ", b.describe());
  GLM4_RECORD(c, add, out, a, b);
}

void add_rmsnorm(Context& c, const Tensor& out, const Tensor& x, const Tensor& o, const Tensor& w, float eps) {
  const char* op = "add_rmsnorm";
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x"); on_ctx(op, c, o, "o"); on_ctx(op, c, w, "weight");
  check_act_out(op, out); check_dtype(op, "x", x, DType::F32); check_dtype(op, "o", o, DType::F32);
  check_dtype2(op, "weight", w, DType::BF16, DType::F32);
  check_ndim(op, "x", x, 2); check_ndim(op, "weight", w, 1);
  check_no_overlap_bf16(op, out, x, "x"); check_no_overlap_bf16(op, out, o, "o");
  GLM4_CHECK(o.shape() == x.shape() && out.shape() == x.shape(), GLM4_E_SHAPE, op, ": shapes differ: out ", out.describe(),
             ", x ", x.describe(), ", o ", o.describe());
  check_dim(op, "weight", w, 0, x.dim(1), "hidden size of x");
  GLM4_CHECK(eps > 0.f && std::isfinite(eps), GLM4_E_INVALID_ARG, op, ": eps must be positive and finite, got ", eps);
  GLM4_RECORD(c, add_rmsnorm, out, x, o, w, eps);
}

void argmax(Context& c, const Tensor& out, const Tensor& x) {
  const char* op = "argmax";
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x");
  check_dtype(op, "out", out, DType::I32); check_dtype(op, "x", x, DType::F32);
  check_ndim(op, "x", x, 2); check_ndim(op, "out", out, 1);
  need_rows(op, "out", out, x.dim(0));
  GLM4_CHECK(x.dim(1) > 0, GLM4_E_SHAPE, op, ": x ", x.describe(), " has empty rows");
  GLM4_RECORD(c, argmax, out, x);
}

void softmax(Context& c, const Tensor& out, const Tensor& x, float temperature) {
  const char* op = "softmax";
  on_ctx(op, c, out, "out"); on_ctx(op, c, x, "x");
  check_dtype(op, "out", out, DType::F32); check_dtype(op, "x", x, DType::F32);
  check_ndim(op, "x", x, 2);
  GLM4_CHECK(out.shape() == x.shape(), GLM4_E_SHAPE, op, ": out ", out.describe(), " must match x ", x.describe());
  GLM4_CHECK(temperature > 0.f && std::isfinite(temperature), GLM4_E_INVALID_ARG, op, ": temperature must be > 0, got ",
             temperature);
  GLM4_RECORD(c, softmax, out, x, temperature);
}

void convert(Context& c, const Tensor& out, const Tensor& in) {
  const char* op = "convert";
  on_ctx(op, c, out, "out"); on_ctx(op, c, in, "in");
  for (const Tensor* t : {&out, &in})
    GLM4_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::BF16 || t->dtype() == DType::F16, GLM4_E_DTYPE, op,
               ": only f32, bf16 and f16 convert, got ", t->describe());
  GLM4_CHECK(out.numel() == in.numel(), GLM4_E_SHAPE, op, ": out ", out.describe(), " and in ", in.describe(),
             " differ in size");
  GLM4_RECORD(c, convert, out, in);
}

void fill_random(Context& c, const Tensor& out, uint64_t seed, float mean, float std) {
  const char* op = "fill_random";
  on_ctx(op, c, out, "out");
  check_dtype2(op, "out", out, DType::F32, DType::BF16);
  GLM4_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0.f, GLM4_E_INVALID_ARG, op, ": bad mean/std ", mean, "/", std);
  GLM4_RECORD(c, fill_random, out, seed, mean, std);
}

void sample(Context& c, const Tensor& out, const Tensor& logits, const Tensor& params, const Tensor& top_k,
            const Tensor& penalty_ids, const Tensor& penalty_len) {
  const char* op = "sample";
  on_ctx(op, c, out, "out"); on_ctx(op, c, logits, "logits"); on_ctx(op, c, params, "params"); on_ctx(op, c, top_k, "top_k");
  check_dtype(op, "out", out, DType::I32); check_dtype(op, "logits", logits, DType::F32);
  check_dtype(op, "params", params, DType::F32); check_dtype(op, "top_k", top_k, DType::I32);
  check_ndim(op, "logits", logits, 2);
  const int64_t m = logits.dim(0);
  const bool pen = penalty_ids.defined() || penalty_len.defined();
  GLM4_CHECK(out.ndim() == 1 && out.dim(0) == m, GLM4_E_SHAPE, op, ": out must be [", m, "], got ", out.describe());
  GLM4_CHECK(params.ndim() == 2 && params.dim(0) == m && (params.dim(1) == 4 || params.dim(1) == 5), GLM4_E_SHAPE, op,
             ": params must be [", m, ",4] or [", m, ",5] (with the repetition penalty), got ", params.describe());
  GLM4_CHECK(top_k.ndim() == 1 && top_k.dim(0) == m, GLM4_E_SHAPE, op, ": top_k must be [", m, "], got ", top_k.describe());
  if (pen) {
    on_ctx(op, c, penalty_ids, "penalty_ids"); on_ctx(op, c, penalty_len, "penalty_len");
    check_dtype(op, "penalty_ids", penalty_ids, DType::I32); check_dtype(op, "penalty_len", penalty_len, DType::I32);
    GLM4_CHECK(penalty_ids.ndim() == 2 && penalty_ids.dim(0) == m, GLM4_E_SHAPE, op, ": penalty_ids must be [", m,
               ",L], got ", penalty_ids.describe());
    GLM4_CHECK(penalty_len.ndim() == 1 && penalty_len.dim(0) == m, GLM4_E_SHAPE, op, ": penalty_len must be [", m,
               "], got ", penalty_len.describe());
    GLM4_CHECK(params.dim(1) == 5, GLM4_E_SHAPE, op, ": penalty ids need the penalty in params [", m, ",5], got ",
               params.describe());
  }
  GLM4_RECORD(c, sample, out, logits, params, top_k, penalty_ids, penalty_len);
}

void copy(Context& c, const Tensor& dst, const Tensor& src) {
  const char* op = "copy";
  on_ctx(op, c, dst, "dst"); on_ctx(op, c, src, "src");
  GLM4_CHECK(dst.dtype() == src.dtype() && dst.numel() == src.numel(), GLM4_E_SHAPE, op, ": dst ", dst.describe(),
             " and src ", src.describe(), " differ in dtype or size");
  GLM4_RECORD(c, copy, dst, src);
}

}  // namespace ops
}  // namespace glm4
