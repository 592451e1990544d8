// Launchers of csrc/cuda/roi_align_1d.cu (params: csrc/cuda/common.h conventions).
#pragma once

#include "common.h"

namespace fastlocal::cuda {

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

// Deterministic backward (torch.use_deterministic_algorithms), sort-and-reduce in three steps:
// 1. launch_roi_align_1d_taps: sample i of bin p of RoI n writes its two taps to slots
//    s = ((n * P + p) * max_count + i) * 2 + {0, 1}: keys[s] = batch * T + frame and
//    weights[s]; the caller pre-fills keys with the sentinel B * T, which unused samples keep.
// 2. the caller sorts the keys stably (slot order within a frame) and finds each frame's run
//    [offsets[f], offsets[f + 1]); source[k] = slot / (2 * max_count) = n * P + p.
// 3. launch_roi_align_1d_gather: one thread per grad_input element (b, c, t) sums
//    weights[k] * grad[n, c, p] over its frame's run in that order and stores it once.
template <typename scalar_t>
struct RoiAlign1dTapsParams {
  const opmath_t<scalar_t>* rois;
  int64_t* keys;                   // [N * P * max_count * 2]
  opmath_t<scalar_t>* weights;     // same size
  RoiAlign1dShape shape;
  int64_t max_count;  // >= every RoI's sample count
};

template <typename scalar_t>
struct RoiAlign1dGatherParams {
  const scalar_t* grad;                // [N, C, P]
  const int64_t* source;               // sorted taps: n * P + p
  const opmath_t<scalar_t>* weights;   // sorted taps: weight
  const int64_t* offsets;              // [B * T + 1]
  scalar_t* grad_input;                // [B, C, T], every element written
  RoiAlign1dShape shape;
};

// Instantiated for __half, __nv_bfloat16, float and double in roi_align_1d.cu.
template <typename scalar_t>
cudaError_t launch_roi_align_1d_forward(const RoiAlign1dForwardParams<scalar_t>& params,
                                        cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_roi_align_1d_backward(const RoiAlign1dBackwardParams<scalar_t>& params,
                                         cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_roi_align_1d_taps(const RoiAlign1dTapsParams<scalar_t>& params, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_roi_align_1d_gather(const RoiAlign1dGatherParams<scalar_t>& params, cudaStream_t stream);

}  // namespace fastlocal::cuda
