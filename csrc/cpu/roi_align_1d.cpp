// RoI-align over a 1-D (temporal) axis: G-TAD's Align1D with torchvision's border rule.
// Semantics: docs/design.md "Reference semantics / RoI-align-1D"; the pure-PyTorch twin is
// fastlocal/reference/roi_align_1d.py.
//
// The op is a sparse linear map per RoI, the same for every channel: bin p of RoI n is
// sum_k w_k * x[b, :, f_k] over a handful of (frame, weight) taps. Both directions work
// on a frame-major copy ([B, T, C], accumulation type) so that every tap is one
// contiguous, vectorisable axpy over channels:
//   forward   y[n, :, p]  = sum_k w_k * xt[b, f_k, :]      (parallel over RoIs)
//   backward  dxt[b, f_k, :] += w_k * g[n, :, p]           (parallel over channel ranges,
//             RoIs visited in order: no two threads write one element and the summation
//             order does not depend on the thread count, so the result is deterministic)
// The backward's per-RoI channel loops are compiled for every instruction-set level of
// isa.h, one picked at run time (the forward measured no faster with AVX2: it is bound by
// its output writes); the sampling plan is always built by the baseline code, so that FMA
// contraction cannot move a sample position off the reference's float arithmetic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../common/roi_align_1d_checks.h"
#include "huge_pages.h"
#include "isa.h"
#include "ops.h"
#include "vec.h"

namespace fastlocal::cpu {
namespace {

// One tap: value += w * x[frame]; the weight is pre-divided by the bin's sample count.
template <typename acc_t>
struct Tap {
  int64_t frame;
  acc_t w;
};

// The sampling plan of one RoI: the taps of bin p are taps[offsets[p] .. offsets[p + 1]).
// Built once per RoI (per task) and applied to every channel.
template <typename acc_t>
struct RoiPlan {
  int64_t batch = 0;
  std::vector<Tap<acc_t>> taps;
  std::vector<int64_t> offsets;

  // Frame of the bin's last add() call, a skipped zero-weight one included (-1: none yet).
  int64_t last_frame = -1;

  void add(int64_t frame, acc_t w) {
    // A bin reads a frame only through a tap of nonzero weight: a zero-weight tap (the right
    // tap of a sample exactly on a frame) is skipped, so a NaN / inf frame reaches no bin
    // that samples it with weight 0, in the forward or the backward.
    const bool merge = last_frame == frame && taps.size() > static_cast<size_t>(offsets.back()) &&
                       taps.back().frame == frame;
    last_frame = frame;
    if (w == acc_t(0)) return;
    // Samples are visited in increasing t, so a frame shared by two neighbouring samples
    // (the right tap of one, the left tap of the next) is merged into one tap. `merge`
    // also needs the previous add() to have been on this frame, so that a skipped tap leaves
    // the plan's summation order (and the result, bit for bit) as if it were kept.
    if (merge) {
      taps.back().w += w;
    } else {
      taps.push_back({frame, w});
    }
  }

  void build(const acc_t* roi, int64_t T, int64_t P, int64_t sampling_ratio, bool aligned) {
    batch = static_cast<int64_t>(roi[0]);
    const acc_t shift = aligned ? acc_t(0.5) : acc_t(0);
    const acc_t start = roi[1] - shift;
    acc_t len = roi[2] - shift - start;
    if (!aligned) len = std::max(len, acc_t(1));
    const acc_t bin = len / acc_t(P);
    const int64_t n =
        sampling_ratio > 0 ? sampling_ratio : static_cast<int64_t>(std::ceil(len / acc_t(P)));
    const acc_t inv_count = acc_t(1) / acc_t(std::max<int64_t>(n, 1));
    taps.clear();
    offsets.assign(1, 0);
    for (int64_t p = 0; p < P; ++p) {
      last_frame = -1;
      for (int64_t i = 0; i < n; ++i) {
        acc_t t = start + acc_t(p) * bin + (acc_t(i) + acc_t(0.5)) * bin / acc_t(n);
        // torchvision's border rule: outside [-1, T] contributes nothing; t <= 0 clamps
        // to 0; floor(t) >= T - 1 reads x[T - 1].
        if (t < acc_t(-1) || t > acc_t(T)) continue;
        t = std::max(t, acc_t(0));
        const int64_t lo = static_cast<int64_t>(std::floor(t));
        if (lo >= T - 1) {
          add(T - 1, inv_count);  // (1 - 0) * x[T-1]; the weight-0 tap reads nothing
          continue;
        }
        const acc_t frac = t - acc_t(lo);
        // frac == 0 (a sample exactly on frame lo, t in [-1, 0] clamped onto frame 0
        // included): the right tap has weight 0 and add() skips it.
        add(lo, (acc_t(1) - frac) * inv_count);
        add(lo + 1, frac * inv_count);
      }
      offsets.push_back(static_cast<int64_t>(taps.size()));
    }
  }
};

// Channels per register block: the accumulators of one block stay in vector registers.
constexpr int64_t kBlock = 16;

// acc[0, width) = sum over taps of w * rows[frame * C + 0, width), rows already offset to
// the block's first channel. The fixed-width branch lets the compiler unroll and vectorise.
template <typename acc_t>
inline void gather_taps(const Tap<acc_t>* tap, const Tap<acc_t>* end, const acc_t* rows, int64_t C,
                        int64_t width, acc_t* acc) {
  if (width == kBlock) {
    acc_t a[kBlock] = {};
    for (; tap != end; ++tap) {
      const acc_t* src = rows + tap->frame * C;
      for (int64_t j = 0; j < kBlock; ++j) a[j] += tap->w * src[j];
    }
    std::copy(a, a + kBlock, acc);
    return;
  }
  std::fill(acc, acc + width, acc_t(0));
  for (; tap != end; ++tap) {
    const acc_t* src = rows + tap->frame * C;
    for (int64_t j = 0; j < width; ++j) acc[j] += tap->w * src[j];
  }
}

// dst[j * stride] = acc[j] for j < width; a fixed trip count for full blocks (no per-element
// bound checks in the unrolled loop).
template <typename acc_t, typename scalar_t>
inline void store_strided(const acc_t* acc, int64_t width, scalar_t* dst, int64_t stride) {
  if (width == kBlock) {
    for (int64_t j = 0; j < kBlock; ++j) dst[j * stride] = scalar_t(acc[j]);
  } else {
    for (int64_t j = 0; j < width; ++j) dst[j * stride] = scalar_t(acc[j]);
  }
}

// dst[r * ldd + c] = src[c * lds + r] for a 4 x 4 float block, in registers: unpack pairs,
// then move halves (_MM_TRANSPOSE4_PS in GCC vector form, native in every x86-64 build).
inline void transpose4x4(const float* src, int64_t lds, float* dst, int64_t ldd) {
  using v4 = simd::f32x4;
  v4 r[4];
  for (int i = 0; i < 4; ++i) std::memcpy(&r[i], src + i * lds, sizeof(v4));
  const v4 t0 = __builtin_shufflevector(r[0], r[1], 0, 4, 1, 5), t1 = __builtin_shufflevector(r[0], r[1], 2, 6, 3, 7);
  const v4 t2 = __builtin_shufflevector(r[2], r[3], 0, 4, 1, 5), t3 = __builtin_shufflevector(r[2], r[3], 2, 6, 3, 7);
  const v4 out[4] = {__builtin_shufflevector(t0, t2, 0, 1, 4, 5), __builtin_shufflevector(t0, t2, 2, 3, 6, 7),
                     __builtin_shufflevector(t1, t3, 0, 1, 4, 5), __builtin_shufflevector(t1, t3, 2, 3, 6, 7)};
  for (int i = 0; i < 4; ++i) std::memcpy(dst + i * ldd, &out[i], sizeof(v4));
}

// dst[p * width + j] = src[j * P + p]: one RoI's gradient for a task's channels, [width, P]
// -> [P, width], so that every tap is a contiguous axpy over channels. float32 goes through
// 4 x 4 register blocks (element by element it took 40% of the backward at ETAD's sizes).
template <typename acc_t, typename scalar_t>
inline void transpose_grad(const scalar_t* src, int64_t P, int64_t width, acc_t* dst) {
  int64_t j0 = 0;
  if constexpr (std::is_same_v<scalar_t, float> && std::is_same_v<acc_t, float>) {
    if (P % 4 == 0) {
      for (; j0 + 4 <= width; j0 += 4)
        for (int64_t p0 = 0; p0 < P; p0 += 4) transpose4x4(src + j0 * P + p0, P, dst + p0 * width + j0, width);
    }
  }
  for (int64_t j = j0; j < width; ++j)
    for (int64_t p = 0; p < P; ++p) dst[p * width + j] = acc_t(src[j * P + p]);
}

// [B, C, T] (any float dtype, any strides) -> frame-major [B, T, C] in the accumulation type.
at::Tensor frame_major(const at::Tensor& x, at::ScalarType acc_type) {
  return at::empty({x.size(0), x.size(2), x.size(1)}, x.options().dtype(acc_type)).copy_(x.transpose(1, 2));
}

// Frame-major [B, T, C] -> channel-major [B, C, T] contiguous, in `dtype`.
at::Tensor channel_major(const at::Tensor& xt, at::ScalarType dtype) {
  return at::empty({xt.size(0), xt.size(2), xt.size(1)}, xt.options().dtype(dtype)).copy_(xt.transpose(1, 2));
}

}  // namespace

at::Tensor roi_align_1d_forward(const at::Tensor& input, const at::Tensor& rois_, int64_t output_size,
                                int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(input.dim() == 3, "input must be [B, C, T], got ", input.sizes());
  check_rois(rois_, input.size(0), input.scalar_type(), output_size, sampling_ratio);
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = rois.size(0), C = input.size(1), T = input.size(2), P = output_size;
  at::Tensor out = empty_huge({N, C, P}, input.options());
  if (N == 0 || C == 0) return out;
  TORCH_CHECK_VALUE(T >= 1, "input must have length >= 1 along T, got ", input.sizes());
  const at::Tensor xt = frame_major(input, roi_acc_dtype(input.scalar_type()));

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_1d_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t* x = xt.const_data_ptr<acc_t>();
    const acc_t* r = rois.const_data_ptr<acc_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    // One task per RoI: its plan is built once, then applied to every channel block.
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      RoiPlan<acc_t> plan;
      acc_t acc[kBlock];
      for (int64_t n = n0; n < n1; ++n) {
        plan.build(r + 3 * n, T, P, sampling_ratio, aligned);
        const acc_t* rows = x + plan.batch * T * C;
        scalar_t* dst = y + n * C * P;
        for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
          const int64_t width = std::min(kBlock, C - c0);
          for (int64_t p = 0; p < P; ++p) {
            const Tap<acc_t>* taps = plan.taps.data();
            gather_taps(taps + plan.offsets[p], taps + plan.offsets[p + 1], rows + c0, C, width, acc);
            store_strided(acc, width, dst + c0 * P + p, P);
          }
        }
      }
    });
  });
  return out;
}

at::Tensor roi_align_1d_backward(const at::Tensor& grad, const at::Tensor& rois_, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned) {
  check_roi_backward(grad, rois_, batch, length, sampling_ratio);
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = grad.size(0), C = grad.size(1), P = grad.size(2), T = length;
  const at::ScalarType acc_type = roi_acc_dtype(grad.scalar_type());
  // Frame-major accumulator [B, T, C]; returned as a [B, C, T] view cast to grad's dtype.
  at::Tensor dxt = at::zeros({batch, T, C}, grad.options().dtype(acc_type));
  if (N == 0 || C == 0) return channel_major(dxt, grad.scalar_type());
  const at::Tensor g_ = grad.contiguous();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = g_.const_data_ptr<scalar_t>();
    const acc_t* r = rois.const_data_ptr<acc_t>();
    acc_t* dx = dxt.mutable_data_ptr<acc_t>();
    // A task owns a range of channels and visits the RoIs in order.
    const int64_t grain = std::max<int64_t>(kBlock, C / std::max(1, at::get_num_threads()));
    const Isa isa = cpu_isa();
    at::parallel_for(0, C, grain, [&](int64_t c0, int64_t c1) {
      const int64_t width = c1 - c0;
      RoiPlan<acc_t> plan;
      std::vector<acc_t> gt(P * width);  // this RoI's grad for the task's channels, [P, width]
      for (int64_t n = 0; n < N; ++n) {
        plan.build(r + 3 * n, T, P, sampling_ratio, aligned);
        if (plan.taps.empty()) continue;
        run_for_isa(isa, [&] {
          transpose_grad(g + (n * C + c0) * P, P, width, gt.data());
          acc_t* rows = dx + plan.batch * T * C + c0;
          for (int64_t p = 0; p < P; ++p) {
            const acc_t* gp = gt.data() + p * width;
            for (int64_t k = plan.offsets[p]; k < plan.offsets[p + 1]; ++k) {
              const Tap<acc_t>& tap = plan.taps[k];
              acc_t* dst = rows + tap.frame * C;
              for (int64_t j = 0; j < width; ++j) dst[j] += tap.w * gp[j];
            }
          }
        });
      }
    });
  });
  return channel_major(dxt, grad.scalar_type());
}

}  // namespace fastlocal::cpu
