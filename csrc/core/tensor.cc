#include "tensor.h"

#include <cstdlib>
#include <sstream>

namespace glm4 {

Storage::~Storage() {
  if (data && allocator) allocator->free_raw(data, bytes);
}

static std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> st(shape.size());
  int64_t s = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

Tensor::Tensor(DType dtype, std::vector<int64_t> shape, std::shared_ptr<Storage> storage, int64_t offset_bytes)
    : dtype_(dtype), shape_(std::move(shape)), storage_(std::move(storage)), offset_(offset_bytes) {
  strides_ = contiguous_strides(shape_);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (auto d : shape_) n *= d;
  return n;
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  GLM4_CHECK(ndim() >= 1, GLM4_E_SHAPE, "slice0: tensor ", describe(), " has no dimension 0");
  GLM4_CHECK(0 <= begin && begin <= end && end <= shape_[0], GLM4_E_INVALID_ARG, "slice0: rows [", begin, ", ", end,
             ") out of range for ", describe());
  int64_t row = 1;
  for (size_t i = 1; i < shape_.size(); ++i) row *= shape_[i];
  GLM4_CHECK(dtype_ != DType::I4 || row % 2 == 0, GLM4_E_SHAPE, "slice0: i4 rows of odd length in ", describe());
  auto shape = shape_;
  shape[0] = end - begin;
  return Tensor(dtype_, shape, storage_, offset_ + dtype_bytes(dtype_, row * begin));
}

Tensor Tensor::reshape(std::vector<int64_t> shape) const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  GLM4_CHECK(n == numel(), GLM4_E_SHAPE, "reshape: ", describe(), " cannot become ", shape_str(shape));
  GLM4_CHECK(is_contiguous(), GLM4_E_SHAPE, "reshape: ", describe(), " is not contiguous");
  return Tensor(dtype_, std::move(shape), storage_, offset_);
}

std::string Tensor::describe() const {
  return str(dtype_name(dtype_), shape_str(shape_), "@", device().name());
}

void Allocator::note_alloc(int64_t b) {
  int64_t now = (in_use_ += b);
  count_ += 1;
  int64_t p = peak_.load();
  while (now > p && !peak_.compare_exchange_weak(p, now)) {
  }
}

void* CpuAllocator::alloc_raw(int64_t bytes) {
  // 64-byte alignment: whole cache lines, and wide SIMD loads never straddle one.
  size_t sz = static_cast<size_t>((bytes + 63) / 64 * 64);
  if (sz == 0) sz = 64;
  void* p = std::aligned_alloc(64, sz);
  GLM4_CHECK(p != nullptr, GLM4_E_OOM, "host allocation of ", bytes, " bytes failed: free host memory or use a smaller model/context");
  note_alloc(bytes);
  return p;
}
void CpuAllocator::free_raw(void* p, int64_t bytes) {
  std::free(p);
  note_free(bytes);
}

Tensor empty(const std::shared_ptr<Allocator>& alloc, DType dtype, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) {
    GLM4_CHECK(d >= 0 && d < (int64_t(1) << 40), GLM4_E_INVALID_ARG, "empty: bad shape ", shape_str(shape));
    n *= d;
    GLM4_CHECK(n < (int64_t(1) << 42), GLM4_E_INVALID_ARG, "empty: shape ", shape_str(shape), " is too large");
  }
  auto st = std::make_shared<Storage>();
  st->bytes = dtype_bytes(dtype, n);
  st->device = alloc->device();
  st->data = alloc->alloc_raw(st->bytes);
  st->allocator = alloc;
  return Tensor(dtype, shape, st, 0);
}

void check_dtype(const char* op, const char* arg, const Tensor& t, DType want) {
  GLM4_CHECK(t.dtype() == want, GLM4_E_DTYPE, op, ": ", arg, " must be ", dtype_name(want), ", got ", t.describe());
}
void check_dtype2(const char* op, const char* arg, const Tensor& t, DType a, DType b) {
  GLM4_CHECK(t.dtype() == a || t.dtype() == b, GLM4_E_DTYPE, op, ": ", arg, " must be ", dtype_name(a), " or ",
             dtype_name(b), ", got ", t.describe());
}
void check_ndim(const char* op, const char* arg, const Tensor& t, int nd) {
  GLM4_CHECK(t.ndim() == nd, GLM4_E_SHAPE, op, ": ", arg, " must have ", nd, " dimensions, got ", t.describe());
}
void check_contig(const char* op, const char* arg, const Tensor& t) {
  GLM4_CHECK(t.is_contiguous(), GLM4_E_SHAPE, op, ": ", arg, " must be contiguous, got ", t.describe());
}
void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  GLM4_CHECK(a.device() == b.device(), GLM4_E_DEVICE, op, ": tensors on different devices: ", a.describe(), " and ",
             b.describe());
}
void check_dim(const char* op, const char* arg, const Tensor& t, int d, int64_t want, const char* what) {
  GLM4_CHECK(t.dim(d) == want, GLM4_E_SHAPE, op, ": ", arg, " dimension ", d, " must be ", want, " (", what, "), got ",
             t.describe());
}

}  // namespace glm4
