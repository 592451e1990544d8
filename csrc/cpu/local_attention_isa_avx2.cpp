// local_attention kernels for AVX2 + FMA, chosen at run time when the CPU has them.
// The target pragma comes after every include, so only the kernels defined below are
// built with these instructions (see local_attention.h).
#include <cmath>
#include <cstdint>

#include "local_attention.h"

#pragma GCC target("avx2,fma")

namespace fastlocal::cpu::local_attention::avx2 {
#include "local_attention_kernel.h"
}  // namespace fastlocal::cpu::local_attention::avx2
