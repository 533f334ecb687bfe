// Long native work off the JS thread: run_async(env, work, to_js, keep) queues `work` on libuv's pool (an
// Napi::AsyncWorker) and returns a Promise. `work` runs on the worker thread and must not touch Node-API; it returns
// a plain C++ value, which `to_js` turns into the resolved value back on the JS thread. Every exception becomes a
// rejected promise whose Error carries the code (a glm4::Error's, ERR_GLM4_OUT_OF_MEMORY for bad_alloc,
// ERR_GLM4_INTERNAL otherwise), as the synchronous calls' guard() does. `keep` holds JS objects (a buffer being
// copied, the tensor written to) alive until the work has finished.
#pragma once
#include <napi.h>

#include <functional>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace glm4 {
namespace napi {

template <typename R>
class AsyncWork : public Napi::AsyncWorker {
 public:
  using Work = std::function<R()>;
  using ToJs = std::function<Napi::Value(Napi::Env, R&)>;
  AsyncWork(Napi::Env env, Work work, ToJs to_js, const std::vector<Napi::Value>& keep)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), work_(std::move(work)),
        to_js_(std::move(to_js)) {
    for (const auto& v : keep)
      if (v.IsObject()) keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }
  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      result_ = work_();
    } catch (const Error& e) {
      fail(e.code(), e.what());
    } catch (const std::bad_alloc&) {
      fail(GLM4_E_OOM, "out of host memory");
    } catch (const std::exception& e) {
      fail(GLM4_E_INTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
      fail(GLM4_E_INTERNAL, "internal error: unknown exception");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    Napi::Value v;
    try {
      v = to_js_(env, result_);
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
      return;
    }
    deferred_.Resolve(v);
  }
  void OnError(const Napi::Error& e) override {
    Napi::Error err = Napi::Error::New(Env(), e.Message());
    err.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(err.Value());
  }

 private:
  void fail(const std::string& code, const std::string& msg) {
    code_ = code;
    SetError(msg);
  }
  Napi::Promise::Deferred deferred_;
  Work work_;
  ToJs to_js_;
  R result_{};
  std::string code_;
  std::vector<Napi::ObjectReference> keep_;
};

// Work without a result resolves to undefined.
struct Nothing {};

template <typename R>
Napi::Promise run_async(Napi::Env env, std::function<R()> work, std::function<Napi::Value(Napi::Env, R&)> to_js,
                        const std::vector<Napi::Value>& keep = {}) {
  auto* w = new AsyncWork<R>(env, std::move(work), std::move(to_js), keep);
  Napi::Promise p = w->promise();
  w->Queue();
  return p;
}
inline Napi::Promise run_async(Napi::Env env, std::function<void()> work, const std::vector<Napi::Value>& keep = {}) {
  return run_async<Nothing>(
      env, [w = std::move(work)] { w(); return Nothing{}; }, [](Napi::Env e, Nothing&) { return e.Undefined(); },
      keep);
}

// For the *Async methods: fn's synchronous part (argument checks, allocation) may throw; such an error becomes a
// rejected promise too, so that callers see one way of failing.
template <typename F>
Napi::Value promise_of(Napi::Env env, F&& fn) {
  try {
    return fn();
  } catch (const Napi::Error& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(e.Value());
    return d.Promise();
  }
}

}  // namespace napi
}  // namespace glm4
