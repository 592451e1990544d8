// Torch glue of the CUDA 1-D NMS (csrc/cuda/nms_1d.cu); mirrors csrc/cpu/nms_1d.cpp.
#include <ATen/Dispatch.h>

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

}  // namespace fastlocal::cuda
