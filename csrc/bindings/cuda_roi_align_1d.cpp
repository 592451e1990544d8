// Torch glue of the CUDA RoI-align-1D kernels (csrc/cuda/roi_align_1d.cu); mirrors csrc/cpu/roi_align_1d.cpp.
#include <ATen/Dispatch.h>

#include "../common/roi_checks.h"
#include "../cuda/roi_align_1d.h"
#include "cuda_glue.h"

namespace fastlocal::cuda {

at::Tensor roi_align_1d_forward(const at::Tensor& input_, const at::Tensor& rois_, int64_t output_size,
                                int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(input_.dim() == 3, "input must be [B, C, T], got ", input_.sizes());
  TORCH_CHECK_VALUE(input_.is_cuda(), "input must be a CUDA tensor, got device ", input_.device());
  check_on_device("rois", rois_, input_.device());
  const c10::cuda::CUDAGuard device_guard(input_.device());
  check_rois(rois_, input_.size(0), input_.scalar_type(), output_size, sampling_ratio);
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = rois.size(0), C = input.size(1), T = input.size(2), P = output_size;
  at::Tensor out = at::empty({N, C, P}, input.options());
  if (N == 0 || C == 0) return out;
  TORCH_CHECK_VALUE(T >= 1, "input must have length >= 1 along T, got ", input.sizes());

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_1d_forward", [&] {
    using kernel_t = cuda_type<scalar_t>;
    RoiAlign1dForwardParams<kernel_t> params;
    params.input = cuda_data<scalar_t>(input);
    params.rois = rois.const_data_ptr<opmath_t<kernel_t>>();
    params.output = cuda_mutable_data<scalar_t>(out);
    params.shape = {input.size(0), C, T, N, P, sampling_ratio, aligned};
    C10_CUDA_CHECK(launch_roi_align_1d_forward(params, stream));
  });
  return out;
}

at::Tensor roi_align_1d_backward(const at::Tensor& grad_, const at::Tensor& rois_, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(grad_.is_cuda(), "grad must be a CUDA tensor, got device ", grad_.device());
  check_on_device("rois", rois_, grad_.device());
  const c10::cuda::CUDAGuard device_guard(grad_.device());
  check_roi_backward(grad_, rois_, batch, length, sampling_ratio);
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = grad.size(0), C = grad.size(1), P = grad.size(2), T = length;
  const at::ScalarType acc_type = roi_acc_dtype(grad.scalar_type());
  // atomicAdd accumulates in float/double; the result is cast to grad's dtype at the end.
  at::Tensor grad_input = at::zeros({batch, C, T}, grad.options().dtype(acc_type));
  if (N == 0 || C == 0) return grad_input.to(grad.scalar_type());

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward", [&] {
    using kernel_t = cuda_type<scalar_t>;
    using acc_t = opmath_t<kernel_t>;
    RoiAlign1dBackwardParams<kernel_t> params;
    params.grad = cuda_data<scalar_t>(grad);
    params.rois = rois.const_data_ptr<acc_t>();
    params.grad_input = grad_input.mutable_data_ptr<acc_t>();
    params.shape = {batch, C, T, N, P, sampling_ratio, aligned};
    C10_CUDA_CHECK(launch_roi_align_1d_backward(params, stream));
  });
  return grad_input.to(grad.scalar_type());
}

}  // namespace fastlocal::cuda
