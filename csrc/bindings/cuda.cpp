// Python bindings of the CUDA kernels: fastlocal._C_cuda, built only when torch has CUDA.
// Kernels: csrc/cuda/<op>.cu; torch glue: csrc/bindings/cuda_<op>.cpp (see cuda_glue.h).
#include <torch/extension.h>

#include "cuda_glue.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastlocal CUDA kernels (kernels in csrc/cuda, glue in csrc/bindings/cuda_*.cpp)";
  m.def("roi_align_1d_forward", &fastlocal::cuda::roi_align_1d_forward);
  m.def("roi_align_1d_backward", &fastlocal::cuda::roi_align_1d_backward);
  m.def("nms_1d", &fastlocal::cuda::nms_1d);
  m.def("soft_nms_1d", &fastlocal::cuda::soft_nms_1d);
  m.def("topk_std_attention_forward", &fastlocal::cuda::topk_std_attention_forward);
  m.def("topk_std_attention_backward", &fastlocal::cuda::topk_std_attention_backward);
  m.def("local_attention_forward", &fastlocal::cuda::local_attention_forward);
  m.def("local_attention_backward", &fastlocal::cuda::local_attention_backward);
  m.def("local_attention_probs_forward", &fastlocal::cuda::local_attention_probs_forward);
  m.def("local_attention_probs_backward", &fastlocal::cuda::local_attention_probs_backward);
}
