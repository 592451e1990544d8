// RoI-align over a 1-D (temporal) axis on CUDA: G-TAD's Align1D with torchvision's
// border rule. Semantics and rounding follow csrc/cpu/roi_align_1d.cpp step by step
// (docs/design.md "Reference semantics / RoI-align-1D"); launchers declared in roi_align_1d.h.
// The per-element bodies are __host__ __device__ so that they can be run on the host
// and compared with the CPU kernel where there is no GPU.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "exact_math.cuh"
#include "roi_align_1d.h"

namespace fastlocal::cuda {
namespace {

constexpr int kThreads = 256;
// Enough resident work for any current GPU; the grid-stride loops cover larger problems.
constexpr int64_t kMaxBlocks = 65536;

unsigned int num_blocks(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
}

__host__ __device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__host__ __device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__host__ __device__ __forceinline__ float to_acc(float x) { return x; }
__host__ __device__ __forceinline__ double to_acc(double x) { return x; }

// Round to nearest even, as at::Half / at::BFloat16 do on the CPU.
__host__ __device__ __forceinline__ void store(__half* dst, float v) { *dst = __float2half_rn(v); }
__host__ __device__ __forceinline__ void store(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }
__host__ __device__ __forceinline__ void store(float* dst, float v) { *dst = v; }
__host__ __device__ __forceinline__ void store(double* dst, double v) { *dst = v; }

__host__ __device__ __forceinline__ void atomic_accumulate(float* dst, float v) {
#ifdef __CUDA_ARCH__
  atomicAdd(dst, v);
#else
  *dst += v;
#endif
}
__host__ __device__ __forceinline__ void atomic_accumulate(double* dst, double v) {
#ifdef __CUDA_ARCH__
  atomicAdd(dst, v);  // native on sm_60+
#else
  *dst += v;
#endif
}

// Where one RoI samples: bin p averages `count` samples at
// t = start + p * bin + (i + 0.5) * bin / count, each weighted 1 / max(count, 1).
template <typename acc_t>
struct RoiSampling {
  int64_t batch;
  acc_t start, bin;
  int64_t count;  // <= 0 for a reversed aligned RoI: no samples, the bins are 0
  acc_t inv_count;
};

template <typename acc_t>
__host__ __device__ __forceinline__ RoiSampling<acc_t> roi_sampling(const acc_t* roi, int64_t batch_size,
                                                                    int64_t output_size, int64_t sampling_ratio,
                                                                    bool aligned) {
  RoiSampling<acc_t> s;
  // The glue has checked the batch index; the clamp only keeps memory accesses in bounds.
  const int64_t b = static_cast<int64_t>(roi[0]);
  s.batch = b < 0 ? 0 : (b >= batch_size ? batch_size - 1 : b);
  const acc_t shift = aligned ? acc_t(0.5) : acc_t(0);
  s.start = sub_rn(roi[1], shift);
  acc_t len = sub_rn(sub_rn(roi[2], shift), s.start);
  if (!aligned && len < acc_t(1)) len = acc_t(1);
  s.bin = div_rn(len, acc_t(output_size));
  s.count = sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(s.bin));
  s.inv_count = div_rn(acc_t(1), acc_t(s.count > 1 ? s.count : 1));
  return s;
}

// Sample i of bin p as w_lo * x[lo] + w_hi * x[hi], weights pre-divided by the count.
// w_lo > 0 always; w_hi == 0 for a sample exactly on a frame (t in [-1, 0] clamped onto
// frame 0 and floor(t) >= T - 1 included), and then the callers neither read nor scatter
// x[hi]: a bin reads a frame only through a tap of nonzero weight (0 * inf would be NaN),
// as csrc/cpu/roi_align_1d.cpp's RoiPlan.
template <typename acc_t>
struct Tap {
  int64_t lo, hi;
  acc_t w_lo, w_hi;
};

// False when the sample lies outside [-1, T] and contributes nothing (torchvision's rule);
// otherwise t <= 0 reads x[0] and floor(t) >= T - 1 reads x[T - 1]. So 0 <= lo <= hi <= T - 1
// (a NaN t cannot arise from finite RoIs; on the GPU it would convert to lo = 0 anyway).
template <typename acc_t>
__host__ __device__ __forceinline__ bool sample_tap(const RoiSampling<acc_t>& s, int64_t p, int64_t i,
                                                    int64_t length, Tap<acc_t>& tap) {
  acc_t t = add_rn(add_rn(s.start, mul_rn(acc_t(p), s.bin)),
                   div_rn(mul_rn(add_rn(acc_t(i), acc_t(0.5)), s.bin), acc_t(s.count)));
  if (t < acc_t(-1) || t > acc_t(length)) return false;
  if (t < acc_t(0)) t = acc_t(0);
  tap.lo = static_cast<int64_t>(std::floor(t));
  tap.hi = tap.lo + 1;
  if (tap.lo >= length - 1) {
    tap.lo = tap.hi = length - 1;
    t = acc_t(tap.lo);
  }
  const acc_t frac = sub_rn(t, acc_t(tap.lo));
  tap.w_lo = mul_rn(sub_rn(acc_t(1), frac), s.inv_count);
  tap.w_hi = mul_rn(frac, s.inv_count);
  return true;
}

// Element idx = (n * C + c) * P + bin of the [N, C, P] output or gradient: its RoI's
// sampling and the input row (batch, channel) it reads or scatters into. Consecutive
// threads take consecutive bins of one (RoI, channel) row: output / gradient accesses
// coalesce, and the input frames they touch lie close together in one row (about `bin`
// frames apart), so they share cache lines; consecutive c would be T elements apart.
template <typename acc_t>
struct Element {
  RoiSampling<acc_t> sampling;
  int64_t bin, row;  // row: offset of x[batch, c, 0] in a [B, C, T] tensor
};

template <typename acc_t>
__host__ __device__ __forceinline__ Element<acc_t> element_at(const RoiAlign1dShape& sh, const acc_t* rois,
                                                              int64_t idx) {
  const int64_t P = sh.output_size, C = sh.channels;
  const int64_t c = (idx / P) % C;
  const int64_t n = idx / (P * C);
  const RoiSampling<acc_t> s = roi_sampling(rois + 3 * n, sh.batch, P, sh.sampling_ratio, sh.aligned);
  return {s, idx % P, (s.batch * C + c) * sh.length};
}

template <typename scalar_t>
__host__ __device__ __forceinline__ void roi_align_1d_at(const RoiAlign1dForwardParams<scalar_t>& p, int64_t idx) {
  using acc_t = opmath_t<scalar_t>;
  const Element<acc_t> e = element_at(p.shape, p.rois, idx);
  const scalar_t* row = p.input + e.row;
  acc_t acc = 0;
  Tap<acc_t> tap;
  for (int64_t i = 0; i < e.sampling.count; ++i) {
    if (!sample_tap(e.sampling, e.bin, i, p.shape.length, tap)) continue;
    // Finite input: the same sum as acc += w_lo * x[lo] + w_hi * x[hi] (adding 0 * x[hi]
    // changes nothing).
    acc_t v = tap.w_lo * to_acc(row[tap.lo]);
    if (tap.w_hi != acc_t(0)) v += tap.w_hi * to_acc(row[tap.hi]);
    acc += v;
  }
  store(p.output + idx, acc);
}

// Each sample scatters grad * weight to its two frames.
template <typename scalar_t>
__host__ __device__ __forceinline__ void roi_align_1d_at(const RoiAlign1dBackwardParams<scalar_t>& p, int64_t idx) {
  using acc_t = opmath_t<scalar_t>;
  const Element<acc_t> e = element_at(p.shape, p.rois, idx);
  acc_t* row = p.grad_input + e.row;
  const acc_t g = to_acc(p.grad[idx]);
  Tap<acc_t> tap;
  for (int64_t i = 0; i < e.sampling.count; ++i) {
    if (!sample_tap(e.sampling, e.bin, i, p.shape.length, tap)) continue;
    atomic_accumulate(row + tap.lo, tap.w_lo * g);
    if (tap.w_hi != acc_t(0)) atomic_accumulate(row + tap.hi, tap.w_hi * g);
  }
}

// Deterministic backward, step 1: slot pair (n, p, i) -> its two taps (see roi_align_1d.h).
template <typename scalar_t>
__host__ __device__ __forceinline__ void roi_align_1d_at(const RoiAlign1dTapsParams<scalar_t>& p, int64_t idx) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t P = p.shape.output_size, i = idx % p.max_count, bin = (idx / p.max_count) % P;
  const int64_t n = idx / (p.max_count * P);
  const RoiSampling<acc_t> s = roi_sampling(p.rois + 3 * n, p.shape.batch, P, p.shape.sampling_ratio,
                                            p.shape.aligned);
  Tap<acc_t> tap;
  if (i >= s.count || !sample_tap(s, bin, i, p.shape.length, tap)) return;  // the sentinel key stays
  const int64_t base = s.batch * p.shape.length;
  p.keys[2 * idx] = base + tap.lo;
  p.weights[2 * idx] = tap.w_lo;
  if (tap.w_hi == acc_t(0)) return;  // a weight-0 tap scatters nothing: its sentinel key stays
  p.keys[2 * idx + 1] = base + tap.hi;
  p.weights[2 * idx + 1] = tap.w_hi;
}

// Deterministic backward, step 3: element idx = (b * C + c) * T + t of grad_input sums its
// frame's sorted taps in order, with no atomics.
template <typename scalar_t>
__host__ __device__ __forceinline__ void roi_align_1d_at(const RoiAlign1dGatherParams<scalar_t>& p, int64_t idx) {
  using acc_t = opmath_t<scalar_t>;
  const int64_t T = p.shape.length, C = p.shape.channels, P = p.shape.output_size;
  const int64_t t = idx % T, c = (idx / T) % C, b = idx / (T * C);
  const int64_t frame = b * T + t;
  acc_t acc = 0;
  for (int64_t k = p.offsets[frame]; k < p.offsets[frame + 1]; ++k) {
    const int64_t src = p.source[k];
    acc += p.weights[k] * to_acc(p.grad[((src / P) * C + c) * P + src % P]);
  }
  store(p.grad_input + idx, acc);
}

// One grid-stride kernel for every step (the params type picks the element body).
template <typename Params>
__global__ void __launch_bounds__(kThreads) roi_align_1d_kernel(const Params p, int64_t total) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    roi_align_1d_at(p, idx);
  }
}

// `total` elements: [N, C, P] for forward and backward, N * P * max_count slot pairs for the
// taps, [B, C, T] for the gather.
template <typename Params>
cudaError_t launch(const Params& params, int64_t total, cudaStream_t stream) {
  // Without a frame or a batch entry there is nothing in bounds to touch (the glue rejects T < 1).
  if (total == 0 || params.shape.length < 1 || params.shape.batch < 1) return cudaSuccess;
  roi_align_1d_kernel<Params><<<num_blocks(total), kThreads, 0, stream>>>(params, total);
  return cudaGetLastError();
}

}  // namespace

template <typename scalar_t>
cudaError_t launch_roi_align_1d_forward(const RoiAlign1dForwardParams<scalar_t>& params, cudaStream_t stream) {
  return launch(params, params.shape.elements(), stream);
}

template <typename scalar_t>
cudaError_t launch_roi_align_1d_backward(const RoiAlign1dBackwardParams<scalar_t>& params, cudaStream_t stream) {
  return launch(params, params.shape.elements(), stream);
}

template <typename scalar_t>
cudaError_t launch_roi_align_1d_taps(const RoiAlign1dTapsParams<scalar_t>& params, cudaStream_t stream) {
  return launch(params, params.shape.num_rois * params.shape.output_size * params.max_count, stream);
}

template <typename scalar_t>
cudaError_t launch_roi_align_1d_gather(const RoiAlign1dGatherParams<scalar_t>& params, cudaStream_t stream) {
  return launch(params, params.shape.batch * params.shape.channels * params.shape.length, stream);
}

template cudaError_t launch_roi_align_1d_forward<__half>(const RoiAlign1dForwardParams<__half>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_forward<__nv_bfloat16>(const RoiAlign1dForwardParams<__nv_bfloat16>&,
                                                                cudaStream_t);
template cudaError_t launch_roi_align_1d_forward<float>(const RoiAlign1dForwardParams<float>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_forward<double>(const RoiAlign1dForwardParams<double>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_backward<__half>(const RoiAlign1dBackwardParams<__half>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_backward<__nv_bfloat16>(const RoiAlign1dBackwardParams<__nv_bfloat16>&,
                                                                 cudaStream_t);
template cudaError_t launch_roi_align_1d_backward<float>(const RoiAlign1dBackwardParams<float>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_backward<double>(const RoiAlign1dBackwardParams<double>&, cudaStream_t);

template cudaError_t launch_roi_align_1d_taps<__half>(const RoiAlign1dTapsParams<__half>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_taps<__nv_bfloat16>(const RoiAlign1dTapsParams<__nv_bfloat16>&,
                                                             cudaStream_t);
template cudaError_t launch_roi_align_1d_taps<float>(const RoiAlign1dTapsParams<float>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_taps<double>(const RoiAlign1dTapsParams<double>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_gather<__half>(const RoiAlign1dGatherParams<__half>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_gather<__nv_bfloat16>(const RoiAlign1dGatherParams<__nv_bfloat16>&,
                                                               cudaStream_t);
template cudaError_t launch_roi_align_1d_gather<float>(const RoiAlign1dGatherParams<float>&, cudaStream_t);
template cudaError_t launch_roi_align_1d_gather<double>(const RoiAlign1dGatherParams<double>&, cudaStream_t);

}  // namespace fastlocal::cuda
