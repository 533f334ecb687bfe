// Errors that cross into JavaScript. Every failure in the native layer is a glm4::Error carrying a stable
// code (ERR_GLM4_*) and a message that names the op, the shapes involved and where it was raised
// (file:line); the N-API layer turns it into a JS Error with `code`. Nothing aborts the process.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace glm4 {

class Error : public std::runtime_error {
 public:
  Error(std::string code, const std::string& msg) : std::runtime_error(msg), code_(std::move(code)) {}
  const std::string& code() const { return code_; }

 private:
  std::string code_;
};

namespace detail {
inline void cat(std::ostringstream&) {}
template <typename T, typename... R>
void cat(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  cat(os, rest...);
}
}  // namespace detail

template <typename... A>
std::string str(const A&... a) {
  std::ostringstream os;
  detail::cat(os, a...);
  return os.str();
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

[[noreturn]] inline void fail(const char* code, const char* file, int line, const std::string& msg) {
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/') base = p + 1;
  throw Error(code, str(msg, " (", base, ":", line, ")"));
}

}  // namespace glm4

// Error codes shared with lib/errors.ts.
#define GLM4_E_INVALID_ARG "ERR_GLM4_INVALID_ARGUMENT"
#define GLM4_E_SHAPE "ERR_GLM4_SHAPE_MISMATCH"
#define GLM4_E_DTYPE "ERR_GLM4_DTYPE_MISMATCH"
#define GLM4_E_DEVICE "ERR_GLM4_DEVICE_MISMATCH"
#define GLM4_E_OOM "ERR_GLM4_OUT_OF_MEMORY"
#define GLM4_E_CUDA "ERR_GLM4_CUDA"
#define GLM4_E_NO_CUDA "ERR_GLM4_NO_CUDA"
#define GLM4_E_DISPOSED "ERR_GLM4_DISPOSED"
#define GLM4_E_INTERNAL "ERR_GLM4_INTERNAL"
#define GLM4_E_UNSUPPORTED "ERR_GLM4_UNSUPPORTED"

// GLM4_CHECK(cond, code, parts...): throw glm4::Error(code, "parts... (file:line)") when cond is false.
#define GLM4_CHECK(cond, code, ...)                                             \
  do {                                                                          \
    if (!(cond)) ::glm4::fail(code, __FILE__, __LINE__, ::glm4::str(__VA_ARGS__)); \
  } while (0)
#define GLM4_FAIL(code, ...) ::glm4::fail(code, __FILE__, __LINE__, ::glm4::str(__VA_ARGS__))
