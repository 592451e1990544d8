// Shared half of the torch-facing CUDA glue (csrc/bindings/cuda_<op>.cpp): dtype mapping,
// raw-pointer access, device checks, and the declarations bound into fastlocal._C_cuda by
// csrc/bindings/cuda.cpp. Built only when torch has CUDA; the kernels themselves live in
// csrc/cuda/*.cu behind plain launchers (DESIGN.md "CUDA sources must compile without a
// CUDA build of torch"). Signatures, semantics and error messages mirror csrc/cpu/ops.h.
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

// ---- ops (one csrc/bindings/cuda_<op>.cpp each) ----------------------------------------

at::Tensor roi_align_1d_forward(const at::Tensor& input, const at::Tensor& rois, int64_t output_size,
                                int64_t sampling_ratio, bool aligned);
at::Tensor roi_align_1d_backward(const at::Tensor& grad, const at::Tensor& rois, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned);
at::Tensor nms_1d(const at::Tensor& segments, const at::Tensor& scores, double iou_threshold);
std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                          const at::Tensor& v, int64_t keep,
                                                                          bool exclude_first, double scale,
                                                                          bool second_softmax);
std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index,
    const at::Tensor& lse, bool exclude_first, double scale, bool second_softmax);

std::tuple<at::Tensor, at::Tensor> local_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                                           const c10::optional<at::Tensor>& key_padding_mask,
                                                           int64_t left, int64_t right, bool shift, double scale,
                                                           double dropout_p, int64_t seed);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& key_padding_mask,
    int64_t left, int64_t right, bool shift, double scale, double dropout_p, int64_t seed);
at::Tensor local_attention_probs_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
                                         const c10::optional<at::Tensor>& rpb,
                                         const c10::optional<at::Tensor>& key_padding_mask, int64_t left,
                                         int64_t right, bool shift, double scale);
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_attention_probs_backward(
    const at::Tensor& grad, const at::Tensor& probs, const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
    const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& key_padding_mask, int64_t left,
    int64_t right, bool shift, double scale);

}  // namespace fastlocal::cuda
