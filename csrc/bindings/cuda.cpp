// Python bindings of the CUDA kernels: fastlocal._C_cuda, built only when torch has CUDA.
// This is the torch-facing half (argument checks, device guard, current stream,
// allocation, dtype dispatch); the kernels live in csrc/cuda/*.cu behind the plain
// launchers of launch.h (DESIGN.md "CUDA sources must compile without a CUDA build of
// torch"). Signatures, semantics and error messages mirror csrc/cpu/*.cpp.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include <cstdint>
#include <vector>

#include "../common/roi_checks.h"
#include "../cuda/launch.h"

namespace fastlocal::cuda {
namespace {

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
const cuda_type<scalar_t>* cuda_data(const at::Tensor& t) {
  return reinterpret_cast<const cuda_type<scalar_t>*>(t.const_data_ptr<scalar_t>());
}

template <typename scalar_t>
cuda_type<scalar_t>* cuda_mutable_data(at::Tensor& t) {
  return reinterpret_cast<cuda_type<scalar_t>*>(t.mutable_data_ptr<scalar_t>());
}

// A kernel reads raw device pointers: every tensor must live on the first one's GPU.
void check_on_device(const char* name, const at::Tensor& t, const at::Device& device) {
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, " (a CUDA tensor), got ", t.device());
}


}  // namespace

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

at::Tensor nms_1d(const at::Tensor& segments_, const at::Tensor& scores_, double iou_threshold) {
  check_detections(segments_, scores_);
  TORCH_CHECK_TYPE(segments_.scalar_type() == at::kFloat || segments_.scalar_type() == at::kDouble,
                   "segments must be float32 or float64, got ", segments_.scalar_type());
  TORCH_CHECK_VALUE(segments_.is_cuda(), "segments must be a CUDA tensor, got device ", segments_.device());
  check_on_device("scores", scores_, segments_.device());
  const c10::cuda::CUDAGuard device_guard(segments_.device());
  const int64_t N = segments_.size(0);
  if (N == 0) return at::empty({0}, segments_.options().dtype(at::kLong));

  // Same visiting order as the CPU kernel: decreasing score, equal scores in index order.
  const at::Tensor order = std::get<1>(scores_.sort(/*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted = segments_.index_select(0, order).contiguous();
  const int64_t col_blocks = (N + kNmsBlockSize - 1) / kNmsBlockSize;
  // uint64 words stored as int64 (same bits); only words on or right of the diagonal are
  // written, and only those are read below.
  at::Tensor mask = at::empty({N, col_blocks}, segments_.options().dtype(at::kLong));

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(sorted.scalar_type(), "nms_1d", [&] {
    Nms1dParams<scalar_t> params;
    params.segments = sorted.const_data_ptr<scalar_t>();
    params.mask = reinterpret_cast<uint64_t*>(mask.mutable_data_ptr<int64_t>());
    params.num_segments = N;
    params.iou_threshold = static_cast<scalar_t>(iou_threshold);  // as the CPU kernel rounds it
    C10_CUDA_CHECK(launch_nms_1d_mask(params, stream));
  });

  // The greedy pass is sequential: run it on the host over the copied mask (torchvision's
  // scheme). `removed` holds one bit per sorted candidate, set once a kept one suppresses it.
  const at::Tensor host_mask = mask.cpu();
  const auto* masks = reinterpret_cast<const uint64_t*>(host_mask.const_data_ptr<int64_t>());
  std::vector<uint64_t> removed(col_blocks, 0);
  std::vector<int64_t> kept;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t block = i / kNmsBlockSize;
    if ((removed[block] >> (i % kNmsBlockSize)) & 1) continue;
    kept.push_back(i);
    const uint64_t* row = masks + i * col_blocks;
    for (int64_t b = block; b < col_blocks; ++b) removed[b] |= row[b];
  }
  return order.index_select(0, at::tensor(kept, order.options()));
}

}  // namespace fastlocal::cuda

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastlocal CUDA kernels (kernels in csrc/cuda, glue in csrc/bindings/cuda.cpp)";
  m.def("roi_align_1d_forward", &fastlocal::cuda::roi_align_1d_forward);
  m.def("roi_align_1d_backward", &fastlocal::cuda::roi_align_1d_backward);
  m.def("nms_1d", &fastlocal::cuda::nms_1d);
}
