// The CUDA runtime surface of csrc/core/backend_cuda.h: device discovery, per-context allocator and stream,
// copies and graphs. The runtime is linked statically, so the addon needs only the driver; where there is no
// driver every query here returns "none" instead of failing.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <list>
#include <vector>

#include "common.cuh"
#include "core/backend_cuda.h"

#ifndef GLM4_CUDA_ARCHS
#define GLM4_CUDA_ARCHS ""
#endif

namespace glm4 {
namespace cudart {

bool compiled() { return true; }
int runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : CUDART_VERSION;
}
int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
}
std::string architectures() { return GLM4_CUDA_ARCHS; }

std::string status() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return str("no usable CUDA device: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
  if (n == 0) return "no CUDA device found";
  return "ok";
}

int64_t cached_bytes(int device);  // below, with the allocator

std::vector<DeviceInfo> devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return out;
  }
  int prev = -1;
  (void)cudaGetDevice(&prev);
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      (void)cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.total_bytes = static_cast<int64_t>(p.totalGlobalMem);
    d.multiprocessors = p.multiProcessorCount;
    d.l2_bytes = p.l2CacheSize;
    size_t fr = 0, tot = 0;
    // blocks this process caches for reuse (the allocator below) count as free: any allocation may take them
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
      d.free_bytes = static_cast<int64_t>(fr) + cached_bytes(i);
    (void)cudaGetLastError();
    out.push_back(d);
  }
  if (prev >= 0) (void)cudaSetDevice(prev);
  return out;
}

void check_last(const char* what, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    ::glm4::fail(GLM4_E_CUDA, file, line, str(what, ": launch failed: ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

namespace {
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int d) {
    CUDA_CHECK(cudaGetDevice(&prev));
    if (prev != d) CUDA_CHECK(cudaSetDevice(d));
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev && prev >= 0) (void)cudaSetDevice(prev);
  }
};

// Freed blocks are kept for reuse, binned by exact size: a prefill chunk allocates the same scratch and bf16
// activation copies (hundreds of MB) chunk after chunk, and cudaMalloc + cudaFree of such blocks cost ~100 us
// each with a device-wide synchronization in cudaFree: 88 ms of a 165 ms 2048-token prefill on an H200
// (2026-12-03, layers alone 77 ms). Reuse is stream-safe: a context runs every op and host write on its one
// stream, and a block comes back only when the last op holding it has been launched, so its next user is
// ordered after it. Blocks stay with their context (another stream could race); a failed cudaMalloc gives back
// every cached block of every context first and retries; devices() counts cached bytes as free.
// GLM4_CUDA_CACHE=0 turns the cache off (every free goes back to the driver at once).
class CudaAllocator;
std::mutex g_alloc_mu;                  // guards g_allocators
std::vector<CudaAllocator*> g_allocators;  // live allocators (cached-byte counts, OOM release)

// Bytes of freed blocks a context may keep (GLM4_CUDA_CACHE_MB, default 1024; 0 = no cache). Past it the oldest
// cached blocks go back to the driver: sizes that never recur (a workspace that grew) do not pile up.
int64_t cache_cap() {
  static const int64_t cap = [] {
    const char* e = std::getenv("GLM4_CUDA_CACHE_MB");
    if (!e || !*e) return int64_t{1024} << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(e, &end, 10);
    return (end && *end == 0 && mb >= 0) ? static_cast<int64_t>(mb) << 20 : int64_t{1024} << 20;
  }();
  return cap;
}

class CudaAllocator : public Allocator {
 public:
  explicit CudaAllocator(int dev) : Allocator(Device{DeviceType::CUDA, dev}) {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    g_allocators.push_back(this);
  }
  ~CudaAllocator() override {
    {
      std::lock_guard<std::mutex> g(g_alloc_mu);
      for (auto it = g_allocators.begin(); it != g_allocators.end(); ++it)
        if (*it == this) {
          g_allocators.erase(it);
          break;
        }
    }
    release_cached();
  }
  void* alloc_raw(int64_t bytes) override {
    const int64_t size = bytes > 0 ? bytes : 256;
    if (cache_cap() > 0) {
      std::lock_guard<std::mutex> g(mu_);
      for (auto it = free_.rbegin(); it != free_.rend(); ++it)  // the most recently freed block of this size
        if (it->first == size) {
          void* p = it->second;
          free_.erase(std::next(it).base());
          cached_ -= size;
          note_alloc(bytes);
          return p;
        }
    }
    DeviceGuard g(device_.index);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, static_cast<size_t>(size));
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      release_all_cached(device_.index);
      e = cudaMalloc(&p, static_cast<size_t>(size));
    }
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      size_t fr = 0, tot = 0;
      (void)cudaMemGetInfo(&fr, &tot);
      (void)cudaGetLastError();
      GLM4_FAIL(e == cudaErrorMemoryAllocation ? GLM4_E_OOM : GLM4_E_CUDA, "GPU allocation of ", bytes, " bytes (",
                bytes / 1048576.0, " MiB) failed on cuda:", device_.index, ": ", cudaGetErrorString(e), "; ",
                fr / 1048576.0, " MiB free of ", tot / 1048576.0,
                " MiB. Free GPU memory (other processes, other models) or lower maxContext");
    }
    note_alloc(bytes);
    return p;
  }
  void free_raw(void* p, int64_t bytes) override {
    const int64_t size = bytes > 0 ? bytes : 256;
    note_free(bytes);
    if (size > cache_cap()) {
      driver_free(p);
      return;
    }
    std::list<std::pair<int64_t, void*>> evict;
    {
      std::lock_guard<std::mutex> g(mu_);
      free_.emplace_back(size, p);
      cached_ += size;
      while (cached_ > cache_cap()) {  // the oldest first
        cached_ -= free_.front().first;
        evict.splice(evict.end(), free_, free_.begin());
      }
    }
    for (auto& b : evict) driver_free(b.second);
  }
  void trim() override { release_cached(); }
  int64_t cached_bytes() override {
    std::lock_guard<std::mutex> g(mu_);
    return cached_;
  }
  // Every cached block back to the driver (never throws).
  void release_cached() {
    std::list<std::pair<int64_t, void*>> blocks;
    {
      std::lock_guard<std::mutex> g(mu_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (auto& b : blocks) driver_free(b.second);
  }
  static void release_all_cached(int device) {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    for (CudaAllocator* a : g_allocators)
      if (a->device_.index == device) a->release_cached();
  }
  static int64_t all_cached(int device) {
    std::lock_guard<std::mutex> g(g_alloc_mu);
    int64_t n = 0;
    for (CudaAllocator* a : g_allocators)
      if (a->device_.index == device) n += a->cached_bytes();
    return n;
  }

 private:
  void driver_free(void* p) {
    int prev = -1;
    (void)cudaGetDevice(&prev);
    if (prev != device_.index) (void)cudaSetDevice(device_.index);
    (void)cudaFree(p);  // never throws from a destructor path
    (void)cudaGetLastError();
    if (prev >= 0 && prev != device_.index) (void)cudaSetDevice(prev);
  }
  std::mutex mu_;
  std::list<std::pair<int64_t, void*>> free_;  // (byte size, block), oldest first
  int64_t cached_ = 0;
};
}  // namespace

int64_t cached_bytes(int device) { return CudaAllocator::all_cached(device); }

std::shared_ptr<Allocator> make_allocator(int device) { return std::make_shared<CudaAllocator>(device); }

namespace {
// Page-locked mapped host memory (host_mapped): device pointer in Storage::data, the host pointer kept to free it.
// Its bytes are not device memory: they count in neither the context's allocator nor devices().
class MappedHostAllocator : public Allocator {
 public:
  MappedHostAllocator(int dev, void* host) : Allocator(Device{DeviceType::CUDA, dev}), host_(host) {}
  void* alloc_raw(int64_t) override { throw Error(GLM4_E_INVALID_ARG, "mapped host memory: no further allocations"); }
  void free_raw(void*, int64_t) override {
    if (host_) (void)cudaFreeHost(host_);
    host_ = nullptr;
  }

 private:
  void* host_;
};
}  // namespace

Tensor host_mapped(int device, DType dtype, const std::vector<int64_t>& shape, const void* src, int64_t bytes) {
  DeviceGuard g(device);
  int64_t n = 1;
  for (auto d : shape) n *= d;
  GLM4_CHECK(dtype_bytes(dtype, n) == bytes, GLM4_E_SHAPE, "hostMapped: ", bytes, " bytes given for ", n, " elements of ",
             dtype_name(dtype));
  void* h = nullptr;
  const cudaError_t e = cudaHostAlloc(&h, static_cast<size_t>(std::max<int64_t>(bytes, 1)), cudaHostAllocMapped | cudaHostAllocPortable);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    throw Error(GLM4_E_OOM, str("hostMapped: cannot page-lock ", bytes, " bytes of host memory (", cudaGetErrorString(e),
                                "); free host memory or run without the device-fed decode (GLM4_DEVICE_FED=0)"));
  }
  std::memcpy(h, src, static_cast<size_t>(bytes));
  void* d = nullptr;
  const cudaError_t e2 = cudaHostGetDevicePointer(&d, h, 0);
  if (e2 != cudaSuccess) {
    (void)cudaGetLastError();
    (void)cudaFreeHost(h);
    throw Error(GLM4_E_UNSUPPORTED, str("hostMapped: no device address for mapped host memory (", cudaGetErrorString(e2), ")"));
  }
  auto st = std::make_shared<Storage>();
  st->bytes = bytes;
  st->device = Device{DeviceType::CUDA, device};
  st->data = d;
  st->allocator = std::make_shared<MappedHostAllocator>(device, h);
  return Tensor(dtype, shape, st, 0);
}

void* stream_create(int device) {
  DeviceGuard g(device);
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
void stream_destroy(int device, void* stream) {
  int prev = -1;
  (void)cudaGetDevice(&prev);
  (void)cudaSetDevice(device);
  (void)cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  (void)cudaStreamDestroy(static_cast<cudaStream_t>(stream));
  (void)cudaGetLastError();
  if (prev >= 0) (void)cudaSetDevice(prev);
}
void stream_sync(int device, void* stream) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
void memcpy_h2d(int device, void* dst, const void* src, int64_t bytes, void* stream, bool sync) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
  if (sync) CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
void memcpy_d2h(int device, void* dst, const void* src, int64_t bytes, void* stream) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)));
  CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
}
void memcpy_d2d(int device, void* dst, const void* src, int64_t bytes, void* stream) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, static_cast<cudaStream_t>(stream)));
}

void graph_capture(int device, void* stream, const std::function<void()>& record, void** graph, void** exec) {
  DeviceGuard g(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  try {
    record();
  } catch (...) {
    cudaGraph_t broken = nullptr;
    (void)cudaStreamEndCapture(s, &broken);
    if (broken) (void)cudaGraphDestroy(broken);
    (void)cudaGetLastError();
    throw;
  }
  cudaGraph_t gr = nullptr;
  CUDA_CHECK(cudaStreamEndCapture(s, &gr));
  cudaGraphExec_t ex = nullptr;
  cudaError_t e = cudaGraphInstantiate(&ex, gr, 0);
  if (e != cudaSuccess) {
    (void)cudaGraphDestroy(gr);
    CUDA_CHECK(e);
  }
  *graph = gr;
  *exec = ex;
}
void graph_launch(int device, void* stream, void* exec) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)));
}
void* event_create(int device) {
  DeviceGuard g(device);
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreate(&e));
  return e;
}
void event_record(int device, void* ev, void* stream) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ev), static_cast<cudaStream_t>(stream)));
}
double event_elapsed_ms(int device, void* start, void* stop) {
  DeviceGuard g(device);
  CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(stop)));
  float ms = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(stop)));
  return ms;
}
void event_destroy(void* ev) {
  if (ev) (void)cudaEventDestroy(static_cast<cudaEvent_t>(ev));
  (void)cudaGetLastError();
}
void graph_destroy(void* graph, void* exec) {
  if (exec) (void)cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
  if (graph) (void)cudaGraphDestroy(static_cast<cudaGraph_t>(graph));
  (void)cudaGetLastError();
}

}  // namespace cudart
}  // namespace glm4
