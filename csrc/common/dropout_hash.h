// The counter-based dropout of fastlocal/reference/dropout.py, the one definition that the
// CPU kernel (csrc/cpu/local_attention_kernel.h) and the CUDA kernel
// (csrc/cuda/local_attention.cu) both use, so that every backend drops exactly the same
// attention probabilities (the tests compare the masks bit for bit with the reference).
//
// Probability (bh, i, j) (bh = b * H + h, query i, key j) is kept iff
//   hash32(hash32(hash32(hash32(bh) ^ seed) ^ i) ^ j) >= keep_threshold(p),
// all words uint32 (indices truncated to their low 32 bits), and kept ones are rescaled by
// 1 / (1 - p) by the kernels. Plain C++ without any library: it compiles with g++ and, as
// __host__ __device__ functions, with nvcc.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define FASTLOCAL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FASTLOCAL_HOST_DEVICE inline
#endif

namespace fastlocal::dropout {

// lowbias32 (Wellons): a bijection on 32-bit words.
FASTLOCAL_HOST_DEVICE uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}

// Probabilities whose hash is >= this are kept: P(drop) = threshold / 2^32 ~= p. 0 turns
// dropout off: for p <= 0, and for p so small that no word falls below it.
inline uint32_t keep_threshold(double p) {
  if (p <= 0.0) return 0;
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 4294967295u : uint32_t(t);
}

// The key of batch-head bh, then of its query row i (kernels keep either across a loop).
FASTLOCAL_HOST_DEVICE uint32_t head_key(uint32_t seed, int64_t bh) { return hash32(hash32(uint32_t(bh)) ^ seed); }
FASTLOCAL_HOST_DEVICE uint32_t row_key(uint32_t head_key, int64_t i) { return hash32(head_key ^ uint32_t(i)); }

// Whether key j of the row with this key is kept.
FASTLOCAL_HOST_DEVICE bool kept(uint32_t row_key, int64_t j, uint32_t threshold) {
  return hash32(row_key ^ uint32_t(j)) >= threshold;
}

}  // namespace fastlocal::dropout
