// Declarations of the CPU kernels bound into fastlocal._C (see csrc/bindings/cpu.cpp).
// Arguments are validated in Python; each kernel re-checks what it indexes with.
#pragma once

#include <ATen/ATen.h>

namespace fastlocal::cpu {

// input [B, C, T] (any float dtype), rois [N, 3] float32/float64 (b, start, end) -> [N, C, P]
at::Tensor roi_align_1d_forward(const at::Tensor& input, const at::Tensor& rois, int64_t output_size,
                                int64_t sampling_ratio, bool aligned);
// grad [N, C, P] -> grad_input [B, C, T] (deterministic: one thread owns a channel)
at::Tensor roi_align_1d_backward(const at::Tensor& grad, const at::Tensor& rois, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned);

// segments [N, 2], scores [N] (float32/float64) -> kept indices, int64, by decreasing score
at::Tensor nms_1d(const at::Tensor& segments, const at::Tensor& scores, double iou_threshold);

}  // namespace fastlocal::cpu
