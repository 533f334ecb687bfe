// Stand-ins for csrc/cuda/runtime.cu in builds without CUDA: report that there is none, never crash.
#if !defined(GLM4_WITH_CUDA)
#include "backend_cuda.h"

namespace glm4 {
namespace cudart {
bool compiled() { return false; }
int runtime_version() { return 0; }
int driver_version() { return 0; }
std::string status() { return "this build of the addon has no CUDA backend"; }
std::vector<DeviceInfo> devices() { return {}; }
std::string architectures() { return ""; }
[[noreturn]] static void none() { GLM4_FAIL(GLM4_E_NO_CUDA, "this build of the addon has no CUDA backend"); }
std::shared_ptr<Allocator> make_allocator(int) { none(); }
Tensor host_mapped(int, DType, const std::vector<int64_t>&, const void*, int64_t) { none(); }
void* stream_create(int) { none(); }
void stream_destroy(int, void*) {}
void stream_sync(int, void*) { none(); }
void memcpy_h2d(int, void*, const void*, int64_t, void*, bool) { none(); }
void memcpy_d2h(int, void*, const void*, int64_t, void*) { none(); }
void memcpy_d2d(int, void*, const void*, int64_t, void*) { none(); }
void graph_capture(int, void*, const std::function<void()>&, void**, void**) { none(); }
void graph_launch(int, void*, void*) { none(); }
void graph_destroy(void*, void*) {}
void check_last(const char*, const char*, int) {}
void* event_create(int) { none(); }
void event_record(int, void*, void*) { none(); }
double event_elapsed_ms(int, void*, void*) { none(); }
void event_destroy(void*) {}
std::string linear_path(int, int64_t, int64_t, int64_t, int, int) { none(); }
}  // namespace cudart
}  // namespace glm4
#endif
