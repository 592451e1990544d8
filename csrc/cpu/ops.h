// Declarations of the CPU kernels bound into fastlocal._C (see csrc/bindings/cpu.cpp).
// Arguments are validated in Python; each kernel re-checks what it indexes with.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastlocal::cpu {

// input [B, C, T] (any float dtype), rois [N, 3] float32/float64 (b, start, end) -> [N, C, P]
at::Tensor roi_align_1d_forward(const at::Tensor& input, const at::Tensor& rois, int64_t output_size,
                                int64_t sampling_ratio, bool aligned);
// grad [N, C, P] -> grad_input [B, C, T] (deterministic: one thread owns a channel)
at::Tensor roi_align_1d_backward(const at::Tensor& grad, const at::Tensor& rois, int64_t batch,
                                 int64_t length, int64_t sampling_ratio, bool aligned);

// segments [N, 2], scores [N] (float32/float64) -> kept indices, int64, by decreasing score
at::Tensor nms_1d(const at::Tensor& segments, const at::Tensor& scores, double iou_threshold);

// Banded local attention (fastlocal/reference/local_attention.py). q, k [B, H, T, D],
// v [B, H, T, Dv]; seed drives the counter-based dropout. Returns (out, lse [B, H, T]).
std::tuple<at::Tensor, at::Tensor> local_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v, const c10::optional<at::Tensor>& rpb,
                                                           const c10::optional<at::Tensor>& key_padding_mask,
                                                           int64_t left, int64_t right, bool shift, double scale,
                                                           double dropout_p, int64_t seed);
// Returns (dq, dk, dv, drpb); drpb is undefined without rpb. Deterministic.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& key_padding_mask,
    int64_t left, int64_t right, bool shift, double scale, double dropout_p, int64_t seed);

// rows [B, R] int64 -> probs [B, H, R, left + right + 1].
at::Tensor local_attention_probs_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
                                         const c10::optional<at::Tensor>& rpb,
                                         const c10::optional<at::Tensor>& key_padding_mask, int64_t left,
                                         int64_t right, bool shift, double scale);
// Returns (dq, dk, drpb); drpb is undefined without rpb.
std::tuple<at::Tensor, at::Tensor, at::Tensor> local_attention_probs_backward(
    const at::Tensor& grad, const at::Tensor& probs, const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
    const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& key_padding_mask, int64_t left,
    int64_t right, bool shift, double scale);

// VidTr topK-std pooled attention (fastlocal/reference/topk_std.py). q, k [B, H, T, D],
// v [B, H, T, Dv], any strides -> (out [B, H, R, Dv], index [B, H, keep] int64 ascending,
// lse [B, H, R] float32/float64 of the kept rows), R = keep + exclude_first.
std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                          const at::Tensor& v, int64_t keep,
                                                                          bool exclude_first, double scale,
                                                                          bool second_softmax);
// grad [B, H, R, Dv] -> (dq, dk, dv); keep = index.size(2). Deterministic.
std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index,
    const at::Tensor& lse, bool exclude_first, double scale, bool second_softmax);

}  // namespace fastlocal::cpu
