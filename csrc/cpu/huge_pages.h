// Fresh output tensors backed by transparent huge pages.
//
// The CPU kernels write their large outputs exactly once, and on Linux the first touch of
// each 4 KiB page faults and clears it: ~1 GB/s against ~10 GB/s for the writes themselves
// on the 2-core test machine, so for a 650 MB RoI map the faults cost more than the op.
// A 2 MiB-aligned block advised MADV_HUGEPAGE faults once per 2 MiB instead. Advisory
// only: with THP off or unavailable it is a plain aligned allocation.
// Only for blocks past glibc's largest dynamic mmap threshold (32 MiB on 64-bit): smaller
// ones malloc serves again from memory it keeps after a free, with no fault at all (2
// cores, topk_std fwd+bwd with 28 MiB gradients: 39 ms through here, 35 ms through malloc;
// with 38 MiB ones 56 ms here, 99 ms through malloc's fresh mmap).
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace fastlocal::cpu {

inline at::Tensor empty_huge(at::IntArrayRef sizes, const at::TensorOptions& options) {
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(sizes)) *
                       c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
  constexpr size_t kMallocReuses = size_t(32) << 20;
  if (bytes < kMallocReuses) return at::empty(sizes, options);
  const size_t len = (bytes + kHuge - 1) / kHuge * kHuge;
  void* data = nullptr;
  if (posix_memalign(&data, kHuge, len) != 0) return at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(data, len, MADV_HUGEPAGE);
#endif
  return at::from_blob(data, sizes, [](void* p) { std::free(p); }, options.device(at::kCPU));
}

}  // namespace fastlocal::cpu
