// Shared half of the torch-facing CUDA glue (csrc/bindings/cuda_<op>.cpp): dtype mapping,
// raw-pointer access, device checks, and the declarations bound into fastlocal._C_cuda by
// csrc/bindings/cuda.cpp. Built only when torch has CUDA; the kernels themselves live in
// csrc/cuda/*.cu behind plain launchers (docs/design.md "CUDA sources must compile without a
// CUDA build of torch"). Signatures are csrc/common/op_declarations.inc, shared with the CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <tuple>

namespace fastlocal::cuda {

// The CUDA type behind each dispatched scalar type (same size and bit layout).
template <typename scalar_t>
struct CudaType {
  using type = scalar_t;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};
static_assert(sizeof(at::Half) == sizeof(__half) && alignof(at::Half) == alignof(__half));
static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16) && alignof(at::BFloat16) == alignof(__nv_bfloat16));

template <typename scalar_t>
using cuda_type = typename CudaType<scalar_t>::type;

template <typename scalar_t>
inline const cuda_type<scalar_t>* cuda_data(const at::Tensor& t) {
  return reinterpret_cast<const cuda_type<scalar_t>*>(t.const_data_ptr<scalar_t>());
}

template <typename scalar_t>
inline cuda_type<scalar_t>* cuda_mutable_data(at::Tensor& t) {
  return reinterpret_cast<cuda_type<scalar_t>*>(t.mutable_data_ptr<scalar_t>());
}

// A kernel reads raw device pointers: every tensor must live on the first one's GPU.
inline void check_on_device(const char* name, const at::Tensor& t, const at::Device& device) {
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, " (a CUDA tensor), got ", t.device());
}

// The ops, one csrc/bindings/cuda_<op>.cpp each: the CPU kernels' signatures.
#include "../common/op_declarations.inc"  // IWYU pragma: export

}  // namespace fastlocal::cuda
