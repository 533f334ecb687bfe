// Conversions between JS values and core types, and the one place where C++ errors become JS errors.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "core/context.h"
#include "ops.h"

namespace glm4 {
namespace napi {

// Runs fn; a glm4::Error becomes a JS Error with `code`, any other exception ERR_GLM4_INTERNAL.
template <typename F>
auto guard(Napi::Env env, F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const Error& e) {
    Napi::Error err = Napi::Error::New(env, e.what());
    err.Set("code", Napi::String::New(env, e.code()));
    throw err;
  } catch (const std::bad_alloc&) {
    Napi::Error err = Napi::Error::New(env, "out of host memory");
    err.Set("code", Napi::String::New(env, GLM4_E_OOM));
    throw err;
  } catch (const std::exception& e) {
    Napi::Error err = Napi::Error::New(env, std::string("internal error: ") + e.what());
    err.Set("code", Napi::String::New(env, GLM4_E_INTERNAL));
    throw err;
  }
}

[[noreturn]] inline void type_error(Napi::Env env, const std::string& msg) {
  Napi::TypeError err = Napi::TypeError::New(env, msg);
  err.Set("code", Napi::String::New(env, GLM4_E_INVALID_ARG));
  throw err;
}

DType parse_dtype(Napi::Env env, const Napi::Value& v);
std::vector<int64_t> parse_shape(Napi::Env env, const Napi::Value& v);
Device parse_device(Napi::Env env, const std::string& s);
Napi::Array shape_to_js(Napi::Env env, const std::vector<int64_t>& s);

// The bytes of a TypedArray or Buffer (a view into JS memory: valid while the JS object lives and is not resized).
struct HostBytes {
  const uint8_t* p = nullptr;
  int64_t len = 0;
};
HostBytes host_bytes(const Napi::Value& v, const char* what = "fromBuffer");

class TensorWrap;
Tensor tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what, bool optional = false);
QWeight qweight_arg(const Napi::CallbackInfo& info, size_t i);
Napi::Object wrap_tensor(Napi::Env env, Tensor t, std::shared_ptr<Context> ctx);

}  // namespace napi
}  // namespace glm4
