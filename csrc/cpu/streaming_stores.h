// Streaming (non-temporal) stores for large outputs.
//
// A normal store first reads its cache line from memory, then overwrites it. An output far
// larger than the caches is never read back from them, so the kernels write such outputs
// with streaming stores, which skip that read (on the 2-core test machine: topk_std
// fwd+bwd at C-VidTr-S, min 44 -> 38 ms). The stores are weakly ordered: a task that used
// them ends with finish_streaming().
#pragma once

#include <ATen/ATen.h>
#include <emmintrin.h>  // SSE2: part of every x86-64 build

#include <cstdint>

#include "vec.h"

namespace fastlocal::cpu {

// Outputs from this size on are streamed: past the last-level cache share of a core group
// (32 MiB per Zen CCD, less per core on Xeons) nothing of them would be read back from
// cache anyway.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// Whether `out` is large enough to stream, and 16-byte aligned as the stores need.
inline bool stream_output(const at::Tensor& out) {
  return out.nbytes() >= static_cast<size_t>(kStreamBytes) &&
         reinterpret_cast<uintptr_t>(out.const_data_ptr()) % 16 == 0;
}

// 16 bytes at p (16-byte aligned), bypassing the caches.
inline void stream16(float* p, simd::f32x4 v) { _mm_stream_ps(p, (__m128)v); }
inline void stream16(double* p, simd::f64x2 v) { _mm_stream_pd(p, (__m128d)v); }

inline void finish_streaming() { _mm_sfence(); }

}  // namespace fastlocal::cpu
