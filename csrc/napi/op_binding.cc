#include "op_binding.h"

#include <cctype>

namespace glm4 {
namespace napi {

namespace {
// "(Context& c, const Tensor& out, float eps)" -> {"out", "eps"}: the last identifier of each parameter after the
// Context. The list's own text is the one source of the names.
std::vector<std::string> param_names(const char* params) {
  std::string s(params);
  const size_t open = s.find('('), close = s.rfind(')');
  s = s.substr(open + 1, close - open - 1);
  std::vector<std::string> names;
  size_t b = 0;
  while (b <= s.size()) {
    size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    std::string p = s.substr(b, e - b);
    size_t end = p.find_last_not_of(" \t\n");
    size_t beg = end;
    while (beg != std::string::npos && beg > 0 && (isalnum(static_cast<unsigned char>(p[beg - 1])) || p[beg - 1] == '_')) --beg;
    if (end != std::string::npos) names.push_back(p.substr(beg, end - beg + 1));
    b = e + 1;
  }
  if (!names.empty()) names.erase(names.begin());  // the Context
  return names;
}
}  // namespace

const std::vector<OpInfo>& op_infos() {
  static const std::vector<OpInfo> list = [] {
    std::vector<OpInfo> v;
#define GLM4_OP_INFO(name, js, params) v.push_back(OpInfo{#name, js, param_names(#params)});
    GLM4_OP_LIST(GLM4_OP_INFO)
#undef GLM4_OP_INFO
    return v;
  }();
  return list;
}

}  // namespace napi
}  // namespace glm4
