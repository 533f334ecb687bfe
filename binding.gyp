# node-gyp build of the same addon, CPU backend only, from the same source list as CMakeLists.txt
# (sources.gypi). It is what `node-gyp rebuild` (and so node-gyp-build's and prebuildify's defaults) builds
# where cmake or nvcc is missing; scripts/build-native.mjs uses it as the fallback and CI builds it once.
{
  "includes": ["sources.gypi"],
  "targets": [
    {
      "target_name": "glm4_native",
      "sources": ["<@(glm4_host_sources)"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "csrc"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "GLM4_VERSION=\"<!(node -p \"require('./package.json').version\")\""],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2"],
      "cflags!": ["-fno-exceptions"]
    }
  ]
}
