// The CPU kernels' one vector layer: GCC vector extensions of 32 bytes (8 floats or 4
// doubles) and the small helpers every kernel uses on them.
//
// The types carry no instruction set: inside run_for_isa (isa.h) the same code compiles
// to AVX2 registers or to pairs of SSE2 ones. 32-byte vectors pass between internal,
// inlined functions only, so GCC's note about their ABI without AVX (-Wpsabi) is moot:
// it is silenced here for every file that includes this header.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastlocal::cpu::simd {

template <typename T>
struct Simd;
template <>
struct Simd<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t E;  // the integer lane of the same width (lane masks, indices, bits)
  typedef E I __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 8;
};
template <>
struct Simd<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t E;
  typedef E I __attribute__((vector_size(32)));
  static constexpr int64_t lanes = 4;
};

template <typename T>
using vec = typename Simd<T>::V;  // 32 bytes of T
template <typename T>
using ivec = typename Simd<T>::I;  // 32 bytes of integers as wide as T: masks of vec<T>
template <typename T>
constexpr int64_t kLanes = Simd<T>::lanes;

// 16-byte vectors (SSE2, in every x86-64 build): streaming stores, 4 x 4 transposes.
typedef float f32x4 __attribute__((vector_size(16)));
typedef double f64x2 __attribute__((vector_size(16)));

// Unaligned loads and stores of one vector (p needs only T's alignment).
template <typename T>
inline vec<T> vload(const T* p) {
  vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, vec<T> v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline vec<T> splat(T x) {
  return vec<T>{} + x;
}

// {0, 1, 2, ...}: the lane numbers, in any vector type V (vec<T> or ivec<T>).
template <typename V>
inline V iota() {
  V v{};
  for (int l = 0; l < int(sizeof(V) / sizeof(v[0])); ++l) v[l] = l;
  return v;
}

// v[0] + v[1] + ... in lane order.
template <typename T>
inline T hsum(vec<T> v) {
  T s = 0;
  for (int l = 0; l < kLanes<T>; ++l) s += v[l];
  return s;
}

template <typename T>
inline T hmax(vec<T> v) {
  T m = v[0];
  for (int l = 1; l < kLanes<T>; ++l) m = v[l] > m ? v[l] : m;
  return m;
}

inline int64_t ceil_to(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// e^x of 4 doubles by libm, lane by lane: float64 is the gradcheck path, exactness over
// speed. (Each kernel has its own float version: they round differently.)
inline vec<double> vexp(vec<double> x) {
  for (int l = 0; l < kLanes<double>; ++l) x[l] = std::exp(x[l]);
  return x;
}

}  // namespace fastlocal::cpu::simd
