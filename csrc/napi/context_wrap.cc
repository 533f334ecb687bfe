// Context: a device with its own memory, stream and op queue. Each op method validates and records; flush()
// runs the queue (flushAsync() on a worker thread, returning a Promise).
#include <napi.h>

#include "convert.h"
#include "core/backend_cuda.h"
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
    return DefineClass(
        env, "Context",
        {
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
            InstanceMethod<&ContextWrap::Embedding>("embedding"),
            InstanceMethod<&ContextWrap::RmsNorm>("rmsnorm"),
            InstanceMethod<&ContextWrap::QuantizeInt4>("quantizeInt4"),
            InstanceMethod<&ContextWrap::DequantizeInt4>("dequantizeInt4"),
            InstanceMethod<&ContextWrap::MatmulInt4>("matmulInt4"),
            InstanceMethod<&ContextWrap::Matmul>("matmul"),
            InstanceMethod<&ContextWrap::AddBias>("addBias"),
            InstanceMethod<&ContextWrap::Rotary>("rotary"),
            InstanceMethod<&ContextWrap::KvWrite>("kvWrite"),
            InstanceMethod<&ContextWrap::RotaryKvWrite>("rotaryKvWrite"),
            InstanceMethod<&ContextWrap::Attention>("attention"),
            InstanceMethod<&ContextWrap::SwiGlu>("swiglu"),
            InstanceMethod<&ContextWrap::Add>("add"),
            InstanceMethod<&ContextWrap::AddRmsNorm>("addRmsnorm"),
            InstanceMethod<&ContextWrap::Argmax>("argmax"),
            InstanceMethod<&ContextWrap::Softmax>("softmax"),
            InstanceMethod<&ContextWrap::Convert>("convert"),
            InstanceMethod<&ContextWrap::FillRandom>("fillRandom"),
            InstanceMethod<&ContextWrap::Sample>("sample"),
            InstanceMethod<&ContextWrap::Copy>("copy"),
        });
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
  static float num(const Napi::CallbackInfo& info, size_t i, const char* what) {
    if (!info[i].IsNumber()) type_error(info.Env(), std::string(what) + " must be a number");
    return info[i].As<Napi::Number>().FloatValue();
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

#define GLM4_OP_BODY(...)                              \
  Napi::Env env = info.Env();                          \
  Context& c = ctx(env);                               \
  guard(env, [&] { __VA_ARGS__; });                    \
  return env.Undefined();

  Napi::Value Embedding(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::embedding(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "table"), tensor_arg(info, 2, "ids")))
  }
  Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::rmsnorm(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x"), tensor_arg(info, 2, "weight"),
                              num(info, 3, "eps")))
  }
  Napi::Value QuantizeInt4(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::quantize_int4(c, qweight_arg(info, 0), tensor_arg(info, 1, "w")))
  }
  Napi::Value DequantizeInt4(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::dequantize_int4(c, tensor_arg(info, 0, "out"), qweight_arg(info, 1)))
  }
  Napi::Value MatmulInt4(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::matmul_int4(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x"), qweight_arg(info, 2),
                                  tensor_arg(info, 3, "bias", true)))
  }
  Napi::Value Matmul(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::matmul(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x"), tensor_arg(info, 2, "w"),
                             tensor_arg(info, 3, "bias", true)))
  }
  Napi::Value AddBias(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::add_bias(c, tensor_arg(info, 0, "x"), tensor_arg(info, 1, "bias")))
  }
  Napi::Value Rotary(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::rotary(c, tensor_arg(info, 0, "x"), tensor_arg(info, 1, "positions"),
                             static_cast<int64_t>(num(info, 2, "rotDim")), num(info, 3, "theta")))
  }
  Napi::Value KvWrite(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::kv_write(c, tensor_arg(info, 0, "kcache"), tensor_arg(info, 1, "vcache"), tensor_arg(info, 2, "k"),
                               tensor_arg(info, 3, "v"), tensor_arg(info, 4, "positions")))
  }
  // rotaryKvWrite(q, k, v, kcache, vcache, positions, rows, rotDim, theta)
  Napi::Value RotaryKvWrite(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::rotary_kv_write(c, tensor_arg(info, 0, "q"), tensor_arg(info, 1, "k"), tensor_arg(info, 2, "v"),
                                      tensor_arg(info, 3, "kcache"), tensor_arg(info, 4, "vcache"),
                                      tensor_arg(info, 5, "positions"), tensor_arg(info, 6, "rows"),
                                      static_cast<int64_t>(num(info, 7, "rotDim")), num(info, 8, "theta")))
  }
  Napi::Value Attention(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::attention(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "q"), tensor_arg(info, 2, "kcache"),
                                tensor_arg(info, 3, "vcache"), tensor_arg(info, 4, "positions"),
                                tensor_arg(info, 6, "start", true), num(info, 5, "scale")))
  }
  Napi::Value SwiGlu(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::swiglu(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "gateUp")))
  }
  Napi::Value Add(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::add(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "a"), tensor_arg(info, 2, "b")))
  }
  // addRmsnorm(out, x, o, weight, eps)
  Napi::Value AddRmsNorm(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::add_rmsnorm(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x"), tensor_arg(info, 2, "o"),
                                  tensor_arg(info, 3, "weight"), num(info, 4, "eps")))
  }
  Napi::Value Argmax(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::argmax(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x")))
  }
  Napi::Value Softmax(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::softmax(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "x"),
                              info[2].IsUndefined() ? 1.f : num(info, 2, "temperature")))
  }
  Napi::Value Convert(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::convert(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "in")))
  }
  // The seed is read as a double (exact for integers below 2^53): through num()'s float, seeds above 2^24 collapsed
  // onto each other (2^31 + 5 and 2^31 + 6 gave the same fill).
  static uint64_t seed_arg(const Napi::CallbackInfo& info, size_t i) {
    const double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= 0 && d < 9007199254740992.0 && d == static_cast<double>(static_cast<uint64_t>(d))))
      type_error(info.Env(), "seed must be a non-negative integer below 2^53");
    return static_cast<uint64_t>(d);
  }
  Napi::Value FillRandom(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::fill_random(c, tensor_arg(info, 0, "out"), seed_arg(info, 1), num(info, 2, "mean"),
                                  num(info, 3, "std")))
  }
  Napi::Value Sample(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::sample(c, tensor_arg(info, 0, "out"), tensor_arg(info, 1, "logits"), tensor_arg(info, 2, "params"),
                             tensor_arg(info, 3, "topK")))
  }
  Napi::Value Copy(const Napi::CallbackInfo& info) {
    GLM4_OP_BODY(ops::copy(c, tensor_arg(info, 0, "dst"), tensor_arg(info, 1, "src")))
  }

  std::shared_ptr<Context> ctx_;
};

Napi::Function init_context(Napi::Env env) { return ContextWrap::Init(env); }
Napi::Function init_plan(Napi::Env env) { return PlanWrap::Init(env); }

}  // namespace napi
}  // namespace glm4
