// Argument checks shared by the CPU glue (csrc/cpu/local_attention.cpp,
// csrc/cpu/local_attention_probs.cpp) and the CUDA glue (csrc/bindings/cuda_local_attention.cpp)
// of local_attention and local_attention_probs. Python validates first; these repeat every
// check that guards memory, so no direct call can make a kernel read or write out of bounds.
// Device checks (is_cuda, one device) are the CUDA glue's own.
#pragma once

#include <ATen/ATen.h>

namespace fastlocal {

// The sizes the checks establish: q/k [B, H, T, D], v [B, H, T, Dv], rpb [H, n_bias].
struct LocalAttentionSizes {
  int64_t batch, heads, length, dim, dim_v;  // B, H, T, D, Dv (Dv = D for the probabilities)
  int64_t n_bias;                            // entries per head of rpb; 0 without a bias
};

// Entries per head of rpb: one per relative offset a window can hold.
inline int64_t local_attention_bias_entries(int64_t left, int64_t right, bool shift) {
  return shift ? 2 * (left + right) + 1 : left + right + 1;
}

// Window offsets of a direct call, made safe before any arithmetic on them: without a bias
// table, an offset beyond T - 1 is the same band as T - 1 (Window.clamped in
// fastlocal/local_attention.py), so left = 2**62 becomes T - 1 and cannot overflow; with
// one, each offset must be below rpb's size (which bounds them as memory does).
inline void clamp_local_attention_window(int64_t& left, int64_t& right, int64_t length,
                                         const c10::optional<at::Tensor>& rpb) {
  TORCH_CHECK_VALUE(left >= 0 && right >= 0, "window_left and window_right must be >= 0");
  if (!rpb) {
    left = left < length - 1 ? left : length - 1;
    right = right < length - 1 ? right : length - 1;
    return;
  }
  const int64_t entries = rpb->dim() == 2 ? rpb->size(1) : 0;
  TORCH_CHECK_VALUE(left < entries && right < entries, "rpb must hold one entry per window offset: window_left=",
                    left, ", window_right=", right, ", got rpb of shape ", rpb->sizes());
}

inline void check_local_attention_floating(const at::Tensor& q) {
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()), "q must be a floating tensor, got ", q.scalar_type());
}

// local_attention_forward / _backward: q, k, v, the window, rpb and key_padding_mask.
inline LocalAttentionSizes check_local_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const c10::optional<at::Tensor>& rpb,
                                                 const c10::optional<at::Tensor>& pad, int64_t& left, int64_t& right,
                                                 bool shift) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be 4-D [B, H, T, D]");
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "q, k, v must share a dtype");
  check_local_attention_floating(q);
  LocalAttentionSizes s{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), 0};
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "k must have the shape of q ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK_VALUE(v.size(0) == s.batch && v.size(1) == s.heads && v.size(2) == s.length,
                    "v must be [B, H, T, Dv], got ", v.sizes());
  TORCH_CHECK_VALUE(s.length >= 1 && s.dim >= 1 && s.dim_v >= 1, "T, D and Dv must be >= 1");
  TORCH_CHECK_VALUE(left >= 0 && right >= 0, "window_left and window_right must be >= 0");
  TORCH_CHECK_VALUE(!shift || left == right, "edge='shift' requires a symmetric window");
  clamp_local_attention_window(left, right, s.length, rpb);
  if (rpb) {
    const int64_t expected = local_attention_bias_entries(left, right, shift);
    TORCH_CHECK_VALUE(rpb->dim() == 2 && rpb->size(0) == s.heads && rpb->size(1) == expected, "rpb must be [",
                      s.heads, ", ", expected, "], got ", rpb->sizes());
    s.n_bias = expected;
  }
  if (pad) {
    TORCH_CHECK_TYPE(pad->scalar_type() == at::kBool, "key_padding_mask must be bool");
    TORCH_CHECK_VALUE(pad->dim() == 2 && pad->size(0) == s.batch && pad->size(1) == s.length,
                      "key_padding_mask must be [B, T], got ", pad->sizes());
  }
  return s;
}

// local_attention_backward's extra inputs: grad and out [B, H, T, Dv], lse [B, H, T]. Shape is
// LocalAttentionSizes or the CUDA glue's LocalAttentionShape (both name batch, heads, length, dim_v).
template <typename Shape>
inline void check_local_attention_backward(const at::Tensor& grad, const at::Tensor& out, const at::Tensor& lse,
                                           const Shape& s) {
  TORCH_CHECK_VALUE(grad.sizes() == out.sizes() && out.size(0) == s.batch && out.size(1) == s.heads &&
                        out.size(2) == s.length && out.size(3) == s.dim_v,
                    "grad and out must be [B, H, T, Dv]");
  TORCH_CHECK_VALUE(lse.dim() == 3 && lse.size(0) == s.batch && lse.size(1) == s.heads && lse.size(2) == s.length,
                    "lse must be [B, H, T]");
}

// local_attention_probs_forward / _backward (v plays no part), in two steps so that the CUDA
// glue can check devices between them, before rows' values are read:
//   1. q and k, the window, rows' dtype and shape (floating: also require a floating q, as
//      the CUDA glue does; the CPU glue accepts any dtype there and converts);
//   2. rows' values, rpb (sets s.n_bias) and key_padding_mask.
inline LocalAttentionSizes check_local_attention_probs_args(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& rows,
                                                            const c10::optional<at::Tensor>& rpb, int64_t& left,
                                                            int64_t& right, bool shift, bool floating) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.sizes() == q.sizes(), "q and k must be [B, H, T, D] of one shape");
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type(), "q and k must share a dtype");
  if (floating) check_local_attention_floating(q);
  TORCH_CHECK_VALUE(left >= 0 && right >= 0 && (!shift || left == right), "invalid window");
  const LocalAttentionSizes s{q.size(0), q.size(1), q.size(2), q.size(3), q.size(3), 0};
  TORCH_CHECK_VALUE(s.length >= 1, "T must be >= 1");
  // The output is laid out by window offset, so offsets are not clamped here (Python does not
  // either); bounded so that left + right + 1 and the bias size cannot overflow.
  constexpr int64_t kMaxOffset = int64_t(1) << 40;
  TORCH_CHECK_VALUE(left <= kMaxOffset && right <= kMaxOffset, "window_left and window_right must be <= 2**40, got ",
                    left, " and ", right);
  (void)rpb;
  TORCH_CHECK_TYPE(rows.scalar_type() == at::kLong, "rows must be int64");
  TORCH_CHECK_VALUE(rows.dim() == 2 && rows.size(0) == s.batch, "rows must be [B, R], got ", rows.sizes());
  return s;
}

inline void check_local_attention_probs_rows_bias_mask(const at::Tensor& rows, const c10::optional<at::Tensor>& rpb,
                                                       const c10::optional<at::Tensor>& pad, int64_t left,
                                                       int64_t right, bool shift, LocalAttentionSizes& s) {
  if (rows.numel())
    TORCH_CHECK_VALUE(((rows >= 0) & (rows < s.length)).all().item<bool>(), "rows must be in [0, ", s.length, ")");
  if (rpb) {
    s.n_bias = local_attention_bias_entries(left, right, shift);
    TORCH_CHECK_VALUE(rpb->dim() == 2 && rpb->size(0) == s.heads && rpb->size(1) == s.n_bias, "rpb must be [",
                      s.heads, ", ", s.n_bias, "], got ", rpb->sizes());
  }
  if (pad)
    TORCH_CHECK_VALUE(pad->scalar_type() == at::kBool && pad->dim() == 2 && pad->size(0) == s.batch &&
                          pad->size(1) == s.length,
                      "key_padding_mask must be bool [B, T]");
}

// local_attention_probs_backward's extra inputs: grad and probs [B, H, R, window].
inline void check_local_attention_probs_backward(const at::Tensor& grad, const at::Tensor& probs, int64_t batch,
                                                 int64_t heads, int64_t num_rows, int64_t window) {
  TORCH_CHECK_VALUE(grad.sizes() == probs.sizes() && probs.dim() == 4 && probs.size(0) == batch &&
                        probs.size(1) == heads && probs.size(2) == num_rows && probs.size(3) == window,
                    "grad and probs must be [B, H, R, window]");
}

}  // namespace fastlocal
