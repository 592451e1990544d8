// Launchers of csrc/cuda/topk_std.cu (params: csrc/cuda/common.h conventions, except that
// q, k, v and the upstream gradient are read through their strides).
#pragma once

#include "common.h"

namespace fastlocal::cuda {

// Element strides of a [B, H, T, C] tensor.
struct TopkStdStrides {
  int64_t b, h, t, c;
};

// One problem per (batch, head): q, k [T, D], v [T, Dv]; R = keep + first kept rows.
struct TopkStdShape {
  int64_t batch, heads, length, dim, dim_v, keep;
  bool exclude_first, second_softmax;

  __host__ __device__ int64_t first() const { return exclude_first ? 1 : 0; }
  __host__ __device__ int64_t rows() const { return keep + first(); }
  __host__ __device__ int64_t problems() const { return batch * heads; }
};

// Forward: out [B, H, R, Dv] (contiguous), index [B, H, keep] (kept ranked rows, ascending),
// lse [B, H, R] (log-sum-exp of the kept rows' logits), as csrc/cpu/topk_std.cpp.
template <typename scalar_t>
struct TopkStdForwardParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  TopkStdStrides sq, sk, sv;
  scalar_t* out;
  int64_t* index;
  opmath_t<scalar_t>* lse;
  TopkStdShape shape;
  opmath_t<scalar_t> scale;
};

// Backward: grad [B, H, R, Dv] -> dq, dk, dv (contiguous, shapes of q, k, v). The index
// values are trusted: the glue has checked them to lie in [first, T).
template <typename scalar_t>
struct TopkStdBackwardParams {
  const scalar_t* grad;
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  TopkStdStrides sg, sq, sk, sv;
  const int64_t* index;
  const opmath_t<scalar_t>* lse;
  scalar_t* dq;
  scalar_t* dk;
  scalar_t* dv;
  TopkStdShape shape;
  opmath_t<scalar_t> scale;
};

// Dynamic shared memory of one block (one problem) in bytes, for an accumulation type of
// `acc_bytes` bytes; the glue compares it with the device's opt-in limit.
size_t topk_std_forward_smem_bytes(const TopkStdShape& shape, size_t acc_bytes);
size_t topk_std_backward_smem_bytes(const TopkStdShape& shape, size_t acc_bytes);

// Instantiated for __half, __nv_bfloat16, float and double in topk_std.cu.
template <typename scalar_t>
cudaError_t launch_topk_std_forward(const TopkStdForwardParams<scalar_t>& params, cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_topk_std_backward(const TopkStdBackwardParams<scalar_t>& params, cudaStream_t stream);

}  // namespace fastlocal::cuda
