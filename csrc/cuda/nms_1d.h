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

namespace fastlocal::cuda {

// Soft-NMS, one block of kSoftNmsThreads per video (semantics: csrc/cpu/nms_1d.cpp
// soft_nms_1d). The current scores live in shared memory when N of them fit (else in
// `work`); each round is one sweep that decays and drops, then a block-wide argmax.
constexpr int kSoftNmsThreads = 512;

template <typename scalar_t>
struct SoftNms1dParams {
  const scalar_t* segments;  // [B, N, 2] (start, end)
  const scalar_t* scores;    // [B, N]
  const bool* valid;         // [B, N]: the rows taking part
  scalar_t* work;            // [B, N] scratch for the current scores (used when they do not fit in shared memory)
  int64_t* out_index;        // [B, K], pre-filled with -1: picks in order
  scalar_t* out_score;       // [B, K], pre-filled with 0: their decayed scores
  int64_t* counts;           // [B]: picks per video
  int64_t batch;             // B
  int64_t num_segments;      // N
  int64_t max_output;        // K = min(max_output, N)
  scalar_t sigma, iou_threshold, score_threshold;  // rounded to scalar_t, as the CPU kernel does
  bool gaussian;             // else linear
};

// Instantiated for float and double in nms_1d.cu.
template <typename scalar_t>
cudaError_t launch_soft_nms_1d(const SoftNms1dParams<scalar_t>& params, cudaStream_t stream);

}  // namespace fastlocal::cuda
