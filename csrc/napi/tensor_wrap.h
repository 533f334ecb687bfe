#pragma once
#include <napi.h>

#include "convert.h"

namespace glm4 {
namespace napi {

class TensorWrap : public Napi::ObjectWrap<TensorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::FunctionReference* ctor;
  explicit TensorWrap(const Napi::CallbackInfo& info);

  const Tensor& tensor(Napi::Env env) const;
  void set(Tensor t, std::shared_ptr<Context> ctx) {
    t_ = std::move(t);
    ctx_ = std::move(ctx);
  }

 private:
  Napi::Value DType(const Napi::CallbackInfo& info);
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value Nbytes(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value WriteAsync(const Napi::CallbackInfo& info);
  Napi::Value Slice0(const Napi::CallbackInfo& info);
  Napi::Value Reshape(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  Tensor t_;
  std::shared_ptr<Context> ctx_;
};

}  // namespace napi
}  // namespace glm4
