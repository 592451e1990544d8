// Greedy 1-D non-maximum suppression on [start, end] segments, hard (nms_1d) and soft
// (soft_nms_1d), and non-maximum weighting (nmw_1d). Semantics: fastlocal/reference/nms_1d.py
// (stable order on equal scores; a segment is suppressed when its IoU with a kept one is >
// iou_threshold, merged by NMW when it is >= iou_threshold; IoU of two empty segments is 0).
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

namespace {

template <typename scalar_t>
struct NmwPick {
  int64_t rank;  // position in the global visiting order: the picks of all classes merge by it
  scalar_t start, end;
};

// NMW of one class. start / end / score hold that class's candidates in visiting order (rank[k]
// their global positions). Appends at most max_output picks to picks. The sums run in the same
// order and dtype as the reference's (left to right over the group in visiting order), so the
// merged boundaries are bitwise the reference's.
template <typename scalar_t>
void nmw_class(const std::vector<int64_t>& rank, const std::vector<scalar_t>& start, const std::vector<scalar_t>& end,
               const std::vector<scalar_t>& score, scalar_t iou_threshold, int64_t max_output,
               std::vector<NmwPick<scalar_t>>& picks) {
  const int64_t count = static_cast<int64_t>(rank.size());
  std::vector<uint8_t> taken(count, 0);
  std::vector<int64_t> group;
  std::vector<scalar_t> weight;
  for (int64_t k = 0; k < count && static_cast<int64_t>(picks.size()) < max_output; ++k) {
    if (taken[k]) continue;
    const scalar_t s = start[k], e = end[k];
    group.assign(1, k);
    weight.assign(1, score[k]);  // the pick's IoU with itself is taken as 1
    for (int64_t m = k + 1; m < count; ++m) {
      if (taken[m]) continue;
      // Most pairs are disjoint: their IoU is exactly 0 (as segment_iou gives), without the division.
      const bool disjoint = std::min(e, end[m]) <= std::max(s, start[m]);
      const scalar_t iou = disjoint ? scalar_t(0) : segment_iou(s, e, start[m], end[m]);
      if (iou >= iou_threshold) {
        taken[m] = 1;
        group.push_back(m);
        weight.push_back(score[m] * iou);
      }
    }
    scalar_t total = weight[0];
    for (size_t g = 1; g < group.size(); ++g) total = total + weight[g];
    scalar_t merged_start = (weight[0] / total) * s, merged_end = (weight[0] / total) * e;
    for (size_t g = 1; g < group.size(); ++g) {
      const scalar_t c = weight[g] / total;
      merged_start = merged_start + c * start[group[g]];
      merged_end = merged_end + c * end[group[g]];
    }
    picks.push_back({rank[k], merged_start, merged_end});
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> nmw_1d(const at::Tensor& segments_, const at::Tensor& scores_,
                                          const at::Tensor& idxs_, double iou_threshold, int64_t max_output) {
  check_classed_detections(segments_, scores_, idxs_, max_output);
  const at::Tensor segments = segments_.contiguous();
  const at::Tensor scores = scores_.contiguous();
  const at::Tensor idxs = idxs_.contiguous();
  const int64_t N = segments.size(0);
  at::Tensor merged, picked;

  AT_DISPATCH_FLOATING_TYPES(segments.scalar_type(), "nmw_1d", [&] {
    const scalar_t* seg = segments.const_data_ptr<scalar_t>();
    const scalar_t* score = scores.const_data_ptr<scalar_t>();
    const int64_t* label = idxs.const_data_ptr<int64_t>();
    std::vector<int64_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    // Ranks grouped by class, ascending within each class (classes never interact).
    std::vector<int64_t> by_class(N);
    std::iota(by_class.begin(), by_class.end(), 0);
    std::stable_sort(by_class.begin(), by_class.end(),
                     [&](int64_t a, int64_t b) { return label[order[a]] < label[order[b]]; });
    std::vector<int64_t> first{0};  // class c holds by_class[first[c] .. first[c + 1])
    for (int64_t r = 1; r < N; ++r) {
      if (label[order[by_class[r]]] != label[order[by_class[r - 1]]]) first.push_back(r);
    }
    first.push_back(N);
    const int64_t classes = N == 0 ? 0 : static_cast<int64_t>(first.size()) - 1;
    std::vector<std::vector<NmwPick<scalar_t>>> picks(classes);
    const scalar_t thr = static_cast<scalar_t>(iou_threshold);
    // Classes are independent: one per task, but only when the sweeps (at most n_c^2 / 2 pairs per
    // class, a few ns each) outweigh a fork/join. TALLFormer's 16.6k candidates in 20 classes
    // (6.9M pairs at most) took 14 ms serially and 110-400 ms with 2 threads on a busy 2-core VM.
    double pairs = 0;
    for (int64_t c = 0; c < classes; ++c) {
      const double n = double(first[c + 1] - first[c]);
      pairs += 0.5 * n * n;
    }
    const int64_t grain = pairs >= double(1 << 26) ? 1 : std::max<int64_t>(classes, 1);
    at::parallel_for(0, classes, grain, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t n = first[c + 1] - first[c];
        std::vector<int64_t> rank(n);
        std::vector<scalar_t> start(n), end(n), value(n);
        for (int64_t k = 0; k < n; ++k) {
          const int64_t r = by_class[first[c] + k], i = order[r];
          rank[k] = r, start[k] = seg[2 * i], end[k] = seg[2 * i + 1], value[k] = score[i];
        }
        nmw_class(rank, start, end, value, thr, max_output, picks[c]);
      }
    });
    std::vector<NmwPick<scalar_t>> all;
    for (const auto& p : picks) all.insert(all.end(), p.begin(), p.end());
    std::sort(all.begin(), all.end(), [](const NmwPick<scalar_t>& a, const NmwPick<scalar_t>& b) {
      return a.rank < b.rank;
    });
    const int64_t K = std::min(max_output, static_cast<int64_t>(all.size()));
    merged = at::empty({K, 2}, segments.options());
    picked = at::empty({K}, segments.options().dtype(at::kLong));
    scalar_t* out = merged.mutable_data_ptr<scalar_t>();
    int64_t* index = picked.mutable_data_ptr<int64_t>();
    for (int64_t k = 0; k < K; ++k) {
      out[2 * k] = all[k].start, out[2 * k + 1] = all[k].end, index[k] = order[all[k].rank];
    }
  });
  return {merged, picked};
}

}  // namespace fastlocal::cpu
