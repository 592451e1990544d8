// 1-D non-maximum suppression on CUDA, IoU bitmask stage (torchvision's scheme): the glue
// sorts the segments by decreasing score, this kernel marks which later candidates each
// candidate would suppress, and the glue runs the sequential greedy pass on the host.
// Semantics as csrc/cpu/nms_1d.cpp: IoU = inter / union, 0 when union <= 0, and a
// candidate is suppressed when IoU > iou_threshold.
#include <cuda_runtime.h>

#include <cstdint>

#include "exact_math.cuh"
#include "nms_1d.h"

namespace fastlocal::cuda {
namespace {

// Written as the CPU kernel's std::min / std::max / division, so that it decides alike.
template <typename scalar_t>
__host__ __device__ __forceinline__ bool iou_exceeds(scalar_t start_a, scalar_t end_a, scalar_t start_b,
                                                     scalar_t end_b, scalar_t threshold) {
  const scalar_t lo = start_b > start_a ? start_b : start_a;
  const scalar_t hi = end_b < end_a ? end_b : end_a;
  const scalar_t overlap = hi - lo;
  const scalar_t inter = scalar_t(0) < overlap ? overlap : scalar_t(0);
  const scalar_t uni = (end_a - start_a) + (end_b - start_b) - inter;
  return uni > scalar_t(0) && div_rn(inter, uni) > threshold;
}

// Block (x = column block, y = row block): thread k compares candidate
// row_block * 64 + k with the 64 candidates of the column block, staged in shared memory.
template <typename scalar_t>
__global__ void __launch_bounds__(kNmsBlockSize) nms_1d_mask_kernel(const Nms1dParams<scalar_t> p) {
  const int64_t row_block = blockIdx.y, col_block = blockIdx.x;
  // Candidates in earlier blocks are never suppressed by later ones: nothing to compute.
  if (col_block < row_block) return;
  const int64_t n = p.num_segments;
  const int64_t col_blocks = (n + kNmsBlockSize - 1) / kNmsBlockSize;
  const int64_t row_first = row_block * kNmsBlockSize, col_first = col_block * kNmsBlockSize;
  const int row_size = static_cast<int>(n - row_first < kNmsBlockSize ? n - row_first : kNmsBlockSize);
  const int col_size = static_cast<int>(n - col_first < kNmsBlockSize ? n - col_first : kNmsBlockSize);

  __shared__ scalar_t col_start[kNmsBlockSize], col_end[kNmsBlockSize];
  if (static_cast<int>(threadIdx.x) < col_size) {
    col_start[threadIdx.x] = p.segments[2 * (col_first + threadIdx.x)];
    col_end[threadIdx.x] = p.segments[2 * (col_first + threadIdx.x) + 1];
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) >= row_size) return;

  const int64_t i = row_first + threadIdx.x;
  const scalar_t start = p.segments[2 * i], end = p.segments[2 * i + 1];
  const scalar_t threshold = p.iou_threshold;
  uint64_t bits = 0;
  // Only later candidates (j > i) can be suppressed by i.
  for (int k = col_block == row_block ? static_cast<int>(threadIdx.x) + 1 : 0; k < col_size; ++k) {
    if (iou_exceeds(start, end, col_start[k], col_end[k], threshold)) bits |= uint64_t(1) << k;
  }
  p.mask[i * col_blocks + col_block] = bits;
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_nms_1d_mask(const Nms1dParams<scalar_t>& params, cudaStream_t stream) {
  const int64_t n = params.num_segments;
  if (n == 0) return cudaSuccess;
  // gridDim.y <= 65535 caps n at about 4.2M candidates; the [n, n / 64] mask (n^2 / 8
  // bytes) runs out of memory well before that.
  const auto col_blocks = static_cast<unsigned int>((n + kNmsBlockSize - 1) / kNmsBlockSize);
  nms_1d_mask_kernel<scalar_t><<<dim3(col_blocks, col_blocks), kNmsBlockSize, 0, stream>>>(params);
  return cudaGetLastError();
}

template cudaError_t launch_nms_1d_mask<float>(const Nms1dParams<float>&, cudaStream_t);
template cudaError_t launch_nms_1d_mask<double>(const Nms1dParams<double>&, cudaStream_t);

}  // namespace fastlocal::cuda
