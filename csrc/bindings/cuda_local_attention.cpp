// Torch glue of the CUDA local attention kernels (csrc/cuda/local_attention.cu); mirrors
// csrc/cpu/local_attention.cpp and csrc/cpu/local_attention_probs.cpp: the same checks
// (csrc/common/local_attention_checks.h, plus the device checks here), the same outputs (out
// in the input dtype, lse and the accumulations in float32, float64 for float64). The kernels
// read q, k, v in their own dtype, contiguous.
#include <ATen/Dispatch.h>

#include <tuple>

#include "../common/local_attention_checks.h"
#include "../cuda/local_attention.h"
#include "cuda_glue.h"

namespace fastlocal::cuda {
namespace {

at::ScalarType acc_type(const at::Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

const uint8_t* pad_data(const at::Tensor& pad) {
  return pad.defined() ? reinterpret_cast<const uint8_t*>(pad.const_data_ptr<bool>()) : nullptr;
}

template <typename acc_t>
const acc_t* optional_data(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<acc_t>() : nullptr;
}

void check_devices(const at::Tensor& q, const at::Tensor& k, const c10::optional<at::Tensor>& rpb,
                   const c10::optional<at::Tensor>& pad) {
  TORCH_CHECK_VALUE(q.is_cuda(), "q must be a CUDA tensor, got device ", q.device());
  check_on_device("k", k, q.device());
  if (rpb) check_on_device("rpb", *rpb, q.device());
  if (pad) check_on_device("key_padding_mask", *pad, q.device());
}

LocalAttentionShape to_shape(const LocalAttentionSizes& s, int64_t left, int64_t right, bool shift) {
  return {s.batch, s.heads, s.length, s.dim, s.dim_v, left, right, shift, s.n_bias};
}

// The shared checks that guard memory (Python validates first; these repeat what a direct
// call could get wrong), then the devices.
LocalAttentionShape check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& pad, int64_t left,
                          int64_t right, bool shift) {
  const LocalAttentionSizes s = check_local_attention(q, k, v, rpb, pad, left, right, shift);
  check_devices(q, k, rpb, pad);
  check_on_device("v", v, q.device());
  return to_shape(s, left, right, shift);
}

// The probabilities' checks (v plays no part); devices before rows' values are read.
LocalAttentionShape check_probs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& rows,
                                const c10::optional<at::Tensor>& rpb, const c10::optional<at::Tensor>& pad,
                                int64_t left, int64_t right, bool shift) {
  LocalAttentionSizes s = check_local_attention_probs_args(q, k, rows, rpb, left, right, shift, /*floating=*/true);
  check_devices(q, k, rpb, pad);
  check_on_device("rows", rows, q.device());
  check_local_attention_probs_rows_bias_mask(rows, rpb, pad, left, right, shift, s);
  return to_shape(s, left, right, shift);
}

// The tiled kernels keep a few [tile, D] blocks in shared memory: refuse what no tile fits.
template <typename kernel_t>
void check_fits(const LocalAttentionShape& s, bool backward) {
  TORCH_CHECK_VALUE(local_attention_tile_rows<kernel_t>(s, backward) > 0, "local_attention (cuda): D = ", s.dim,
                    " and Dv = ", s.dim_v, " need more shared memory per block than this GPU has in ",
                    backward ? "the backward" : "the forward", "; use backend='triton' or smaller heads");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> local_attention_forward(const at::Tensor& q_, const at::Tensor& k_,
                                                           const at::Tensor& v_, const c10::optional<at::Tensor>& rpb_,
                                                           const c10::optional<at::Tensor>& pad_, int64_t left,
                                                           int64_t right, bool shift, double scale, double dropout_p,
                                                           int64_t seed) {
  const LocalAttentionShape s = check(q_, k_, v_, rpb_, pad_, left, right, shift);
  const c10::cuda::CUDAGuard device_guard(q_.device());
  const at::ScalarType acc = acc_type(q_);
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor rpb = rpb_ ? rpb_->to(acc).contiguous() : at::Tensor();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  at::Tensor out = at::empty({s.batch, s.heads, s.length, s.dim_v}, q.options());
  at::Tensor lse = at::empty({s.batch, s.heads, s.length}, q.options().dtype(acc));
  if (out.numel() == 0) return {out, lse};

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_forward", [&] {
    using kernel_t = cuda_type<scalar_t>;
    using acc_t = opmath_t<kernel_t>;
    check_fits<kernel_t>(s, false);
    LocalAttentionForwardParams<kernel_t> p{};
    p.q = cuda_data<scalar_t>(q);
    p.k = cuda_data<scalar_t>(k);
    p.v = cuda_data<scalar_t>(v);
    p.rpb = optional_data<acc_t>(rpb);
    p.pad = pad_data(pad);
    p.out = cuda_mutable_data<scalar_t>(out);
    p.lse = lse.mutable_data_ptr<acc_t>();
    p.shape = s;
    p.scale = acc_t(scale);
    p.dropout_p = dropout_p;
    p.seed = uint32_t(seed);
    C10_CUDA_CHECK(launch_local_attention_forward(p, stream));
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attention_backward(
    const at::Tensor& grad_, const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const at::Tensor& out_,
    const at::Tensor& lse_, const c10::optional<at::Tensor>& rpb_, const c10::optional<at::Tensor>& pad_,
    int64_t left, int64_t right, bool shift, double scale, double dropout_p, int64_t seed) {
  const LocalAttentionShape s = check(q_, k_, v_, rpb_, pad_, left, right, shift);
  check_local_attention_backward(grad_, out_, lse_, s);
  check_on_device("grad", grad_, q_.device());
  check_on_device("out", out_, q_.device());
  check_on_device("lse", lse_, q_.device());
  const c10::cuda::CUDAGuard device_guard(q_.device());
  const at::ScalarType acc = acc_type(q_), dtype = q_.scalar_type();
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  const at::Tensor grad = grad_.to(dtype).contiguous(), out = out_.to(dtype).contiguous();
  const at::Tensor lse = lse_.to(acc).contiguous();
  const at::Tensor rpb = rpb_ ? rpb_->to(acc).contiguous() : at::Tensor();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  // Zeros: the answer when B * H == 0 (no kernel runs); otherwise overwritten.
  at::Tensor drpb = rpb.defined() ? at::zeros_like(rpb) : at::Tensor();
  if (q.numel() != 0) {
    at::Tensor workspace = at::empty({local_attention_backward_workspace(s)}, q.options().dtype(acc));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "local_attention_backward", [&] {
      using kernel_t = cuda_type<scalar_t>;
      using acc_t = opmath_t<kernel_t>;
      check_fits<kernel_t>(s, true);
      LocalAttentionBackwardParams<kernel_t> p{};
      p.grad = cuda_data<scalar_t>(grad);
      p.q = cuda_data<scalar_t>(q);
      p.k = cuda_data<scalar_t>(k);
      p.v = cuda_data<scalar_t>(v);
      p.out = cuda_data<scalar_t>(out);
      p.lse = lse.const_data_ptr<acc_t>();
      p.rpb = optional_data<acc_t>(rpb);
      p.pad = pad_data(pad);
      p.dq = cuda_mutable_data<scalar_t>(dq);
      p.dk = cuda_mutable_data<scalar_t>(dk);
      p.dv = cuda_mutable_data<scalar_t>(dv);
      p.drpb = drpb.defined() ? drpb.mutable_data_ptr<acc_t>() : nullptr;
      p.workspace = workspace.mutable_data_ptr<acc_t>();
      p.shape = s;
      p.scale = acc_t(scale);
      p.dropout_p = dropout_p;
      p.seed = uint32_t(seed);
      C10_CUDA_CHECK(launch_local_attention_backward(p, stream));
    });
  }
  return {dq, dk, dv, drpb.defined() ? drpb.to(rpb_->scalar_type()) : drpb};
}

at::Tensor local_attention_probs_forward(const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& rows_,
                                         const c10::optional<at::Tensor>& rpb_, const c10::optional<at::Tensor>& pad_,
                                         int64_t left, int64_t right, bool shift, double scale) {
  const LocalAttentionShape s = check_probs(q_, k_, rows_, rpb_, pad_, left, right, shift);
  const c10::cuda::CUDAGuard device_guard(q_.device());
  const at::ScalarType acc = acc_type(q_);
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), rows = rows_.contiguous();
  const at::Tensor rpb = rpb_ ? rpb_->to(acc).contiguous() : at::Tensor();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  const int64_t R = rows.size(1);
  at::Tensor probs = at::empty({s.batch, s.heads, R, s.window()}, q.options().dtype(acc));
  if (probs.numel() != 0) {
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_probs_forward", [&] {
      using kernel_t = cuda_type<scalar_t>;
      using acc_t = opmath_t<kernel_t>;
      LocalAttentionProbsForwardParams<kernel_t> p{};
      p.q = cuda_data<scalar_t>(q);
      p.k = cuda_data<scalar_t>(k);
      p.rows = rows.const_data_ptr<int64_t>();
      p.rpb = optional_data<acc_t>(rpb);
      p.pad = pad_data(pad);
      p.probs = probs.mutable_data_ptr<acc_t>();
      p.num_rows = R;
      p.shape = s;
      p.scale = acc_t(scale);
      C10_CUDA_CHECK(launch_local_attention_probs_forward(p, stream));
    });
  }
  return probs.to(q_.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> local_attention_probs_backward(
    const at::Tensor& grad_, const at::Tensor& probs_, const at::Tensor& q_, const at::Tensor& k_,
    const at::Tensor& rows_, const c10::optional<at::Tensor>& rpb_, const c10::optional<at::Tensor>& pad_,
    int64_t left, int64_t right, bool shift, double scale) {
  const LocalAttentionShape s = check_probs(q_, k_, rows_, rpb_, pad_, left, right, shift);
  check_local_attention_probs_backward(grad_, probs_, s.batch, s.heads, rows_.size(1), s.window());
  check_on_device("grad", grad_, q_.device());
  check_on_device("probs", probs_, q_.device());
  const c10::cuda::CUDAGuard device_guard(q_.device());
  const at::ScalarType acc = acc_type(q_), dtype = q_.scalar_type();
  const at::Tensor q = q_.contiguous(), k = k_.contiguous(), rows = rows_.contiguous();
  const at::Tensor grad = grad_.to(dtype).contiguous(), probs = probs_.to(dtype).contiguous();
  const at::Tensor pad = pad_ ? pad_->contiguous() : at::Tensor();
  // Zero-filled: the kernel adds into them (rows may repeat, windows overlap).
  at::Tensor dq = at::zeros(q.sizes(), q.options().dtype(acc)), dk = at::zeros(k.sizes(), k.options().dtype(acc));
  at::Tensor drpb = rpb_ ? at::zeros({s.heads, s.n_bias}, q.options().dtype(acc)) : at::Tensor();
  if (q.numel() != 0) {
    at::Tensor workspace = at::empty({s.batch * s.heads * s.n_bias}, q.options().dtype(acc));
    const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "local_attention_probs_backward", [&] {
      using kernel_t = cuda_type<scalar_t>;
      using acc_t = opmath_t<kernel_t>;
      LocalAttentionProbsBackwardParams<kernel_t> p{};
      p.grad = cuda_data<scalar_t>(grad);
      p.probs = cuda_data<scalar_t>(probs);
      p.q = cuda_data<scalar_t>(q);
      p.k = cuda_data<scalar_t>(k);
      p.rows = rows.const_data_ptr<int64_t>();
      p.pad = pad_data(pad);
      p.dq = dq.mutable_data_ptr<acc_t>();
      p.dk = dk.mutable_data_ptr<acc_t>();
      p.drpb = drpb.defined() ? drpb.mutable_data_ptr<acc_t>() : nullptr;
      p.workspace = workspace.mutable_data_ptr<acc_t>();
      p.num_rows = rows.size(1);
      p.shape = s;
      p.scale = acc_t(scale);
      C10_CUDA_CHECK(launch_local_attention_probs_backward(p, stream));
    });
  }
  return {dq.to(dtype), dk.to(dtype), drpb.defined() ? drpb.to(rpb_->scalar_type()) : drpb};
}

}  // namespace fastlocal::cuda
