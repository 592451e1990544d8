// local_attention kernels for any x86-64 (SSE2): the fallback of the runtime dispatch.
#include <cmath>
#include <cstdint>

#include "local_attention.h"

// The kernels pass 32-byte vectors between inlined internal functions only: no ABI to keep.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastlocal::cpu::local_attention::baseline {
#include "local_attention_kernel.h"
}  // namespace fastlocal::cpu::local_attention::baseline
