// Greedy 1-D non-maximum suppression on [start, end] segments, hard (nms_1d) and soft
// (soft_nms_1d). Semantics: fastlocal/reference/nms_1d.py (stable order on equal scores; a
// segment is suppressed when its IoU with a kept one is > iou_threshold; IoU of two empty
// segments is 0).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>
#include <vector>

#include "../common/roi_align_1d_checks.h"
#include "ops.h"

namespace fastlocal::cpu {

at::Tensor nms_1d(const at::Tensor& segments_, const at::Tensor& scores_, double iou_threshold) {
  check_detections(segments_, scores_);
  const at::Tensor segments = segments_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  const int64_t N = segments.size(0);
  std::vector<int64_t> kept;

  AT_DISPATCH_FLOATING_TYPES(segments.scalar_type(), "nms_1d", [&] {
    const scalar_t* seg = segments.const_data_ptr<scalar_t>();
    const scalar_t* score = scores.const_data_ptr<scalar_t>();
    std::vector<int64_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    // Sorted copies keep the suppression sweep on contiguous memory.
    std::vector<scalar_t> start(N), end(N);
    for (int64_t i = 0; i < N; ++i) {
      start[i] = seg[2 * order[i]];
      end[i] = seg[2 * order[i] + 1];
    }
    std::vector<uint8_t> suppressed(N, 0);
    const scalar_t thr = static_cast<scalar_t>(iou_threshold);
    for (int64_t i = 0; i < N; ++i) {
      if (suppressed[i]) continue;
      kept.push_back(order[i]);
      const scalar_t s = start[i], e = end[i];
      // Each j is written by one thread only. The sweep is a few ns per j and runs once per
      // kept segment, so a parallel region must carry a lot of it: with a grain of 8192 a
      // 20k-segment NMS opened ~2500 regions and took 36 s instead of 0.2 s on 2 busy cores
      // (every fork/join waits for a descheduled thread). Short sweeps stay serial.
      at::parallel_for(i + 1, N, 1 << 18, [&](int64_t j0, int64_t j1) {
        for (int64_t j = j0; j < j1; ++j) {
          const scalar_t inter = std::max(scalar_t(0), std::min(e, end[j]) - std::max(s, start[j]));
          const scalar_t uni = (e - s) + (end[j] - start[j]) - inter;
          if (uni > scalar_t(0) && inter / uni > thr) suppressed[j] = 1;
        }
      });
    }
  });
  return at::tensor(kept, at::TensorOptions().dtype(at::kLong));
}

namespace {

// IoU with the reference's rounding: inter / max(union, tiny), 0 when the union is empty.
template <typename scalar_t>
inline scalar_t segment_iou(scalar_t s0, scalar_t e0, scalar_t s1, scalar_t e1) {
  const scalar_t inter = std::max(scalar_t(0), std::min(e0, e1) - std::max(s0, s1));
  const scalar_t uni = (e0 - s0) + (e1 - s1) - inter;
  return uni > scalar_t(0) ? inter / std::max(uni, std::numeric_limits<scalar_t>::min()) : scalar_t(0);
}

template <typename scalar_t>
struct SoftNmsRule {
  scalar_t sigma, iou_threshold, score_threshold;  // rounded to scalar_t, as the reference compares
  bool gaussian;
  int64_t max_output;
};

// One video's soft-NMS; writes its picks to out_index / out_score and returns their count.
// The live candidates are kept compacted in index order, so a strict > in the argmax finds
// the lowest index among equal scores, and each round is one sweep that decays, drops and
// finds the next maximum.
template <typename scalar_t>
int64_t soft_nms_video(const scalar_t* seg, const scalar_t* score, const bool* valid, int64_t N,
                       const SoftNmsRule<scalar_t>& rule, int64_t* out_index, scalar_t* out_score) {
  std::vector<int64_t> index;
  std::vector<scalar_t> start, end, current;
  index.reserve(N), start.reserve(N), end.reserve(N), current.reserve(N);
  // A score below the threshold can never be picked (the loop would stop first): leave it out.
  for (int64_t j = 0; j < N; ++j) {
    if (valid[j] && score[j] >= rule.score_threshold) {
      index.push_back(j), start.push_back(seg[2 * j]), end.push_back(seg[2 * j + 1]), current.push_back(score[j]);
    }
  }
  int64_t alive = static_cast<int64_t>(index.size());
  int64_t best = 0;
  for (int64_t i = 1; i < alive; ++i) {
    if (current[i] > current[best]) best = i;
  }
  int64_t picked = 0;
  while (alive > 0 && picked < rule.max_output) {
    out_index[picked] = index[best];
    out_score[picked] = current[best];
    ++picked;
    const scalar_t s = start[best], e = end[best];
    const int64_t skip = best;
    int64_t kept = 0;
    best = 0;
    for (int64_t i = 0; i < alive; ++i) {
      if (i == skip) continue;
      const scalar_t iou = segment_iou(s, e, start[i], end[i]);
      scalar_t value = current[i];
      // exp(-0 / sigma) = 1 exactly, so a disjoint segment keeps its score without the exp.
      if (rule.gaussian) {
        if (iou > scalar_t(0)) value = value * std::exp(-(iou * iou) / rule.sigma);
      } else if (iou > rule.iou_threshold) {
        value = value * (scalar_t(1) - iou);
      }
      if (!(value >= rule.score_threshold)) continue;
      index[kept] = index[i], start[kept] = start[i], end[kept] = end[i], current[kept] = value;
      if (value > current[best]) best = kept;
      ++kept;
    }
    alive = kept;
  }
  return picked;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_nms_1d(const at::Tensor& segments_, const at::Tensor& scores_,
                                                           const at::Tensor& valid_, double sigma,
                                                           double iou_threshold, double score_threshold,
                                                           bool gaussian, int64_t max_output) {
  check_batched_detections(segments_, scores_, valid_, max_output);
  const at::Tensor segments = segments_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  const at::Tensor valid = valid_.contiguous();
  const int64_t B = segments.size(0), N = segments.size(1);
  const int64_t K = std::min(max_output, N);
  at::Tensor indices = at::full({B, K}, -1, segments.options().dtype(at::kLong));
  at::Tensor decayed = at::zeros({B, K}, scores.options());
  at::Tensor counts = at::zeros({B}, segments.options().dtype(at::kLong));

  AT_DISPATCH_FLOATING_TYPES(segments.scalar_type(), "soft_nms_1d", [&] {
    const SoftNmsRule<scalar_t> rule{static_cast<scalar_t>(sigma), static_cast<scalar_t>(iou_threshold),
                                     static_cast<scalar_t>(score_threshold), gaussian, K};
    const scalar_t* seg = segments.const_data_ptr<scalar_t>();
    const scalar_t* score = scores.const_data_ptr<scalar_t>();
    const bool* mask = valid.const_data_ptr<bool>();
    int64_t* out_index = indices.mutable_data_ptr<int64_t>();
    scalar_t* out_score = decayed.mutable_data_ptr<scalar_t>();
    int64_t* count = counts.mutable_data_ptr<int64_t>();
    // Videos are independent: one per task.
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        count[b] = soft_nms_video(seg + 2 * b * N, score + b * N, mask + b * N, N, rule, out_index + b * K,
                                  out_score + b * K);
      }
    });
  });
  return {indices, decayed, counts};
}

}  // namespace fastlocal::cpu
