// Python bindings of the CPU kernels: fastlocal._C.
#include <torch/extension.h>

#include "../cpu/ops.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastlocal CPU kernels (C++, OpenMP through at::parallel_for)";
  m.def("roi_align_1d_forward", &fastlocal::cpu::roi_align_1d_forward);
  m.def("roi_align_1d_backward", &fastlocal::cpu::roi_align_1d_backward);
  m.def("nms_1d", &fastlocal::cpu::nms_1d);
  m.def("soft_nms_1d", &fastlocal::cpu::soft_nms_1d);
  m.def("nmw_1d", &fastlocal::cpu::nmw_1d);
  m.def("local_attention_forward", &fastlocal::cpu::local_attention_forward);
  m.def("local_attention_backward", &fastlocal::cpu::local_attention_backward);
  m.def("local_attention_probs_forward", &fastlocal::cpu::local_attention_probs_forward);
  m.def("local_attention_probs_backward", &fastlocal::cpu::local_attention_probs_backward);
  m.def("topk_std_attention_forward", &fastlocal::cpu::topk_std_attention_forward);
  m.def("topk_std_attention_backward", &fastlocal::cpu::topk_std_attention_backward);
}
