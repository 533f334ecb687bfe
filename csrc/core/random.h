// Counter-based random numbers: element i of a fill with seed s depends only on (s, i), so CPU and CUDA fills
// agree and any slice can be regenerated.
#pragma once
#include <cstdint>
#include <cmath>
#include "int4_layout.h"  // GLM4_HD

namespace glm4 {

GLM4_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Standard normal for element i (Box-Muller on two 24-bit uniforms).
GLM4_HD float normal_at(uint64_t seed, uint64_t i) {
  uint64_t r = splitmix64(seed * 0x2545f4914f6cdd1dull + i);
  float u1 = (static_cast<float>(r >> 40) + 0.5f) * (1.0f / 16777216.0f);
  float u2 = static_cast<float>((r >> 16) & 0xffffff) * (1.0f / 16777216.0f);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

}  // namespace glm4
