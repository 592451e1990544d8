// Attention distributions of selected query rows (TUT's boundary-aware loss reads these),
// laid out by window offset: probs[b, h, r, m] is key window_start(rows[b, r]) + m.
// A few rows per sequence, so plain loops; parallel over batch x heads, and the bias
// gradient is summed over batches in a fixed order (deterministic).
// Semantics: fastlocal/reference/local_attention.py, local_attention_probs.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "../common/local_attention_checks.h"
#include "local_attention.h"
#include "ops.h"

namespace fastlocal::cpu {
namespace {

struct Geometry {
  int64_t B, H, T, D, R, W, left, right, n_bias;
  bool shift;
  int64_t start(int64_t i) const {
    if (!shift) return i - left;
    return std::max<int64_t>(std::min<int64_t>(i - left, T - W), 0);
  }
  int64_t bias_offset() const { return shift ? left + right : left; }
};

// The shared checks (csrc/common/local_attention_checks.h), then the geometry they establish.
Geometry check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
               const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& pad, int64_t left,
               int64_t right, bool shift) {
  LocalAttentionSizes s = check_local_attention_probs_args(q, k, rows, rpb, left, right, shift, /*floating=*/false);
  check_local_attention_probs_rows_bias_mask(rows, rpb, pad, left, right, shift, s);
  return {s.batch, s.heads, s.length, s.dim, rows.size(1), left + right + 1, left, right, s.n_bias, shift};
}

// Calls f(m, j) for each visible key j = start(i) + m of query i.
template <typename F>
void for_visible(const Geometry& g, const bool* pad_row, int64_t i, F f) {
  const int64_t s = g.start(i);
  for (int64_t m = 0; m < g.W; ++m) {
    const int64_t j = s + m;
    if (j >= 0 && j < g.T && !(pad_row && pad_row[j])) f(m, j);
  }
}

}  // namespace

at::Tensor local_attention_probs_forward(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& rows_,
                                         const c10::optional<at::Tensor>& rpb_, const c10::optional<at::Tensor>& pad_,
                                         int64_t left, int64_t right, bool shift, double scale) {
  const Geometry g = check(q_, k_, rows_, rpb_, pad_, left, right, shift);
  const at::ScalarType acc = q_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor q = q_.to(acc).contiguous(), k = k_.to(acc).contiguous(), rows = rows_.contiguous();
  const at::Tensor rpb = rpb_ ? rpb_->to(acc).contiguous() : at::Tensor();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  at::Tensor probs = at::zeros({g.B, g.H, g.R, g.W}, q.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "local_attention_probs_forward", [&] {
    const scalar_t* qp = q.const_data_ptr<scalar_t>();
    const scalar_t* kp = k.const_data_ptr<scalar_t>();
    const scalar_t* bias = rpb.defined() ? rpb.const_data_ptr<scalar_t>() : nullptr;
    const int64_t* rp = rows.const_data_ptr<int64_t>();
    scalar_t* out = probs.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.B * g.H, 1, [&](int64_t bh0, int64_t bh1) {
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / g.H, h = bh % g.H;
        const bool* pad_row = pad.defined() ? pad.const_data_ptr<bool>() + b * g.T : nullptr;
        for (int64_t r = 0; r < g.R; ++r) {
          const int64_t i = rp[b * g.R + r];
          const scalar_t* qi = qp + (bh * g.T + i) * g.D;
          scalar_t* row = out + (bh * g.R + r) * g.W;
          scalar_t max = -std::numeric_limits<scalar_t>::infinity();
          std::vector<scalar_t> logit(g.W, max);
          for_visible(g, pad_row, i, [&](int64_t m, int64_t j) {
            const scalar_t* kj = kp + (bh * g.T + j) * g.D;
            scalar_t s = 0;
            for (int64_t d = 0; d < g.D; ++d) s += qi[d] * kj[d];
            s = s * scalar_t(scale) + (bias ? bias[h * g.n_bias + j - i + g.bias_offset()] : scalar_t(0));
            logit[m] = s;
            max = (s != s) | (s > max) ? s : max;  // NaN sticks (std::max would drop it)
          });
          if (max == -std::numeric_limits<scalar_t>::infinity()) continue;  // no visible key: zeros
          scalar_t sum = 0;
          for_visible(g, pad_row, i, [&](int64_t m, int64_t) { sum += row[m] = std::exp(logit[m] - max); });
          for_visible(g, pad_row, i, [&](int64_t m, int64_t) { row[m] /= sum; });
        }
      }
    });
  });
  return probs.to(q_.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_attention_probs_backward(
    const at::Tensor& grad_, const at::Tensor& probs_, const at::Tensor& q_, const at::Tensor& k_,
    const at::Tensor& rows_, const c10::optional<at::Tensor>& rpb_, const c10::optional<at::Tensor>& pad_,
    int64_t left, int64_t right, bool shift, double scale) {
  const Geometry g = check(q_, k_, rows_, rpb_, pad_, left, right, shift);
  check_local_attention_probs_backward(grad_, probs_, g.B, g.H, g.R, g.W);
  const at::ScalarType acc = q_.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor q = q_.to(acc).contiguous(), k = k_.to(acc).contiguous(), rows = rows_.contiguous();
  const at::Tensor grad = grad_.to(acc).contiguous(), probs = probs_.to(acc).contiguous();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  at::Tensor dq = at::zeros_like(q), dk = at::zeros_like(k);
  // One bias partial per (b, h), summed over b in order afterwards.
  at::Tensor dbias = at::zeros({g.B, g.H, std::max<int64_t>(g.n_bias, 1)}, q.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "local_attention_probs_backward", [&] {
    const scalar_t* qp = q.const_data_ptr<scalar_t>();
    const scalar_t* kp = k.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const scalar_t* pp = probs.const_data_ptr<scalar_t>();
    const int64_t* rp = rows.const_data_ptr<int64_t>();
    scalar_t* dqp = dq.mutable_data_ptr<scalar_t>();
    scalar_t* dkp = dk.mutable_data_ptr<scalar_t>();
    scalar_t* dbp = dbias.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, g.B * g.H, 1, [&](int64_t bh0, int64_t bh1) {
      for (int64_t bh = bh0; bh < bh1; ++bh) {
        const int64_t b = bh / g.H;
        const bool* pad_row = pad.defined() ? pad.const_data_ptr<bool>() + b * g.T : nullptr;
        for (int64_t r = 0; r < g.R; ++r) {
          const int64_t i = rp[b * g.R + r];
          const scalar_t* p = pp + (bh * g.R + r) * g.W;
          const scalar_t* gr = gp + (bh * g.R + r) * g.W;
          scalar_t inner = 0;  // sum_m p_m g_m over visible keys
          bool empty = true;   // every probability 0: the row was fully masked, no gradient
          for_visible(g, pad_row, i, [&](int64_t m, int64_t) {
            inner += p[m] * gr[m];
            empty = empty && p[m] == scalar_t(0);
          });
          if (empty) continue;  // (a NaN row has NaN probabilities, so it is never skipped)
          for_visible(g, pad_row, i, [&](int64_t m, int64_t j) {
            const scalar_t ds = p[m] * (gr[m] - inner);
            const scalar_t* qi = qp + (bh * g.T + i) * g.D;
            const scalar_t* kj = kp + (bh * g.T + j) * g.D;
            scalar_t* dqi = dqp + (bh * g.T + i) * g.D;
            scalar_t* dkj = dkp + (bh * g.T + j) * g.D;
            for (int64_t d = 0; d < g.D; ++d) {
              dqi[d] += scalar_t(scale) * ds * kj[d];
              dkj[d] += scalar_t(scale) * ds * qi[d];
            }
            if (g.n_bias) dbp[bh * g.n_bias + j - i + g.bias_offset()] += ds;
          });
        }
      }
    });
  });
  const at::ScalarType dtype = q_.scalar_type();
  at::Tensor drpb = rpb_ ? dbias.sum(0).to(rpb_->scalar_type()) : at::Tensor();
  return {dq.to(dtype), dk.to(dtype), drpb};
}

}  // namespace fastlocal::cpu
