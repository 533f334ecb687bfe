// The N-API side of the op list (csrc/op_list.h): each op's JS method reads its arguments in the order of its C++
// parameters (after the Context) by their types, and calls the dispatch layer. Also the list itself, as opList()
// gives it to JavaScript (name, JS method, argument names).
#pragma once
#include <napi.h>

#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "convert.h"

namespace glm4 {
namespace napi {

struct OpInfo {
  const char* name;               // C++ name: "rotary_kv_write"
  const char* method;             // JS method of Context: "rotaryKvWrite"
  std::vector<std::string> args;  // parameter names after the Context: {"q", "k", ...}
};

// Every op of csrc/op_list.h, in its order.
const std::vector<OpInfo>& op_infos();

enum class OpId : size_t {
#define GLM4_OP_ID(name, js, params) name,
  GLM4_OP_LIST(GLM4_OP_ID)
#undef GLM4_OP_ID
  count
};

// How one JS argument becomes a C++ argument of an op, by the parameter's type.
template <typename T>
struct JsArg;
template <>
struct JsArg<const Tensor&> {
  using type = Tensor;
  static Tensor get(const Napi::CallbackInfo& info, size_t i, const std::string& name) {
    return tensor_arg(info, i, name.c_str(), /*optional=*/true);  // undefined/null: the dispatch says "missing"
  }
};
template <>
struct JsArg<const QWeight&> {
  using type = QWeight;
  static QWeight get(const Napi::CallbackInfo& info, size_t i, const std::string&) { return qweight_arg(info, i); }
};
template <>
struct JsArg<float> {
  using type = float;
  static float get(const Napi::CallbackInfo& info, size_t i, const std::string& name) {
    if (!info[i].IsNumber()) type_error(info.Env(), name + " must be a number");
    return info[i].As<Napi::Number>().FloatValue();
  }
};
template <>
struct JsArg<int64_t> {
  using type = int64_t;
  static int64_t get(const Napi::CallbackInfo& info, size_t i, const std::string& name) {
    const double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : 0.5;
    if (!(d > -9007199254740992.0 && d < 9007199254740992.0 && d == static_cast<double>(static_cast<int64_t>(d))))
      type_error(info.Env(), name + " must be an integer");
    return static_cast<int64_t>(d);
  }
};
// Read as a double (exact for integers below 2^53): through a float, seeds above 2^24 collapsed onto each other
// (2^31 + 5 and 2^31 + 6 gave the same fill).
template <>
struct JsArg<uint64_t> {
  using type = uint64_t;
  static uint64_t get(const Napi::CallbackInfo& info, size_t i, const std::string& name) {
    const double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1.0;
    if (!(d >= 0 && d < 9007199254740992.0 && d == static_cast<double>(static_cast<uint64_t>(d))))
      type_error(info.Env(), name + " must be a non-negative integer below 2^53");
    return static_cast<uint64_t>(d);
  }
};

namespace detail {
template <typename... A, size_t... I>
void call_op(void (*fn)(Context&, A...), Context& c, const Napi::CallbackInfo& info, const OpInfo& op,
             std::index_sequence<I...>) {
  // A braced list reads the arguments left to right, so the first bad argument is the one reported.
  std::tuple<typename JsArg<A>::type...> args{JsArg<A>::get(info, I, op.args[I])...};
  std::apply([&](auto&... a) { fn(c, a...); }, args);
}
}  // namespace detail

// Reads the JS arguments of op `op` and calls fn (its ops:: function). More arguments than the op takes is a
// TypeError: it catches a caller written against another version of the op.
template <typename... A>
void call_op(void (*fn)(Context&, A...), Context& c, const Napi::CallbackInfo& info, const OpInfo& op) {
  if (info.Length() > sizeof...(A))
    type_error(info.Env(), std::string(op.method) + " takes " + std::to_string(sizeof...(A)) + " arguments (" +
                               [&] {
                                 std::string s;
                                 for (const auto& a : op.args) s += (s.empty() ? "" : ", ") + a;
                                 return s;
                               }() +
                               "), got " + std::to_string(info.Length()));
  detail::call_op(fn, c, info, op, std::index_sequence_for<A...>{});
}

}  // namespace napi
}  // namespace glm4
