// Torch glue of the CUDA RoI-align-1D kernels (csrc/cuda/roi_align_1d.cu); mirrors csrc/cpu/roi_align_1d.cpp.
#include <ATen/Dispatch.h>

#include <algorithm>

#include "../common/roi_align_1d_checks.h"
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

namespace {

// Largest sample count of any RoI: sampling_ratio, or ceil(len / P) computed with the
// kernel's IEEE operations (roi_sampling in roi_align_1d.cu), at least 1.
int64_t max_sample_count(const at::Tensor& rois, int64_t output_size, int64_t sampling_ratio, bool aligned) {
  if (sampling_ratio > 0) return sampling_ratio;
  const double shift = aligned ? 0.5 : 0.0;
  const at::Tensor start = rois.select(1, 1) - shift;
  at::Tensor len = (rois.select(1, 2) - shift) - start;
  if (!aligned) len = len.clamp_min(1.0);
  return std::max<int64_t>(1, static_cast<int64_t>((len / double(output_size)).ceil().max().item<double>()));
}

// Bitwise-reproducible backward for torch.use_deterministic_algorithms(True): sort-and-reduce
// instead of float atomics (steps in roi_align_1d.h, RoiAlign1dTapsParams).
at::Tensor roi_align_1d_backward_deterministic(const at::Tensor& grad, const at::Tensor& rois, int64_t batch,
                                               int64_t length, int64_t sampling_ratio, bool aligned) {
  const int64_t N = grad.size(0), C = grad.size(1), P = grad.size(2), T = length;
  const int64_t max_count = max_sample_count(rois, P, sampling_ratio, aligned);
  const int64_t frames = batch * T;
  at::Tensor keys = at::full({N * P * max_count * 2}, frames, grad.options().dtype(at::kLong));
  at::Tensor weights = at::zeros({keys.size(0)}, grad.options().dtype(rois.scalar_type()));
  at::Tensor grad_input = at::empty({batch, C, T}, grad.options());
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  const RoiAlign1dShape shape{batch, C, T, N, P, sampling_ratio, aligned};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_taps", [&] {
    using kernel_t = cuda_type<scalar_t>;
    using acc_t = opmath_t<kernel_t>;
    RoiAlign1dTapsParams<kernel_t> taps;
    taps.rois = rois.const_data_ptr<acc_t>();
    taps.keys = keys.mutable_data_ptr<int64_t>();
    taps.weights = weights.mutable_data_ptr<acc_t>();
    taps.shape = shape;
    taps.max_count = max_count;
    C10_CUDA_CHECK(launch_roi_align_1d_taps(taps, stream));
  });
  // A stable sort keeps each frame's taps in slot order: the summation order is fixed.
  const auto [sorted_keys, order] = keys.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor source = at::div(order, 2 * max_count, "floor");
  const at::Tensor sorted_weights = weights.index_select(0, order);
  const at::Tensor offsets = at::searchsorted(sorted_keys, at::arange(frames + 1, keys.options()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_gather", [&] {
    using kernel_t = cuda_type<scalar_t>;
    using acc_t = opmath_t<kernel_t>;
    RoiAlign1dGatherParams<kernel_t> gather;
    gather.grad = cuda_data<scalar_t>(grad);
    gather.source = source.const_data_ptr<int64_t>();
    gather.weights = sorted_weights.const_data_ptr<acc_t>();
    gather.offsets = offsets.const_data_ptr<int64_t>();
    gather.grad_input = cuda_mutable_data<scalar_t>(grad_input);
    gather.shape = shape;
    C10_CUDA_CHECK(launch_roi_align_1d_gather(gather, stream));
  });
  return grad_input;
}

}  // namespace

at::Tensor roi_align_1d_backward(const at::Tensor& grad_, const at::Tensor& rois_, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(grad_.is_cuda(), "grad must be a CUDA tensor, got device ", grad_.device());
  check_on_device("rois", rois_, grad_.device());
  const c10::cuda::CUDAGuard device_guard(grad_.device());
  check_roi_backward(grad_, rois_, batch, length, sampling_ratio);
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = grad.size(0), C = grad.size(1), P = grad.size(2), T = length;
  if (N == 0 || C == 0) return at::zeros({batch, C, T}, grad.options());
  if (at::globalContext().deterministicAlgorithms()) {
    return roi_align_1d_backward_deterministic(grad, rois, batch, length, sampling_ratio, aligned);
  }
  // atomicAdd accumulates in float/double; the result is cast to grad's dtype at the end.
  at::Tensor grad_input = at::zeros({batch, C, T}, grad.options().dtype(roi_acc_dtype(grad.scalar_type())));

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
