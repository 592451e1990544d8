// Declarations of the CPU kernels bound into fastlocal._C (see csrc/bindings/cpu.cpp).
#pragma once

#include <ATen/ATen.h>

#include <tuple>

namespace fastlocal::cpu {

#include "../common/op_declarations.inc"  // IWYU pragma: export

}  // namespace fastlocal::cpu
