// Argument checks shared by the CPU kernels and the CUDA glue of roi_align_1d and nms_1d
// (nms_1d, soft_nms_1d, nmw_1d).
// Python validates first; these repeat every check whose failure would make a kernel
// read or write out of bounds (or loop for ever), so no call from Python can.
#pragma once

#include <ATen/ATen.h>

namespace fastlocal {

// Largest per-bin sample count of adaptive sampling (sampling_ratio = 0); mirrored by
// fastlocal/roi_align_1d.py. A longer RoI would make every backend loop ~len/P times per bin.
constexpr double kMaxAdaptiveSamples = 65536.0;
// Largest explicit sampling_ratio (fastlocal/roi_align_1d.py's MAX_SAMPLING_RATIO): every
// backend loops sampling_ratio times per bin, so 2**40 would run for hours.
constexpr int64_t kMaxSamplingRatio = 65536;

inline at::ScalarType roi_acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_rois(const at::Tensor& rois, int64_t batch, at::ScalarType input_dtype, int64_t output_size,
                       int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(rois.dim() == 2 && rois.size(1) == 3, "rois must have shape [N, 3], got ", rois.sizes());
  TORCH_CHECK_TYPE(rois.scalar_type() == roi_acc_dtype(input_dtype), "rois must be ", roi_acc_dtype(input_dtype),
                   " for ", input_dtype, " input, got ", rois.scalar_type());
  TORCH_CHECK_VALUE(output_size >= 1, "output_size must be >= 1, got ", output_size);
  TORCH_CHECK_VALUE(sampling_ratio >= 0, "sampling_ratio must be >= 0, got ", sampling_ratio);
  TORCH_CHECK_VALUE(sampling_ratio <= kMaxSamplingRatio, "sampling_ratio must be <= ", kMaxSamplingRatio,
                    " (samples per bin), got ", sampling_ratio);
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

// The backward's extra bounds: one grad row per RoI, taps inside [0, length).
inline void check_roi_backward(const at::Tensor& grad, const at::Tensor& rois, int64_t batch, int64_t length,
                               int64_t sampling_ratio) {
  TORCH_CHECK_VALUE(grad.dim() == 3, "grad must be [N, C, P], got ", grad.sizes());
  TORCH_CHECK_VALUE(batch >= 0 && length >= 0, "batch and length must be >= 0, got batch=", batch,
                    ", length=", length);
  check_rois(rois, batch, grad.scalar_type(), grad.size(2), sampling_ratio);
  TORCH_CHECK_VALUE(grad.size(0) == rois.size(0), "grad must have one row per RoI (rois has ", rois.size(0),
                    "), got ", grad.sizes());
  TORCH_CHECK_VALUE(length >= 1 || grad.numel() == 0, "length must be >= 1 when there are RoIs, got ", length);
}

// nms_1d's inputs: [N, 2] segments and [N] scores of one dtype.
inline void check_detections(const at::Tensor& segments, const at::Tensor& scores) {
  TORCH_CHECK_VALUE(segments.dim() == 2 && segments.size(1) == 2, "segments must be [N, 2], got ",
                    segments.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == segments.size(0),
                    "scores must be [N] with N = segments.size(0), got ", scores.sizes());
  TORCH_CHECK_TYPE(segments.scalar_type() == scores.scalar_type(), "segments and scores must share a dtype");
}

// soft_nms_1d's inputs: [B, N, 2] segments and [B, N] scores of one dtype, a [B, N] bool
// mask of the rows taking part, and max_output >= 0 picks per video.
inline void check_batched_detections(const at::Tensor& segments, const at::Tensor& scores, const at::Tensor& valid,
                                     int64_t max_output) {
  TORCH_CHECK_VALUE(segments.dim() == 3 && segments.size(2) == 2, "segments must be [B, N, 2], got ",
                    segments.sizes());
  TORCH_CHECK_VALUE(scores.dim() == 2 && scores.size(0) == segments.size(0) && scores.size(1) == segments.size(1),
                    "scores must be [B, N] to match segments ", segments.sizes(), ", got ", scores.sizes());
  TORCH_CHECK_VALUE(valid.sizes() == scores.sizes(), "valid must be [B, N] = ", scores.sizes(), ", got ",
                    valid.sizes());
  TORCH_CHECK_TYPE(segments.scalar_type() == scores.scalar_type(), "segments and scores must share a dtype");
  TORCH_CHECK_TYPE(valid.scalar_type() == at::kBool, "valid must be bool, got ", valid.scalar_type());
  TORCH_CHECK_VALUE(max_output >= 0, "max_output must be >= 0, got ", max_output);
}

// nmw_1d's inputs: [N, 2] segments and [N] scores of one dtype, [N] int64 class ids, and
// max_output >= 0 picks.
inline void check_classed_detections(const at::Tensor& segments, const at::Tensor& scores, const at::Tensor& idxs,
                                     int64_t max_output) {
  check_detections(segments, scores);
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == segments.size(0),
                    "idxs must be [N] with N = segments.size(0), got ", idxs.sizes());
  TORCH_CHECK_TYPE(idxs.scalar_type() == at::kLong, "idxs must be int64, got ", idxs.scalar_type());
  TORCH_CHECK_VALUE(max_output >= 0, "max_output must be >= 0, got ", max_output);
}

}  // namespace fastlocal
