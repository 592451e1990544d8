// Launchers of csrc/cuda/local_attention.cu (params: csrc/cuda/common.h conventions).
// Semantics: fastlocal/reference/local_attention.py and the CPU kernels
// csrc/cpu/local_attention*.{h,cpp}, which these mirror.
#pragma once

#include "common.h"

namespace fastlocal::cuda {

// Sizes and window geometry shared by every local attention kernel (and by the glue).
// Window of query i: keys [keys_begin(i), keys_end(i)); both bounds are non-decreasing in i,
// which is what lets a tile of consecutive queries (or keys) find its band in O(1).
struct LocalAttentionShape {
  int64_t batch, heads, length, dim, dim_v;  // B, H, T, D, Dv
  int64_t left, right;                       // W = left + right + 1
  bool shift;                                // NATTEN edges (window moved inward) instead of clipped ones
  int64_t n_bias;                            // entries per head of rpb; 0 without a bias

  __host__ __device__ int64_t window() const { return left + right + 1; }
  __host__ __device__ int64_t bias_offset() const { return shift ? left + right : left; }
  // First key of query i's window (negative for clipped windows at the start).
  __host__ __device__ int64_t window_start(int64_t i) const {
    if (!shift) return i - left;
    const int64_t s = i - left < length - window() ? i - left : length - window();
    return s > 0 ? s : 0;
  }
  __host__ __device__ int64_t keys_begin(int64_t i) const {
    const int64_t s = window_start(i);
    return s > 0 ? s : 0;
  }
  __host__ __device__ int64_t keys_end(int64_t i) const {
    const int64_t e = window_start(i) + window();
    return e < length ? e : length;
  }
};

// Forward: q, k [B, H, T, D], v [B, H, T, Dv] -> out [B, H, T, Dv], lse [B, H, T]
// (-inf for a query with no visible key, whose output is 0).
template <typename scalar_t>
struct LocalAttentionForwardParams {
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const opmath_t<scalar_t>* rpb;  // [H, n_bias]; nullptr: no bias
  const uint8_t* pad;             // [B, T], 1 = padding key; nullptr: no padding
  scalar_t* out;
  opmath_t<scalar_t>* lse;
  LocalAttentionShape shape;
  opmath_t<scalar_t> scale;
  double dropout_p;  // 0 disables dropout
  uint32_t seed;
};

// Backward: recomputes the probabilities from lse. workspace holds
// local_attention_backward_workspace(shape) elements (uninitialised is fine); drpb [H, n_bias]
// is written when rpb is set. Deterministic: no atomics, fixed summation orders.
template <typename scalar_t>
struct LocalAttentionBackwardParams {
  const scalar_t* grad;  // dL/dout [B, H, T, Dv]
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* out;
  const opmath_t<scalar_t>* lse;
  const opmath_t<scalar_t>* rpb;
  const uint8_t* pad;
  scalar_t* dq;
  scalar_t* dk;
  scalar_t* dv;
  opmath_t<scalar_t>* drpb;
  opmath_t<scalar_t>* workspace;
  LocalAttentionShape shape;
  opmath_t<scalar_t> scale;
  double dropout_p;
  uint32_t seed;
};

// Elements of opmath_t the backward needs as workspace.
int64_t local_attention_backward_workspace(const LocalAttentionShape& shape);

// Query rows per tile the kernels of one direction would use on the current device for
// this shape and dtype; 0 when D / Dv need more shared memory than a block can have (the
// launchers then fail with cudaErrorInvalidValue).
template <typename scalar_t>
int local_attention_tile_rows(const LocalAttentionShape& shape, bool backward);

// Probabilities of selected rows: probs[b, h, r, m] = P(query rows[b, r] -> key
// window_start(i) + m), zero where that key is outside the sequence or padded.
template <typename scalar_t>
struct LocalAttentionProbsForwardParams {
  const scalar_t* q;
  const scalar_t* k;
  const int64_t* rows;  // [B, R], values in [0, T)
  const opmath_t<scalar_t>* rpb;
  const uint8_t* pad;
  opmath_t<scalar_t>* probs;  // [B, H, R, W]
  int64_t num_rows;           // R
  LocalAttentionShape shape;
  opmath_t<scalar_t> scale;
};

// Its backward: dq, dk [B, H, T, D] must be zero-filled by the caller (rows may repeat and
// windows overlap, so the kernel adds into them); workspace holds B * H * n_bias elements.
template <typename scalar_t>
struct LocalAttentionProbsBackwardParams {
  const scalar_t* grad;   // [B, H, R, W]
  const scalar_t* probs;  // [B, H, R, W], the forward's output
  const scalar_t* q;
  const scalar_t* k;
  const int64_t* rows;
  const uint8_t* pad;
  opmath_t<scalar_t>* dq;
  opmath_t<scalar_t>* dk;
  opmath_t<scalar_t>* drpb;  // [H, n_bias] when n_bias > 0
  opmath_t<scalar_t>* workspace;
  int64_t num_rows;
  LocalAttentionShape shape;
  opmath_t<scalar_t> scale;
};

// Instantiated for __half, __nv_bfloat16, float and double.
template <typename scalar_t>
cudaError_t launch_local_attention_forward(const LocalAttentionForwardParams<scalar_t>& params,
                                           cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_local_attention_backward(const LocalAttentionBackwardParams<scalar_t>& params,
                                            cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_local_attention_probs_forward(const LocalAttentionProbsForwardParams<scalar_t>& params,
                                                 cudaStream_t stream);
template <typename scalar_t>
cudaError_t launch_local_attention_probs_backward(const LocalAttentionProbsBackwardParams<scalar_t>& params,
                                                  cudaStream_t stream);

}  // namespace fastlocal::cuda
