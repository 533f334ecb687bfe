{
  "variables": {
    "glm4_host_sources": [
      "csrc/core/tensor.cc",
      "csrc/core/context.cc",
      "csrc/core/dispatch.cc",
      "csrc/core/no_cuda.cc",
      "csrc/cpu/embedding.cc",
      "csrc/cpu/rmsnorm.cc",
      "csrc/cpu/int4.cc",
      "csrc/cpu/matmul.cc",
      "csrc/cpu/rotary.cc",
      "csrc/cpu/attention.cc",
      "csrc/cpu/elementwise.cc",
      "csrc/cpu/sampling.cc",
      "csrc/napi/convert.cc",
      "csrc/napi/op_binding.cc",
      "csrc/napi/tensor_wrap.cc",
      "csrc/napi/context_wrap.cc",
      "csrc/napi/addon.cc"
    ],
    "glm4_cuda_sources": [
      "csrc/cuda/runtime.cu",
      "csrc/cuda/embedding.cu",
      "csrc/cuda/rmsnorm.cu",
      "csrc/cuda/int4.cu",
      "csrc/cuda/gemm_int4.cu",
      "csrc/cuda/gemv_int4.cu",
      "csrc/cuda/matmul.cu",
      "csrc/cuda/rotary.cu",
      "csrc/cuda/attention.cu",
      "csrc/cuda/elementwise.cu",
      "csrc/cuda/sampling.cu"
    ]
  }
}
