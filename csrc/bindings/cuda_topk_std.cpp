// Torch glue of the CUDA topK-std attention kernels (csrc/cuda/topk_std.cu); mirrors csrc/cpu/topk_std.cpp.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../common/topk_std_checks.h"
#include "../cuda/topk_std.h"
#include "cuda_glue.h"

namespace fastlocal::cuda {
namespace {

TopkStdStrides strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t keep, bool exclude_first) {
  check_topk_std_inputs(q, k, v, keep, exclude_first);
  TORCH_CHECK_VALUE(q.is_cuda(), "q must be a CUDA tensor, got device ", q.device());
  check_on_device("k", k, q.device());
  check_on_device("v", v, q.device());
}

// A whole problem lives in one block's shared memory.
void check_shared_memory(size_t bytes, const at::Device& device, const TopkStdShape& shape) {
  int limit = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device.index()));
  TORCH_CHECK_VALUE(bytes <= static_cast<size_t>(limit), "topk_std_attention (cuda) keeps one [T, T] problem in ",
                    "shared memory: T=", shape.length, ", D=", shape.dim, ", Dv=", shape.dim_v, " need ", bytes,
                    " bytes, the device allows ", limit, " (use backend='cpu')");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                          const at::Tensor& v, int64_t keep,
                                                                          bool exclude_first, double scale,
                                                                          bool second_softmax) {
  check_inputs(q, k, v, keep, exclude_first);
  const c10::cuda::CUDAGuard device_guard(q.device());
  const TopkStdShape shape{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), keep, exclude_first,
                           second_softmax};
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor out = at::empty({shape.batch, shape.heads, shape.rows(), shape.dim_v}, q.options());
  at::Tensor index = at::empty({shape.batch, shape.heads, keep}, q.options().dtype(at::kLong));
  at::Tensor lse = at::empty({shape.batch, shape.heads, shape.rows()}, q.options().dtype(acc));
  if (shape.problems() == 0) return {out, index, lse};
  check_shared_memory(topk_std_forward_smem_bytes(shape, at::elementSize(acc)), q.device(), shape);

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "topk_std_attention_forward", [&] {
    using kernel_t = cuda_type<scalar_t>;
    TopkStdForwardParams<kernel_t> params;
    params.q = cuda_data<scalar_t>(q);
    params.k = cuda_data<scalar_t>(k);
    params.v = cuda_data<scalar_t>(v);
    params.sq = strides_of(q);
    params.sk = strides_of(k);
    params.sv = strides_of(v);
    params.out = cuda_mutable_data<scalar_t>(out);
    params.index = index.mutable_data_ptr<int64_t>();
    params.lse = lse.mutable_data_ptr<opmath_t<kernel_t>>();
    params.shape = shape;
    params.scale = static_cast<opmath_t<kernel_t>>(scale);
    C10_CUDA_CHECK(launch_topk_std_forward(params, stream));
  });
  return {out, index, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index_,
    const at::Tensor& lse_, bool exclude_first, double scale, bool second_softmax) {
  TORCH_CHECK_VALUE(index_.dim() == 3, "index must be [B, H, keep], got ", index_.sizes());
  const int64_t keep = index_.size(2);
  check_inputs(q, k, v, keep, exclude_first);
  check_on_device("grad", grad, q.device());
  check_on_device("index", index_, q.device());
  check_on_device("lse", lse_, q.device());
  const c10::cuda::CUDAGuard device_guard(q.device());
  const TopkStdShape shape{q.size(0), q.size(1), q.size(2), q.size(3), v.size(3), keep, exclude_first,
                           second_softmax};
  check_topk_std_backward(grad, index_, q, v, keep, exclude_first);
  TORCH_CHECK_VALUE(lse_.dim() == 3 && lse_.size(0) == shape.batch && lse_.size(1) == shape.heads &&
                        lse_.size(2) == shape.rows(),
                    "lse must be [B, H, keep + exclude_first], got ", lse_.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == q.scalar_type(), "grad must have the dtype of q");
  const at::ScalarType acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor index = index_.to(at::kLong).contiguous();
  const at::Tensor lse = lse_.to(acc).contiguous();
  at::Tensor dq = at::empty(q.sizes(), q.options()), dk = at::empty(k.sizes(), k.options());
  at::Tensor dv = at::empty(v.sizes(), v.options());
  if (shape.problems() == 0) return {dq, dk, dv};
  // The kernel gathers q rows by these values (one device-wide check, one sync).
  if (index.numel() > 0) {
    const auto [lo, hi] = at::aminmax(index);
    TORCH_CHECK_VALUE(lo.item<int64_t>() >= shape.first() && hi.item<int64_t>() < shape.length,
                      "index values must be in [", shape.first(), ", ", shape.length, ")");
  }
  check_shared_memory(topk_std_backward_smem_bytes(shape, at::elementSize(acc)), q.device(), shape);

  const cudaStream_t stream = at::cuda::getCurrentCUDAStream().stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "topk_std_attention_backward", [&] {
    using kernel_t = cuda_type<scalar_t>;
    TopkStdBackwardParams<kernel_t> params;
    params.grad = cuda_data<scalar_t>(grad);
    params.q = cuda_data<scalar_t>(q);
    params.k = cuda_data<scalar_t>(k);
    params.v = cuda_data<scalar_t>(v);
    params.sg = strides_of(grad);
    params.sq = strides_of(q);
    params.sk = strides_of(k);
    params.sv = strides_of(v);
    params.index = index.const_data_ptr<int64_t>();
    params.lse = lse.const_data_ptr<opmath_t<kernel_t>>();
    params.dq = cuda_mutable_data<scalar_t>(dq);
    params.dk = cuda_mutable_data<scalar_t>(dk);
    params.dv = cuda_mutable_data<scalar_t>(dv);
    params.shape = shape;
    params.scale = static_cast<opmath_t<kernel_t>>(scale);
    C10_CUDA_CHECK(launch_topk_std_backward(params, stream));
  });
  return {dq, dk, dv};
}

}  // namespace fastlocal::cuda
