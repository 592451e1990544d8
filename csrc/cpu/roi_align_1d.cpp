// RoI-align over a 1-D (temporal) axis: G-TAD's Align1D with torchvision's border rule.
// Semantics: DESIGN.md "Reference semantics / RoI-align-1D"; the pure-PyTorch twin is
// fastlocal/reference/roi_align.py.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common/roi_checks.h"
#include "ops.h"

namespace fastlocal::cpu {
namespace {

// One linear-interpolation tap pair, pre-divided by the bin's sample count:
// value = w_lo * x[lo] + w_hi * x[hi].
template <typename acc_t>
struct Tap {
  int64_t lo, hi;
  acc_t w_lo, w_hi;
};

// The sampling plan of one RoI: the taps of bin p are taps[offsets[p] .. offsets[p + 1]).
// Built once per RoI and reused for every channel.
template <typename acc_t>
struct RoiPlan {
  int64_t batch = 0;
  std::vector<Tap<acc_t>> taps;
  std::vector<int64_t> offsets;

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
      for (int64_t i = 0; i < n; ++i) {
        acc_t t = start + acc_t(p) * bin + (acc_t(i) + acc_t(0.5)) * bin / acc_t(n);
        // torchvision's border rule: outside [-1, T] contributes nothing; t <= 0 clamps
        // to 0; floor(t) >= T - 1 reads x[T - 1].
        if (t < acc_t(-1) || t > acc_t(T)) continue;
        t = std::max(t, acc_t(0));
        int64_t lo = static_cast<int64_t>(std::floor(t));
        int64_t hi = lo + 1;
        if (lo >= T - 1) {
          lo = hi = T - 1;
          t = acc_t(lo);
        }
        const acc_t frac = t - acc_t(lo);
        taps.push_back({lo, hi, (acc_t(1) - frac) * inv_count, frac * inv_count});
      }
      offsets.push_back(static_cast<int64_t>(taps.size()));
    }
  }
};


}  // namespace

at::Tensor roi_align_1d_forward(const at::Tensor& input_, const at::Tensor& rois_, int64_t output_size,
                                int64_t sampling_ratio, bool aligned) {
  TORCH_CHECK_VALUE(input_.dim() == 3, "input must be [B, C, T], got ", input_.sizes());
  check_rois(rois_, input_.size(0), input_.scalar_type(), output_size, sampling_ratio);
  const at::Tensor input = input_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = rois.size(0), C = input.size(1), T = input.size(2), P = output_size;
  at::Tensor out = at::empty({N, C, P}, input.options());
  if (N == 0 || C == 0) return out;
  TORCH_CHECK_VALUE(T >= 1, "input must have length >= 1 along T, got ", input.sizes());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "roi_align_1d_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* x = input.const_data_ptr<scalar_t>();
    const acc_t* r = rois.const_data_ptr<acc_t>();
    scalar_t* y = out.mutable_data_ptr<scalar_t>();
    // One task per RoI: its plan is built once, then applied to every channel.
    at::parallel_for(0, N, 1, [&](int64_t n0, int64_t n1) {
      RoiPlan<acc_t> plan;
      for (int64_t n = n0; n < n1; ++n) {
        plan.build(r + 3 * n, T, P, sampling_ratio, aligned);
        for (int64_t c = 0; c < C; ++c) {
          const scalar_t* row = x + (plan.batch * C + c) * T;
          scalar_t* dst = y + (n * C + c) * P;
          for (int64_t p = 0; p < P; ++p) {
            acc_t acc = 0;
            for (int64_t k = plan.offsets[p]; k < plan.offsets[p + 1]; ++k) {
              const Tap<acc_t>& tap = plan.taps[k];
              acc += tap.w_lo * acc_t(row[tap.lo]) + tap.w_hi * acc_t(row[tap.hi]);
            }
            dst[p] = scalar_t(acc);
          }
        }
      }
    });
  });
  return out;
}

at::Tensor roi_align_1d_backward(const at::Tensor& grad_, const at::Tensor& rois_, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned) {
  check_roi_backward(grad_, rois_, batch, length, sampling_ratio);
  const at::Tensor grad = grad_.contiguous();
  const at::Tensor rois = rois_.contiguous();
  const int64_t N = grad.size(0), C = grad.size(1), P = grad.size(2), T = length;
  const at::ScalarType acc_type = roi_acc_dtype(grad.scalar_type());
  at::Tensor grad_input = at::zeros({batch, C, T}, grad.options().dtype(acc_type));
  if (N == 0 || C == 0) return grad_input.to(grad.scalar_type());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "roi_align_1d_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const acc_t* r = rois.const_data_ptr<acc_t>();
    acc_t* dx = grad_input.mutable_data_ptr<acc_t>();
    // A task owns a range of channels and visits the RoIs in order: no two threads
    // write the same element, and the summation order is fixed (deterministic).
    at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
      RoiPlan<acc_t> plan;
      for (int64_t n = 0; n < N; ++n) {
        plan.build(r + 3 * n, T, P, sampling_ratio, aligned);
        for (int64_t c = c0; c < c1; ++c) {
          acc_t* row = dx + (plan.batch * C + c) * T;
          const scalar_t* src = g + (n * C + c) * P;
          for (int64_t p = 0; p < P; ++p) {
            const acc_t gp = acc_t(src[p]);
            for (int64_t k = plan.offsets[p]; k < plan.offsets[p + 1]; ++k) {
              const Tap<acc_t>& tap = plan.taps[k];
              row[tap.lo] += tap.w_lo * gp;
              row[tap.hi] += tap.w_hi * gp;
            }
          }
        }
      }
    });
  });
  return grad_input.to(grad.scalar_type());
}

}  // namespace fastlocal::cpu
