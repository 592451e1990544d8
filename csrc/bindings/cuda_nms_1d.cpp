// Torch glue of the CUDA 1-D NMS and soft-NMS (csrc/cuda/nms_1d.cu); mirrors csrc/cpu/nms_1d.cpp.
#include <ATen/Dispatch.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../common/roi_align_1d_checks.h"
#include "../cuda/nms_1d.h"
#include "cuda_glue.h"

namespace fastlocal::cuda {

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

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_1d(const at::Tensor& segments_, const at::Tensor& scores_,
                                                           const at::Tensor& valid_, double sigma,
                                                           double iou_threshold, double score_threshold,
                                                           bool gaussian, int64_t max_output) {
  check_batched_detections(segments_, scores_, valid_, max_output);
  TORCH_CHECK_TYPE(segments_.scalar_type() == at::kFloat || segments_.scalar_type() == at::kDouble,
                   "segments must be float32 or float64, got ", segments_.scalar_type());
  TORCH_CHECK_VALUE(segments_.is_cuda(), "segments must be a CUDA tensor, got device ", segments_.device());
  check_on_device("scores", scores_, segments_.device());
  check_on_device("valid", valid_, segments_.device());
  const c10::cuda::CUDAGuard device_guard(segments_.device());
  const at::Tensor segments = segments_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  const at::Tensor valid = valid_.contiguous();
  const int64_t B = segments.size(0), N = segments.size(1);
  TORCH_CHECK_VALUE(B <= INT32_MAX, "soft_nms_1d runs one CUDA block per video: at most ", INT32_MAX,
                    " videos, got ", B);
  const int64_t K = std::min(max_output, N);
  at::Tensor indices = at::full({B, K}, -1, segments.options().dtype(at::kLong));
  at::Tensor decayed = at::zeros({B, K}, scores.options());
  at::Tensor counts = at::zeros({B}, segments.options().dtype(at::kLong));
  at::Tensor work = at::empty({B, N}, scores.options());  // used when N scores overflow shared memory

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES(segments.scalar_type(), "soft_nms_1d", [&] {
    SoftNms1dParams<scalar_t> params;
    params.segments = segments.const_data_ptr<scalar_t>();
    params.scores = scores.const_data_ptr<scalar_t>();
    params.valid = valid.const_data_ptr<bool>();
    params.work = work.mutable_data_ptr<scalar_t>();
    params.out_index = indices.mutable_data_ptr<int64_t>();
    params.out_score = decayed.mutable_data_ptr<scalar_t>();
    params.counts = counts.mutable_data_ptr<int64_t>();
    params.batch = B;
    params.num_segments = N;
    params.max_output = K;
    // Rounded to the dtype, as the CPU kernel rounds them.
    params.sigma = static_cast<scalar_t>(sigma);
    params.iou_threshold = static_cast<scalar_t>(iou_threshold);
    params.score_threshold = static_cast<scalar_t>(score_threshold);
    params.gaussian = gaussian;
    C10_CUDA_CHECK(launch_soft_nms_1d(params, stream));
  });
  return {indices, decayed, counts};
}

}  // namespace fastlocal::cuda
