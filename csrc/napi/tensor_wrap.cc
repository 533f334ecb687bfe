#include "tensor_wrap.h"

#include <cstring>

#include "async_work.h"

namespace glm4 {
namespace napi {

Napi::FunctionReference* TensorWrap::ctor = nullptr;

Napi::Function TensorWrap::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "Tensor",
                                 {
                                     InstanceAccessor<&TensorWrap::DType>("dtype"),
                                     InstanceAccessor<&TensorWrap::Shape>("shape"),
                                     InstanceAccessor<&TensorWrap::DeviceName>("device"),
                                     InstanceAccessor<&TensorWrap::Nbytes>("nbytes"),
                                     InstanceAccessor<&TensorWrap::Disposed>("disposed"),
                                     InstanceMethod<&TensorWrap::Read>("read"),
                                     InstanceMethod<&TensorWrap::Write>("write"),
                                     InstanceMethod<&TensorWrap::WriteAsync>("writeAsync"),
                                     InstanceMethod<&TensorWrap::Slice0>("slice0"),
                                     InstanceMethod<&TensorWrap::Reshape>("reshape"),
                                     InstanceMethod<&TensorWrap::Dispose>("dispose"),
                                 });
  ctor = new Napi::FunctionReference(Napi::Persistent(f));
  return f;
}

TensorWrap::TensorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorWrap>(info) {}

const Tensor& TensorWrap::tensor(Napi::Env env) const {
  if (!t_.defined()) {
    Napi::Error err = Napi::Error::New(env, "this tensor was disposed (or never created by a Context); create a new one");
    err.Set("code", Napi::String::New(env, GLM4_E_DISPOSED));
    throw err;
  }
  return t_;
}

Napi::Value TensorWrap::DType(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), dtype_name(tensor(info.Env()).dtype()));
}
Napi::Value TensorWrap::Shape(const Napi::CallbackInfo& info) { return shape_to_js(info.Env(), tensor(info.Env()).shape()); }
Napi::Value TensorWrap::DeviceName(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), tensor(info.Env()).device().name());
}
Napi::Value TensorWrap::Nbytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(tensor(info.Env()).nbytes()));
}
Napi::Value TensorWrap::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !t_.defined()); }

// read(): a new typed array with the tensor's contents (f32 -> Float32Array, bf16/f16 -> Uint16Array,
// i32 -> Int32Array, u8/i4 -> Uint8Array). Runs everything recorded on the context first.
Napi::Value TensorWrap::Read(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Tensor& t = tensor(env);
  return guard(env, [&]() -> Napi::Value {
    const int64_t bytes = t.nbytes();
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, static_cast<size_t>(bytes));
    ctx_->download(t, ab.Data(), bytes);
    switch (t.dtype()) {
      case glm4::DType::F32: return Napi::Float32Array::New(env, bytes / 4, ab, 0);
      case glm4::DType::BF16:
      case glm4::DType::F16: return Napi::Uint16Array::New(env, bytes / 2, ab, 0);
      case glm4::DType::I32: return Napi::Int32Array::New(env, bytes / 4, ab, 0);
      default: return Napi::Uint8Array::New(env, bytes, ab, 0);
    }
  });
}

// write(typedArray | Buffer): recorded; the bytes are copied now, so the caller may reuse its buffer.
Napi::Value TensorWrap::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Tensor& t = tensor(env);
  if (!info[0].IsTypedArray() && !info[0].IsBuffer()) type_error(env, "write: data must be a TypedArray or Buffer");
  Napi::TypedArray ta = info[0].As<Napi::TypedArray>();
  const uint8_t* p = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  std::vector<uint8_t> bytes(p, p + ta.ByteLength());
  guard(env, [&] { ctx_->write(t, std::move(bytes)); });
  return env.Undefined();
}

// writeAsync(typedArray | Buffer): runs what is recorded on the context, then copies the bytes straight from the
// caller's buffer on a worker thread (no copy on the JS thread); the buffer must stay unchanged, and the tensor
// unused, until the promise settles.
Napi::Value TensorWrap::WriteAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return promise_of(env, [&]() -> Napi::Value {
    const Tensor& t = tensor(env);
    const HostBytes b = host_bytes(info[0], "writeAsync");
    auto cx = ctx_;
    guard(env, [&] {
      GLM4_CHECK(b.len == t.nbytes(), GLM4_E_SHAPE, "writeAsync: ", b.len, " bytes given for ", t.describe(), " (",
                 t.nbytes(), " bytes)");
      GLM4_CHECK(!cx->capturing(), GLM4_E_INVALID_ARG, "writeAsync: host writes cannot be part of a captured plan");
    });
    Tensor dst = t;
    return run_async(
        env,
        [cx, dst, b] {
          cx->flush();
          cx->exclusive([&] { cx->upload(dst, b.p, b.len); });
        },
        {info[0], info.This()});
  });
}

Napi::Value TensorWrap::Slice0(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Tensor& t = tensor(env);
  if (!info[0].IsNumber() || !info[1].IsNumber()) type_error(env, "slice0(begin, end): integers expected");
  return guard(env, [&] {
    return wrap_tensor(env, t.slice0(info[0].As<Napi::Number>().Int64Value(), info[1].As<Napi::Number>().Int64Value()), ctx_);
  });
}

Napi::Value TensorWrap::Reshape(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Tensor& t = tensor(env);
  auto shape = parse_shape(env, info[0]);
  return guard(env, [&] { return wrap_tensor(env, t.reshape(shape), ctx_); });
}

Napi::Value TensorWrap::Dispose(const Napi::CallbackInfo& info) {
  t_ = Tensor();
  ctx_.reset();
  return info.Env().Undefined();
}

}  // namespace napi
}  // namespace glm4
