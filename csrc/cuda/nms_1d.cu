// 1-D non-maximum suppression on CUDA.
// Hard NMS, IoU bitmask stage (torchvision's scheme): the glue sorts the segments by
// decreasing score, this kernel marks which later candidates each candidate would
// suppress, and the glue runs the sequential greedy pass on the host.
// Soft-NMS: one block per video runs the whole loop (decay sweep + block-wide argmax per round).
// Semantics as csrc/cpu/nms_1d.cpp: IoU = inter / union, 0 when union <= 0, and a
// candidate is suppressed when IoU > iou_threshold.
#include <cuda_runtime.h>

#include <cfloat>
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

namespace {

template <typename scalar_t>
struct Limits;
template <>
struct Limits<float> {
  __device__ static float tiny() { return FLT_MIN; }
};
template <>
struct Limits<double> {
  __device__ static double tiny() { return DBL_MIN; }
};

// exp(x) without --use_fast_math's approximate expf: float goes through the double exp
// (correctly rounded but for rare double roundings), as glibc's expf on the CPU is.
__device__ __forceinline__ float exp_precise(float x) { return static_cast<float>(exp(static_cast<double>(x))); }
__device__ __forceinline__ double exp_precise(double x) { return exp(x); }

// The CPU kernel's decayed score, rounded step by step alike (no FMA, no fast division).
template <typename scalar_t>
__device__ __forceinline__ scalar_t soft_decay(const SoftNms1dParams<scalar_t>& p, scalar_t value, scalar_t start_a,
                                               scalar_t end_a, scalar_t start_b, scalar_t end_b) {
  const scalar_t lo = start_b > start_a ? start_b : start_a;
  const scalar_t hi = end_b < end_a ? end_b : end_a;
  const scalar_t overlap = sub_rn(hi, lo);
  const scalar_t inter = scalar_t(0) < overlap ? overlap : scalar_t(0);
  const scalar_t uni = sub_rn(add_rn(sub_rn(end_a, start_a), sub_rn(end_b, start_b)), inter);
  const scalar_t tiny = Limits<scalar_t>::tiny();
  const scalar_t iou = uni > scalar_t(0) ? div_rn(inter, uni > tiny ? uni : tiny) : scalar_t(0);
  if (p.gaussian) {
    if (iou > scalar_t(0)) value = mul_rn(value, exp_precise(div_rn(-mul_rn(iou, iou), p.sigma)));
  } else if (iou > p.iou_threshold) {
    value = mul_rn(value, sub_rn(scalar_t(1), iou));
  }
  return value;
}

template <typename scalar_t>
struct Candidate {
  scalar_t value;
  int64_t index;
};

// The higher score; on equal scores the lower index (the CPU kernel's first maximum).
template <typename scalar_t>
__device__ __forceinline__ Candidate<scalar_t> better(Candidate<scalar_t> a, Candidate<scalar_t> b) {
  return (b.value > a.value || (b.value == a.value && b.index < a.index)) ? b : a;
}

// Block-wide argmax; every thread gets the result. `warp_best` holds one entry per warp
// plus the broadcast slot.
template <typename scalar_t>
__device__ Candidate<scalar_t> block_argmax(Candidate<scalar_t> c, Candidate<scalar_t>* warp_best) {
  constexpr int kWarps = kSoftNmsThreads / 32;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    c = better(c, Candidate<scalar_t>{__shfl_down_sync(0xffffffffu, c.value, offset),
                                      __shfl_down_sync(0xffffffffu, c.index, offset)});
  }
  if (lane == 0) warp_best[warp] = c;
  __syncthreads();
  if (warp == 0) {
    c = lane < kWarps ? warp_best[lane] : warp_best[0];
    for (int offset = 16; offset > 0; offset /= 2) {
      c = better(c, Candidate<scalar_t>{__shfl_down_sync(0xffffffffu, c.value, offset),
                                        __shfl_down_sync(0xffffffffu, c.index, offset)});
    }
    if (lane == 0) warp_best[kWarps] = c;
  }
  __syncthreads();
  return warp_best[kWarps];
}

// One block per video. Thread t owns candidates t, t + kSoftNmsThreads, ... for the whole
// loop, so `current` needs no synchronisation beyond the argmax's. A dropped or picked
// candidate holds -inf (every live score is >= score_threshold, which is finite).
template <typename scalar_t>
__global__ void __launch_bounds__(kSoftNmsThreads) soft_nms_1d_kernel(const SoftNms1dParams<scalar_t> p,
                                                                      bool in_shared) {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_scores[];
  __shared__ Candidate<scalar_t> warp_best[kSoftNmsThreads / 32 + 1];
  const int64_t b = blockIdx.x, n = p.num_segments;
  scalar_t* current = in_shared ? reinterpret_cast<scalar_t*>(shared_scores) : p.work + b * n;
  const scalar_t* seg = p.segments + 2 * b * n;
  const scalar_t dead = -INFINITY;

  Candidate<scalar_t> mine{dead, n};
  for (int64_t j = threadIdx.x; j < n; j += kSoftNmsThreads) {
    const scalar_t score = p.scores[b * n + j];
    // A score below the threshold can never be picked (the loop would stop first).
    const scalar_t value = p.valid[b * n + j] && score >= p.score_threshold ? score : dead;
    current[j] = value;
    mine = better(mine, Candidate<scalar_t>{value, j});
  }
  Candidate<scalar_t> best = block_argmax(mine, warp_best);
  int64_t picked = 0;
  while (picked < p.max_output && best.value >= p.score_threshold) {
    if (threadIdx.x == 0) {
      p.out_index[b * p.max_output + picked] = best.index;
      p.out_score[b * p.max_output + picked] = best.value;
    }
    ++picked;
    const scalar_t start = __ldg(seg + 2 * best.index), end = __ldg(seg + 2 * best.index + 1);
    mine = Candidate<scalar_t>{dead, n};
    for (int64_t j = threadIdx.x; j < n; j += kSoftNmsThreads) {
      scalar_t value = current[j];
      if (value == dead) continue;
      if (j == best.index) {
        current[j] = dead;
        continue;
      }
      value = soft_decay(p, value, start, end, __ldg(seg + 2 * j), __ldg(seg + 2 * j + 1));
      if (!(value >= p.score_threshold)) value = dead;
      current[j] = value;
      mine = better(mine, Candidate<scalar_t>{value, j});
    }
    best = block_argmax(mine, warp_best);
  }
  if (threadIdx.x == 0) p.counts[b] = picked;
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_soft_nms_1d(const SoftNms1dParams<scalar_t>& params, cudaStream_t stream) {
  const int64_t n = params.num_segments;
  if (params.batch == 0 || n == 0) return cudaSuccess;  // counts stay 0
  int device = 0, optin = 0;
  cudaError_t status = cudaGetDevice(&device);
  if (status != cudaSuccess) return status;
  status = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return status;
  // Room for the argmax's static shared memory next to the scores.
  const int64_t reserved = static_cast<int64_t>(sizeof(Candidate<scalar_t>)) * (kSoftNmsThreads / 32 + 1) + 1024;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(scalar_t));
  const bool in_shared = bytes <= optin - reserved;
  const int dynamic = in_shared ? static_cast<int>(bytes) : 0;
  if (dynamic + reserved > 48 * 1024) {  // above the default limit a kernel must opt in
    status = cudaFuncSetAttribute(soft_nms_1d_kernel<scalar_t>, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic);
    if (status != cudaSuccess) return status;
  }
  // gridDim.x allows 2^31 - 1 videos.
  soft_nms_1d_kernel<scalar_t>
      <<<static_cast<unsigned int>(params.batch), kSoftNmsThreads, dynamic, stream>>>(params, in_shared);
  return cudaGetLastError();
}

template cudaError_t launch_soft_nms_1d<float>(const SoftNms1dParams<float>&, cudaStream_t);
template cudaError_t launch_soft_nms_1d<double>(const SoftNms1dParams<double>&, cudaStream_t);

}  // namespace fastlocal::cuda
