// Declarations of the CPU kernels bound into fastlocal._C (see csrc/bindings/cpu.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastlocal::cpu {

#include "../common/op_declarations.inc"  // IWYU pragma: export

// CPU only (no CUDA kernel, so not in op_declarations.inc). Non-maximum weighting per class
// (fastlocal/reference/nms_1d.py batched_nmw_1d): segments [N, 2], scores [N] > 0
// (float32/float64), idxs [N] int64 class ids; iou_threshold rounded to the dtype. Returns
// (merged segments [K, 2], picked indices [K] int64) in pick order, K <= max_output.
std::tuple<at::Tensor, at::Tensor> nmw_1d(const at::Tensor& segments, const at::Tensor& scores,
                                          const at::Tensor& idxs, double iou_threshold, int64_t max_output);

}  // namespace fastlocal::cpu
