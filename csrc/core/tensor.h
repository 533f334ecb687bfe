// Tensor: dtype, shape, strides (elements), device and owner (a shared Storage). Views share the storage
// and keep it alive; the memory goes back to its allocator when the last view is gone.
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"
#include "error.h"

namespace glm4 {

enum class DeviceType : uint8_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string name() const { return type == DeviceType::CPU ? "cpu" : str("cuda:", index); }
};

class Allocator;

// One allocation. Freed through the allocator that made it (which keeps the byte counts).
struct Storage {
  void* data = nullptr;
  int64_t bytes = 0;
  Device device;
  std::shared_ptr<Allocator> allocator;  // keeps the allocator (and its context's device) alive
  ~Storage();
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(DType dtype, std::vector<int64_t> shape, std::shared_ptr<Storage> storage, int64_t offset_bytes = 0);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t dim(int i) const { return shape_.at(i < 0 ? static_cast<int>(shape_.size()) + i : i); }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t numel() const;
  int64_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  Device device() const { return storage_ ? storage_->device : Device{}; }
  bool defined() const { return storage_ != nullptr; }
  bool is_contiguous() const;
  int64_t offset() const { return offset_; }
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <typename T>
  T* data() const { return reinterpret_cast<T*>(raw()); }

  // Rows [begin, end) of dimension 0, sharing the storage (I4 needs an even row length).
  Tensor slice0(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same element count (contiguous tensors only).
  Tensor reshape(std::vector<int64_t> shape) const;

  std::string describe() const;  // "bf16[4,8]@cuda:0"

 private:
  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_, strides_;
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
};

// Allocator with byte counts. One per context: no global state.
class Allocator {
 public:
  explicit Allocator(Device d) : device_(d) {}
  virtual ~Allocator() = default;
  virtual void* alloc_raw(int64_t bytes) = 0;
  virtual void free_raw(void* p, int64_t bytes) = 0;
  // Gives blocks kept for reuse back to the system (the CUDA allocator caches freed blocks).
  virtual void trim() {}
  // Bytes of freed blocks kept for reuse (not counted in bytes_in_use).
  virtual int64_t cached_bytes() { return 0; }

  int64_t bytes_in_use() const { return in_use_.load(); }
  int64_t peak_bytes() const { return peak_.load(); }
  int64_t allocations() const { return count_.load(); }
  void reset_peak() { peak_.store(in_use_.load()); }
  Device device() const { return device_; }

 protected:
  void note_alloc(int64_t b);
  void note_free(int64_t b) { in_use_ -= b; count_ -= 1; }
  Device device_;

 private:
  std::atomic<int64_t> in_use_{0}, peak_{0}, count_{0};
};

class CpuAllocator : public Allocator {
 public:
  CpuAllocator() : Allocator(Device{DeviceType::CPU, 0}) {}
  void* alloc_raw(int64_t bytes) override;
  void free_raw(void* p, int64_t bytes) override;
};

// Allocate a tensor through `alloc` (the allocator's shared_ptr is kept by the storage).
Tensor empty(const std::shared_ptr<Allocator>& alloc, DType dtype, const std::vector<int64_t>& shape);

// ----- precondition helpers (errors name the op, the argument and its shape) -----
void check_dtype(const char* op, const char* arg, const Tensor& t, DType want);
void check_dtype2(const char* op, const char* arg, const Tensor& t, DType a, DType b);
void check_ndim(const char* op, const char* arg, const Tensor& t, int nd);
void check_contig(const char* op, const char* arg, const Tensor& t);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_dim(const char* op, const char* arg, const Tensor& t, int d, int64_t want, const char* what);

}  // namespace glm4
