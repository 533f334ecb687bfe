#include "convert.h"

#include "tensor_wrap.h"

namespace glm4 {
namespace napi {

DType parse_dtype(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) type_error(env, "dtype must be a string (f32, bf16, f16, i32, u8, i4)");
  const std::string s = v.As<Napi::String>();
  if (s == "f32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  if (s == "f16") return DType::F16;
  if (s == "i32") return DType::I32;
  if (s == "u8") return DType::U8;
  if (s == "i4") return DType::I4;
  type_error(env, "unknown dtype \"" + s + "\" (f32, bf16, f16, i32, u8, i4)");
}

std::vector<int64_t> parse_shape(Napi::Env env, const Napi::Value& v) {
  if (!v.IsArray()) type_error(env, "shape must be an array of non-negative integers");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> s;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value e = a[i];
    if (!e.IsNumber()) type_error(env, "shape must be an array of non-negative integers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d == static_cast<double>(static_cast<int64_t>(d)) && d < 1e12))
      type_error(env, "shape must be an array of non-negative integers");
    s.push_back(static_cast<int64_t>(d));
  }
  return s;
}

Device parse_device(Napi::Env env, const std::string& s) {
  if (s == "cpu") return Device{DeviceType::CPU, 0};
  if (s == "cuda") return Device{DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0) {
    try {
      size_t used = 0;
      int idx = std::stoi(s.substr(5), &used);
      if (used == s.size() - 5 && idx >= 0) return Device{DeviceType::CUDA, idx};
    } catch (...) {
    }
  }
  type_error(env, "device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + s + "\"");
}

Napi::Array shape_to_js(Napi::Env env, const std::vector<int64_t>& s) {
  Napi::Array a = Napi::Array::New(env, s.size());
  for (size_t i = 0; i < s.size(); ++i) a[i] = Napi::Number::New(env, static_cast<double>(s[i]));
  return a;
}

HostBytes host_bytes(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray()) type_error(v.Env(), std::string(what) + ": data must be a TypedArray or Buffer");
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  return HostBytes{static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset(),
                   static_cast<int64_t>(ta.ByteLength())};
}

Tensor tensor_arg(const Napi::CallbackInfo& info, size_t i, const char* what, bool optional) {
  Napi::Env env = info.Env();
  Napi::Value v = info[i];
  if (optional && (v.IsUndefined() || v.IsNull())) return Tensor();
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(TensorWrap::ctor->Value()))
    type_error(env, std::string("argument ") + std::to_string(i + 1) + " (" + what + ") must be a Tensor");
  return Napi::ObjectWrap<TensorWrap>::Unwrap(v.As<Napi::Object>())->tensor(env);
}

QWeight qweight_arg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  if (!info[i].IsObject()) type_error(env, "the int4 weight must be an object {codes, scales, zeros, groupSize, layout?, codebook?}");
  Napi::Object o = info[i].As<Napi::Object>();
  auto get_t = [&](const char* k) -> Tensor {
    Napi::Value v = o.Get(k);
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(TensorWrap::ctor->Value()))
      type_error(env, std::string("int4 weight: `") + k + "` must be a Tensor");
    return Napi::ObjectWrap<TensorWrap>::Unwrap(v.As<Napi::Object>())->tensor(env);
  };
  QWeight q;
  q.codes = get_t("codes");
  q.scales = get_t("scales");
  q.zeros = get_t("zeros");
  Napi::Value g = o.Get("groupSize");
  if (!g.IsNumber()) type_error(env, "int4 weight: `groupSize` must be a number (32, 64 or 128)");
  q.group = g.As<Napi::Number>().Int32Value();
  // layout and codebook: absent = 0; anything else than an integer is a TypeError (the dispatch checks the value).
  auto get_i = [&](const char* k) -> int {
    Napi::Value v = o.Get(k);
    if (v.IsUndefined()) return 0;
    const double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0.5;
    if (!(d >= -1e9 && d <= 1e9 && d == static_cast<double>(static_cast<int>(d))))
      type_error(env, std::string("int4 weight: `") + k + "` must be an integer");
    return static_cast<int>(d);
  };
  q.layout = get_i("layout");
  q.codebook = get_i("codebook");
  if (q.codes.ndim() == 2) {
    q.n = q.codes.dim(0);
    q.k = q.codes.dim(1);
  }
  return q;
}

Napi::Object wrap_tensor(Napi::Env env, Tensor t, std::shared_ptr<Context> ctx) {
  Napi::Object o = TensorWrap::ctor->New({});
  Napi::ObjectWrap<TensorWrap>::Unwrap(o)->set(std::move(t), std::move(ctx));
  return o;
}

}  // namespace napi
}  // namespace glm4
