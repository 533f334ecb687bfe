// Context: a device with its own memory, stream and op queue. Each op method validates and records; flush()
// runs the queue (flushAsync() on a worker thread, returning a Promise). The op methods are generated from the op
// list (csrc/op_list.h, csrc/napi/op_binding.h).
#include <napi.h>

#include "convert.h"
#include "core/backend_cuda.h"
#include "op_binding.h"
#include "tensor_wrap.h"

namespace glm4 {
namespace napi {

class PlanWrap : public Napi::ObjectWrap<PlanWrap> {
 public:
  static Napi::FunctionReference* ctor;
  static Napi::Function Init(Napi::Env env) {
    Napi::Function f = DefineClass(env, "Plan", {InstanceAccessor<&PlanWrap::Ops>("ops"),
                                                 InstanceMethod<&PlanWrap::Dispose>("dispose")});
    ctor = new Napi::FunctionReference(Napi::Persistent(f));
    return f;
  }
  explicit PlanWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<PlanWrap>(info) {}
  std::shared_ptr<Plan> plan;

 private:
  Napi::Value Ops(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), plan ? static_cast<double>(plan->ops.size()) : 0);
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    plan.reset();
    return info.Env().Undefined();
  }
};
Napi::FunctionReference* PlanWrap::ctor = nullptr;

class FlushWorker : public Napi::AsyncWorker {
 public:
  FlushWorker(Napi::Env env, std::shared_ptr<Context> ctx)
      : Napi::AsyncWorker(env), ctx_(std::move(ctx)), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      ctx_->flush();
    } catch (const Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::exception& e) {
      code_ = GLM4_E_INTERNAL;
      SetError(std::string("internal error: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  std::shared_ptr<Context> ctx_;
  Napi::Promise::Deferred deferred_;
  std::string code_;
};

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    std::vector<Napi::ClassPropertyDescriptor<ContextWrap>> props{
        InstanceAccessor<&ContextWrap::DeviceName>("device"),
        InstanceMethod<&ContextWrap::Empty>("empty"),
        InstanceMethod<&ContextWrap::FromBuffer>("fromBuffer"),
        InstanceMethod<&ContextWrap::Flush>("flush"),
        InstanceMethod<&ContextWrap::FlushAsync>("flushAsync"),
        InstanceMethod<&ContextWrap::Memory>("memory"),
        InstanceMethod<&ContextWrap::ResetPeak>("resetPeak"),
        InstanceMethod<&ContextWrap::BeginCapture>("beginCapture"),
        InstanceMethod<&ContextWrap::EndCapture>("endCapture"),
        InstanceMethod<&ContextWrap::Replay>("replay"),
        InstanceMethod<&ContextWrap::Profile>("profile"),
        InstanceMethod<&ContextWrap::Dispose>("dispose"),
#define GLM4_OP_METHOD(name, js, params) \
  InstanceMethod<&ContextWrap::CallOp<&::glm4::ops::name, static_cast<size_t>(OpId::name)>>(js),
        GLM4_OP_LIST(GLM4_OP_METHOD)
#undef GLM4_OP_METHOD
    };
    return DefineClass(env, "Context", props);
  }

  // new Context(device: string, threads?: number)
  explicit ContextWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ContextWrap>(info) {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) type_error(env, "new Context(device): device must be \"cpu\" or \"cuda:N\"");
    Device d = parse_device(env, info[0].As<Napi::String>());
    int threads = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
    ctx_ = guard(env, [&] { return Context::create(d, threads); });
  }

 private:
  Context& ctx(Napi::Env env) {
    if (!ctx_ || ctx_->disposed()) {
      Napi::Error err = Napi::Error::New(env, "this Context was disposed; create a new one");
      err.Set("code", Napi::String::New(env, GLM4_E_DISPOSED));
      throw err;
    }
    return *ctx_;
  }

  Napi::Value DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), ctx(info.Env()).device().name()); }

  Napi::Value Empty(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    DType dt = parse_dtype(env, info[0]);
    auto shape = parse_shape(env, info[1]);
    return guard(env, [&] { return wrap_tensor(env, c.empty(dt, shape), ctx_); });
  }

  // fromBuffer(dtype, shape, data): a new tensor holding a copy of data (byte length must match).
  Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    DType dt = parse_dtype(env, info[0]);
    auto shape = parse_shape(env, info[1]);
    if (!info[2].IsTypedArray()) type_error(env, "fromBuffer: data must be a TypedArray or Buffer");
    Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
    const uint8_t* p = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    const int64_t len = static_cast<int64_t>(ta.ByteLength());
    return guard(env, [&] {
      Tensor t = c.empty(dt, shape);
      GLM4_CHECK(len == t.nbytes(), GLM4_E_SHAPE, "fromBuffer: ", len, " bytes given for ", t.describe(), " which needs ",
                 t.nbytes());
      c.upload(t, p, len);
      return wrap_tensor(env, t, ctx_);
    });
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Context& c = ctx(info.Env());
    guard(info.Env(), [&] { c.flush(); });
    return info.Env().Undefined();
  }
  Napi::Value FlushAsync(const Napi::CallbackInfo& info) {
    ctx(info.Env());
    auto* w = new FlushWorker(info.Env(), ctx_);
    Napi::Promise p = w->promise();
    w->Queue();
    return p;
  }
  Napi::Value Memory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("inUse", Napi::Number::New(env, static_cast<double>(c.allocator()->bytes_in_use())));
    o.Set("peak", Napi::Number::New(env, static_cast<double>(c.allocator()->peak_bytes())));
    o.Set("allocations", Napi::Number::New(env, static_cast<double>(c.allocator()->allocations())));
    return o;
  }
  Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
    ctx(info.Env()).allocator()->reset_peak();
    return info.Env().Undefined();
  }
  Napi::Value BeginCapture(const Napi::CallbackInfo& info) {
    Context& c = ctx(info.Env());
    guard(info.Env(), [&] { c.begin_capture(); });
    return info.Env().Undefined();
  }
  Napi::Value EndCapture(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    auto plan = guard(env, [&] { return c.end_capture(); });
    Napi::Object o = PlanWrap::ctor->New({});
    Napi::ObjectWrap<PlanWrap>::Unwrap(o)->plan = plan;
    return o;
  }
  Napi::Value Replay(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(PlanWrap::ctor->Value()))
      type_error(env, "replay(plan): plan must come from endCapture()");
    auto plan = Napi::ObjectWrap<PlanWrap>::Unwrap(info[0].As<Napi::Object>())->plan;
    if (!plan) type_error(env, "replay(plan): the plan was disposed");
    guard(env, [&] { c.replay(plan); });
    return env.Undefined();
  }
  // profile(plan, reps): [{op, ms}] per op of the plan (mean of reps runs, each op timed on its own).
  Napi::Value Profile(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(PlanWrap::ctor->Value()))
      type_error(env, "profile(plan, reps): plan must come from endCapture()");
    auto plan = Napi::ObjectWrap<PlanWrap>::Unwrap(info[0].As<Napi::Object>())->plan;
    if (!plan) type_error(env, "profile(plan): the plan was disposed");
    int reps = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 10;
    auto res = guard(env, [&] { return c.profile(*plan, reps); });
    Napi::Array arr = Napi::Array::New(env, res.size());
    for (size_t i = 0; i < res.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("op", res[i].first);
      o.Set("ms", res[i].second);
      arr[uint32_t(i)] = o;
    }
    return arr;
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (ctx_) guard(info.Env(), [&] { ctx_->dispose(); });
    return info.Env().Undefined();
  }

  // Every op of csrc/op_list.h: arguments read by their C++ types (op_binding.h), then validated and recorded.
  template <auto Fn, size_t Id>
  Napi::Value CallOp(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    guard(env, [&] { call_op(Fn, c, info, op_infos()[Id]); });
    return env.Undefined();
  }

  std::shared_ptr<Context> ctx_;
};

Napi::Function init_context(Napi::Env env) { return ContextWrap::Init(env); }
Napi::Function init_plan(Napi::Env env) { return PlanWrap::Init(env); }

}  // namespace napi
}  // namespace glm4
