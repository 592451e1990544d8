// Launchers of the CUDA kernels in csrc/cuda/*.cu, called by the torch glue in
// csrc/bindings/cuda.cpp. Plain C++ and CUDA runtime types only, no torch header: the .cu
// files must compile against a CPU build of torch (DESIGN.md "CUDA sources must compile
// without a CUDA build of torch"). Every pointer is to contiguous device memory on the
// device current for `stream`; the caller has validated shapes, dtypes and RoI values.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fastlocal::cuda {

// Accumulation type of a storage type (at::opmath_type without torch): float for
// __half, __nv_bfloat16 and float, double for double. RoIs come in this type too.
template <typename scalar_t>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};
template <typename scalar_t>
using opmath_t = typename OpMath<scalar_t>::type;

// Sizes and sampling shared by both directions of RoI-align-1D; one element per
// (RoI, channel, bin) of the [N, C, P] output / gradient.
struct RoiAlign1dShape {
  int64_t batch, channels, length;  // B, C, T
  int64_t num_rois, output_size;    // N, P
  int64_t sampling_ratio;           // samples per bin; <= 0: adaptive ceil(roi_length / P)
  bool aligned;

  __host__ __device__ int64_t elements() const { return num_rois * channels * output_size; }
};

// RoI-align-1D forward: input [B, C, T], rois [N, 3] rows (batch_index, start, end)
// -> output [N, C, P]. Same semantics as csrc/cpu/roi_align_1d.cpp.
template <typename scalar_t>
struct RoiAlign1dForwardParams {
  const scalar_t* input;
  const opmath_t<scalar_t>* rois;
  scalar_t* output;
  RoiAlign1dShape shape;
};

// RoI-align-1D backward: grad [N, C, P] is scattered into grad_input [B, C, T], which
// the caller zero-fills beforehand and casts to the storage type afterwards (atomicAdd
// needs the float/double accumulation type; the summation order is not deterministic).
template <typename scalar_t>
struct RoiAlign1dBackwardParams {
  const scalar_t* grad;
  const opmath_t<scalar_t>* rois;
  opmath_t<scalar_t>* grad_input;
  RoiAlign1dShape shape;
};

// Instantiated for __half, __nv_bfloat16, float and double in roi_align_1d.cu.
template <typename scalar_t>
cudaError_t launch_roi_align_1d_forward(const RoiAlign1dForwardParams<scalar_t>& params,
                                        cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_roi_align_1d_backward(const RoiAlign1dBackwardParams<scalar_t>& params,
                                         cudaStream_t stream);

// 1-D NMS, IoU bitmask stage (torchvision's scheme). Candidates are split in blocks of
// kNmsBlockSize; bit k of mask[i * col_blocks + b] (col_blocks = ceil(N / kNmsBlockSize))
// is set when candidate j = b * kNmsBlockSize + k comes after i (j > i) and
// IoU(i, j) > iou_threshold. Only the words with b >= i / kNmsBlockSize are written;
// those are all that the greedy pass over the sorted candidates reads.
constexpr int kNmsBlockSize = 64;  // bits in one mask word

template <typename scalar_t>
struct Nms1dParams {
  const scalar_t* segments;  // [N, 2] (start, end), sorted by decreasing score
  uint64_t* mask;            // [N, col_blocks]
  int64_t num_segments;      // N
  scalar_t iou_threshold;    // already rounded to scalar_t, as the CPU kernel does
};

// Instantiated for float and double in nms_1d.cu.
template <typename scalar_t>
cudaError_t launch_nms_1d_mask(const Nms1dParams<scalar_t>& params, cudaStream_t stream);

}  // namespace fastlocal::cuda
