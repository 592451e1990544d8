// Argument checks shared by the CPU kernel and the CUDA glue of topk_std_attention.
// Python validates first; these repeat every check whose failure would make a kernel read or
// write out of bounds. Device checks stay with each backend.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fastlocal {

// q, k [B, H, T, D], v [B, H, T, Dv], one floating dtype; 1 <= keep <= ranked rows.
inline void check_topk_std_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t keep,
                                  bool exclude_first) {
  TORCH_CHECK_VALUE(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be 4-D [B, H, T, D]");
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
                   "q, k, v must share a dtype");
  TORCH_CHECK_TYPE(at::isFloatingType(q.scalar_type()), "q must be a floating tensor, got ", q.scalar_type());
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "k must have the shape of q ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK_VALUE(v.size(0) == q.size(0) && v.size(1) == q.size(1) && v.size(2) == q.size(2),
                    "v must be [B, H, T, Dv] with [B, H, T] of q, got ", v.sizes());
  const int64_t ranked = q.size(2) - (exclude_first ? 1 : 0);
  TORCH_CHECK_VALUE(keep >= 1 && keep <= ranked, "keep must be in [1, ", ranked, "], got ", keep);
}

// The backward's saved index [B, H, keep] and incoming grad [B, H, keep + exclude_first, Dv].
inline void check_topk_std_backward(const at::Tensor& grad, const at::Tensor& index, const at::Tensor& q,
                                    const at::Tensor& v, int64_t keep, bool exclude_first) {
  TORCH_CHECK_VALUE(index.size(0) == q.size(0) && index.size(1) == q.size(1), "index must be [B, H, keep], got ",
                    index.sizes());
  const int64_t rows = keep + (exclude_first ? 1 : 0);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == q.size(0) && grad.size(1) == q.size(1) &&
                        grad.size(2) == rows && grad.size(3) == v.size(3),
                    "grad must be [B, H, keep + exclude_first, Dv], got ", grad.sizes());
}

}  // namespace fastlocal
