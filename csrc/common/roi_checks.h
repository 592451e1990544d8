// Argument checks shared by the CPU kernel and the CUDA glue of roi_align_1d.
// Python validates first; these repeat every check whose failure would make a kernel
// read or write out of bounds (or loop for ever), so no call from Python can.
#pragma once

#include <ATen/ATen.h>

namespace fastlocal {

// Largest per-bin sample count of adaptive sampling (sampling_ratio = 0); mirrored by
// fastlocal/roi_align.py. A longer RoI would make every backend loop ~len/P times per bin.
constexpr double kMaxAdaptiveSamples = 65536.0;

inline at::ScalarType roi_acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_rois(const at::Tensor& rois, int64_t batch, at::ScalarType input_dtype, int64_t output_size,
                       int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 3, "rois must have shape [N, 3], got ", rois.sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == roi_acc_dtype(input_dtype), "rois must be ", roi_acc_dtype(input_dtype),
                   " for ", input_dtype, " input, got ", rois.scalar_type());
  TORCH_CHECK_VALUE(output_size >= 1, "output_size must be >= 1, got ", output_size);
  TORCH_CHECK_VALUE(sampling_ratio >= 0, "sampling_ratio must be >= 0, got ", sampling_ratio);
  if (rois.size(0) == 0) return;
  const at::Tensor b = rois.select(1, 0);
  TORCH_CHECK_VALUE(rois.isfinite().all().item<bool>(), "rois must be finite");
  TORCH_CHECK_VALUE(((b >= 0) & (b < batch) & (b == b.floor())).all().item<bool>(),
                    "rois[:, 0] must hold integer batch indices in [0, ", batch, ")");
  if (sampling_ratio == 0) {
    const double longest = ((rois.select(1, 2) - rois.select(1, 1)) / double(output_size)).max().item<double>();
    TORCH_CHECK_VALUE(longest <= kMaxAdaptiveSamples, "rois: adaptive sampling (sampling_ratio=0) would take ",
                      longest, " samples per bin (limit ", kMaxAdaptiveSamples,
                      "); pass sampling_ratio > 0 or shorter RoIs");
  }
}

}  // namespace fastlocal
