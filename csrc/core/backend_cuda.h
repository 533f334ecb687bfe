// The CUDA runtime surface the core uses. Implemented in csrc/cuda/runtime.cu when the addon is built with
// CUDA (GLM4_WITH_CUDA), and by stubs in csrc/core/no_cuda.cc otherwise (they report "no CUDA").
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor.h"

namespace glm4 {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  int64_t total_bytes = 0, free_bytes = 0;
  int multiprocessors = 0;
  int64_t l2_bytes = 0;
};

namespace cudart {
bool compiled();                       // built with CUDA at all
int runtime_version();                 // cudaRuntimeGetVersion, 0 when not compiled
int driver_version();                  // cudaDriverGetVersion, 0 when no driver
std::string status();                  // "ok", or why no device can be used (no driver, no device, ...)
std::vector<DeviceInfo> devices();     // empty where there is no GPU or no driver; never throws
std::string architectures();           // e.g. "80;86;89;90a"

std::shared_ptr<Allocator> make_allocator(int device);
// A tensor in page-locked host memory mapped into the device's address space (cudaHostAlloc, mapped): kernels read
// it over the bus. `src` (bytes) is copied in. For the embedding table: a step gathers its rows on the device from
// token ids the previous step's pick left there, so steps can be queued back to back (Engine.run).
Tensor host_mapped(int device, DType dtype, const std::vector<int64_t>& shape, const void* src, int64_t bytes);
void* stream_create(int device);
void stream_destroy(int device, void* stream);
void stream_sync(int device, void* stream);
void memcpy_h2d(int device, void* dst, const void* src, int64_t bytes, void* stream, bool sync);
void memcpy_d2h(int device, void* dst, const void* src, int64_t bytes, void* stream);
void memcpy_d2d(int device, void* dst, const void* src, int64_t bytes, void* stream);
// Graphs: begin capture on the stream, run `record`, end capture and instantiate; launch replays it.
void graph_capture(int device, void* stream, const std::function<void()>& record, void** graph, void** exec);
void graph_launch(int device, void* stream, void* exec);
void graph_destroy(void* graph, void* exec);
void check_last(const char* what, const char* file, int line);
// Events for the bench's per-op profile.
void* event_create(int device);
void event_record(int device, void* ev, void* stream);
double event_elapsed_ms(int device, void* start, void* stop);  // waits for stop
void event_destroy(void* ev);
// Which kernel matmul_int4 runs for out[m, n] = x[m, k] W^T on `device` (W in `layout`), e.g. "wgmma r256 t16
// splits=4" (csrc/cuda/gemm_int4.cu, linear_plan). For the bench and the tests: it launches nothing.
std::string linear_path(int device, int64_t m, int64_t n, int64_t k, int group, int layout);
}  // namespace cudart

}  // namespace glm4
