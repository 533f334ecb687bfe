// Module entry: Context, Tensor, Plan, buildInfo(), devices(), opList(), linearPath().
#include <napi.h>

#include "convert.h"
#include "core/backend_cuda.h"
#include "op_binding.h"
#include "tensor_wrap.h"

#ifndef GLM4_VERSION
#define GLM4_VERSION "0.0.0"
#endif

namespace glm4 {
namespace napi {
Napi::Function init_context(Napi::Env env);
Napi::Function init_plan(Napi::Env env);

static std::string version_str(int v) {
  if (v <= 0) return "";
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

static Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("version", GLM4_VERSION);
  Napi::Array backends = Napi::Array::New(env);
  backends[uint32_t(0)] = Napi::String::New(env, "cpu");
  if (cudart::compiled()) backends[uint32_t(1)] = Napi::String::New(env, "cuda");
  o.Set("backends", backends);
  Napi::Array archs = Napi::Array::New(env);
  std::string a = cudart::architectures();
  uint32_t n = 0;
  for (size_t s = 0; s < a.size();) {
    size_t e = a.find(';', s);
    if (e == std::string::npos) e = a.size();
    if (e > s) archs[n++] = Napi::String::New(env, a.substr(s, e - s));
    s = e + 1;
  }
  o.Set("cudaArchitectures", archs);
  std::string rt = version_str(cudart::runtime_version());
  o.Set("cudaRuntimeVersion", rt.empty() ? env.Null() : Napi::String::New(env, rt));
  std::string dv = version_str(cudart::driver_version());
  o.Set("cudaDriverVersion", dv.empty() ? env.Null() : Napi::String::New(env, dv));
  o.Set("cudaStatus", cudart::status());
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
#if defined(__clang__)
  o.Set("compiler", "clang " __clang_version__);
#elif defined(__GNUC__)
  o.Set("compiler", "gcc " __VERSION__);
#endif
  return o;
}

static Napi::Value Devices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto devs = cudart::devices();
  Napi::Array arr = Napi::Array::New(env, devs.size());
  for (size_t i = 0; i < devs.size(); ++i) {
    const auto& d = devs[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", d.index);
    o.Set("name", d.name);
    o.Set("computeCapability", std::to_string(d.major) + "." + std::to_string(d.minor));
    o.Set("totalMemory", Napi::Number::New(env, static_cast<double>(d.total_bytes)));
    o.Set("freeMemory", Napi::Number::New(env, static_cast<double>(d.free_bytes)));
    o.Set("multiprocessors", d.multiprocessors);
    o.Set("l2CacheBytes", Napi::Number::New(env, static_cast<double>(d.l2_bytes)));
    arr[uint32_t(i)] = o;
  }
  return arr;
}

// opList(): [{name, method, args}] for every op of csrc/op_list.h, in its order: what the tests hold the op case
// table and the TypeScript NativeContext against.
static Napi::Value OpList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto& ops = op_infos();
  Napi::Array arr = Napi::Array::New(env, ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ops[i].name);
    o.Set("method", ops[i].method);
    Napi::Array args = Napi::Array::New(env, ops[i].args.size());
    for (size_t j = 0; j < ops[i].args.size(); ++j) args[uint32_t(j)] = Napi::String::New(env, ops[i].args[j]);
    o.Set("args", args);
    arr[uint32_t(i)] = o;
  }
  return arr;
}

// linearPath(m, n, k, group = 128, layout = 1, device = 0): the kernel matmul_int4 runs for that shape on that
// CUDA device (csrc/cuda/gemm_int4.cu, linear_plan), e.g. "gemv" or "wgmma r256 t128 splits=1".
static Napi::Value LinearPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto num = [&](size_t i, double dflt, const char* what) -> double {
    if (info.Length() <= i || info[i].IsUndefined()) return dflt;
    if (!info[i].IsNumber()) type_error(env, std::string("linearPath: ") + what + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  };
  auto range = [&](const char* msg) {
    Napi::RangeError err = Napi::RangeError::New(env, msg);
    err.Set("code", Napi::String::New(env, GLM4_E_INVALID_ARG));
    throw err;
  };
  const double m = num(0, -1, "m"), n = num(1, -1, "n"), k = num(2, -1, "k");
  const double g = num(3, 128, "group"), layout = num(4, 1, "layout"), dev = num(5, 0, "device");
  auto whole = [](double v) { return v >= 0 && v < 9.0e15 && v == static_cast<double>(static_cast<int64_t>(v)); };
  if (!whole(m) || !whole(n) || !whole(k) || m < 1 || n < 1 || k < 1)
    range("linearPath: m, n and k must be positive integers");
  if (!(g == 32 || g == 64 || g == 128)) range("linearPath: group must be 32, 64 or 128");
  if (!(layout == 0 || layout == 1)) range("linearPath: layout must be 0 or 1");
  if (!whole(dev)) range("linearPath: device must be a device index");
  const std::string path = guard(env, [&] {
    return cudart::linear_path(static_cast<int>(dev), static_cast<int64_t>(m), static_cast<int64_t>(n), static_cast<int64_t>(k),
                               static_cast<int>(g), static_cast<int>(layout));
  });
  return Napi::String::New(env, path);
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Tensor", TensorWrap::Init(env));
  exports.Set("Plan", init_plan(env));
  exports.Set("Context", init_context(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("devices", Napi::Function::New(env, Devices));
  exports.Set("opList", Napi::Function::New(env, OpList));
  exports.Set("linearPath", Napi::Function::New(env, LinearPath));
  return exports;
}

}  // namespace napi
}  // namespace glm4

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return glm4::napi::Init(env, exports); }
NODE_API_MODULE(glm4_native, InitAddon)
