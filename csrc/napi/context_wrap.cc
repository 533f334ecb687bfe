// Context: a device with its own memory, stream and op queue. Each op method validates and records; flush()
// runs the queue. The long calls have *Async variants that run on a worker thread and return a Promise (flushAsync,
// fromBufferAsync, endCaptureAsync, profileAsync; Tensor.writeAsync). The op methods are generated from the op
// list (csrc/op_list.h, csrc/napi/op_binding.h).
#include <napi.h>

#include "async_work.h"
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

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    std::vector<Napi::ClassPropertyDescriptor<ContextWrap>> props{
        InstanceAccessor<&ContextWrap::DeviceName>("device"),
        InstanceMethod<&ContextWrap::Empty>("empty"),
        InstanceMethod<&ContextWrap::FromBuffer>("fromBuffer"),
        InstanceMethod<&ContextWrap::FromBufferAsync>("fromBufferAsync"),
        InstanceMethod<&ContextWrap::HostMapped>("hostMapped"),
        InstanceMethod<&ContextWrap::Flush>("flush"),
        InstanceMethod<&ContextWrap::FlushAsync>("flushAsync"),
        InstanceMethod<&ContextWrap::Memory>("memory"),
        InstanceMethod<&ContextWrap::ResetPeak>("resetPeak"),
        InstanceMethod<&ContextWrap::TrimCache>("trimCache"),
        InstanceMethod<&ContextWrap::BeginCapture>("beginCapture"),
        InstanceMethod<&ContextWrap::EndCapture>("endCapture"),
        InstanceMethod<&ContextWrap::EndCaptureAsync>("endCaptureAsync"),
        InstanceMethod<&ContextWrap::Replay>("replay"),
        InstanceMethod<&ContextWrap::Profile>("profile"),
        InstanceMethod<&ContextWrap::ProfileAsync>("profileAsync"),
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
    Tensor t = new_for_buffer(info, "fromBuffer");
    const HostBytes b = host_bytes(info[2]);
    return guard(env, [&] {
      c.upload(t, b.p, b.len);
      return wrap_tensor(env, t, ctx_);
    });
  }
  // fromBufferAsync(dtype, shape, data): the same, the copy on a worker thread (the tensor is allocated at once);
  // data must stay unchanged until the promise settles.
  Napi::Value FromBufferAsync(const Napi::CallbackInfo& info) {
    return promise_of(info.Env(), [&] {
      ctx(info.Env());
      Tensor t = new_for_buffer(info, "fromBufferAsync");
      const HostBytes b = host_bytes(info[2]);
      auto cx = ctx_;
      return run_async<Tensor>(
          info.Env(), [cx, t, b] { cx->exclusive([&] { cx->upload(t, b.p, b.len); }); return t; },
          [cx](Napi::Env e, Tensor& r) -> Napi::Value { return wrap_tensor(e, r, cx); }, {info[2]});
    });
  }

  // hostMapped(dtype, shape, data): on CUDA a tensor in page-locked host memory mapped for the device (data copied
  // in; kernels read it over the bus: the embedding table of a device-fed step); on the CPU a plain tensor.
  Napi::Value HostMapped(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    if (c.device().type != DeviceType::CUDA) return FromBuffer(info);
    const DType dt = parse_dtype(env, info[0]);
    const auto shape = parse_shape(env, info[1]);
    const HostBytes b = host_bytes(info[2], "hostMapped");
    return guard(env, [&] {
      Tensor t = cudart::host_mapped(c.device().index, dt, shape, b.p, b.len);
      return wrap_tensor(env, t, ctx_);
    });
  }

  Napi::Value Flush(const Napi::CallbackInfo& info) {
    Context& c = ctx(info.Env());
    guard(info.Env(), [&] { c.flush(); });
    return info.Env().Undefined();
  }
  Napi::Value FlushAsync(const Napi::CallbackInfo& info) {
    return promise_of(info.Env(), [&] {
      ctx(info.Env());
      auto cx = ctx_;
      return run_async(info.Env(), [cx] { cx->flush(); });
    });
  }
  Napi::Value Memory(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("inUse", Napi::Number::New(env, static_cast<double>(c.allocator()->bytes_in_use())));
    o.Set("peak", Napi::Number::New(env, static_cast<double>(c.allocator()->peak_bytes())));
    o.Set("allocations", Napi::Number::New(env, static_cast<double>(c.allocator()->allocations())));
    o.Set("cached", Napi::Number::New(env, static_cast<double>(c.allocator()->cached_bytes())));
    return o;
  }
  // trimCache(): freed blocks the allocator keeps for reuse go back to the driver.
  Napi::Value TrimCache(const Napi::CallbackInfo& info) {
    Context& c = ctx(info.Env());
    guard(info.Env(), [&] { c.allocator()->trim(); });
    return info.Env().Undefined();
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
    return wrap_plan(plan);
  }
  // endCaptureAsync(): ends the capture at once (later ops are not part of it) and, on CUDA, records and
  // instantiates the plan's CUDA graph on a worker thread; resolves to the plan.
  Napi::Value EndCaptureAsync(const Napi::CallbackInfo& info) {
    return promise_of(info.Env(), [&] {
      Context& c = ctx(info.Env());
      auto plan = guard(info.Env(), [&] { return c.end_capture(); });
      auto cx = ctx_;
      return run_async<std::shared_ptr<Plan>>(
          info.Env(), [cx, plan] { cx->instantiate(*plan); return plan; },
          [](Napi::Env, std::shared_ptr<Plan>& p) -> Napi::Value { return wrap_plan(p); });
    });
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
    auto plan = plan_arg(info, 0, "profile");
    const int reps = reps_arg(info, 1);
    auto res = guard(env, [&] { return c.profile(*plan, reps); });
    return profile_to_js(env, res);
  }
  Napi::Value ProfileAsync(const Napi::CallbackInfo& info) {
    return promise_of(info.Env(), [&] {
      ctx(info.Env());
      auto plan = plan_arg(info, 0, "profileAsync");
      const int reps = reps_arg(info, 1);
      auto cx = ctx_;
      using Res = std::vector<std::pair<std::string, double>>;
      return run_async<Res>(
          info.Env(), [cx, plan, reps] { return cx->profile(*plan, reps); },
          [](Napi::Env e, Res& r) -> Napi::Value { return profile_to_js(e, r); }, {info[0]});
    });
  }

  // ---- helpers of the methods above

  static Napi::Object wrap_plan(const std::shared_ptr<Plan>& plan) {
    Napi::Object o = PlanWrap::ctor->New({});
    Napi::ObjectWrap<PlanWrap>::Unwrap(o)->plan = plan;
    return o;
  }
  static std::shared_ptr<Plan> plan_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
    if (!info[i].IsObject() || !info[i].As<Napi::Object>().InstanceOf(PlanWrap::ctor->Value()))
      type_error(info.Env(), std::string(what) + "(plan): plan must come from endCapture()");
    auto plan = Napi::ObjectWrap<PlanWrap>::Unwrap(info[i].As<Napi::Object>())->plan;
    if (!plan) type_error(info.Env(), std::string(what) + "(plan): the plan was disposed");
    return plan;
  }
  static int reps_arg(const Napi::CallbackInfo& info, size_t i) {
    if (info[i].IsUndefined()) return 10;
    const double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0;
    if (!(d >= 1 && d <= 1e6 && d == static_cast<double>(static_cast<int>(d))))
      type_error(info.Env(), "profile: reps must be an integer in [1, 1e6]");
    return static_cast<int>(d);
  }
  static Napi::Value profile_to_js(Napi::Env env, const std::vector<std::pair<std::string, double>>& res) {
    Napi::Array arr = Napi::Array::New(env, res.size());
    for (size_t i = 0; i < res.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("op", res[i].first);
      o.Set("ms", res[i].second);
      arr[uint32_t(i)] = o;
    }
    return arr;
  }
  // A new tensor of (dtype, shape) = (info[0], info[1]) for the bytes of info[2], checked to have its size.
  Tensor new_for_buffer(const Napi::CallbackInfo& info, const char* what) {
    Napi::Env env = info.Env();
    Context& c = ctx(env);
    DType dt = parse_dtype(env, info[0]);
    auto shape = parse_shape(env, info[1]);
    const HostBytes b = host_bytes(info[2], what);
    return guard(env, [&] {
      Tensor t = c.empty(dt, shape);
      GLM4_CHECK(b.len == t.nbytes(), GLM4_E_SHAPE, what, ": ", b.len, " bytes given for ", t.describe(), " which needs ",
                 t.nbytes());
      return t;
    });
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
