// Types shared by the CUDA kernels in csrc/cuda/*.cu and their torch glue in
// csrc/bindings/cuda_*.cpp. Plain C++ and CUDA runtime types only, no torch header: the .cu
// files must compile against a CPU build of torch (docs/design.md "CUDA sources must compile
// without a CUDA build of torch"). Each op declares its params struct and launcher in
// csrc/cuda/<op>.h; every pointer is to contiguous device memory on the device current for
// `stream`, and the caller has validated shapes, dtypes and values.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fastlocal::cuda {

// Accumulation type of a storage type (at::opmath_type without torch): float for
// __half, __nv_bfloat16 and float, double for double. RoIs come in this type too.
template <typename scalar_t>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};
template <typename scalar_t>
using opmath_t = typename OpMath<scalar_t>::type;

}  // namespace fastlocal::cuda
