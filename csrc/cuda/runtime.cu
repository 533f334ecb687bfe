// The CUDA runtime surface of csrc/core/backend_cuda.h: device discovery, per-context allocator and stream,
// copies and graphs. The runtime is linked statically, so the addon needs only the driver; where there is no
// driver every query here returns "none" instead of failing.
#include <mutex>

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
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess) d.free_bytes = static_cast<int64_t>(fr);
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

class CudaAllocator : public Allocator {
 public:
  explicit CudaAllocator(int dev) : Allocator(Device{DeviceType::CUDA, dev}) {}
  void* alloc_raw(int64_t bytes) override {
    DeviceGuard g(device_.index);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes > 0 ? bytes : 256));
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
    int prev = -1;
    (void)cudaGetDevice(&prev);
    if (prev != device_.index) (void)cudaSetDevice(device_.index);
    (void)cudaFree(p);  // never throws from a destructor path
    (void)cudaGetLastError();
    if (prev >= 0 && prev != device_.index) (void)cudaSetDevice(prev);
    note_free(bytes);
  }
};
}  // namespace

std::shared_ptr<Allocator> make_allocator(int device) { return std::make_shared<CudaAllocator>(device); }

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
