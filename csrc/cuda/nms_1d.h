// Launcher of csrc/cuda/nms_1d.cu (params: csrc/cuda/common.h conventions).
#pragma once

#include "common.h"

namespace fastlocal::cuda {

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
