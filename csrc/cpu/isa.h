// Instruction-set dispatch for the CPU kernels: they are built for baseline x86-64 (the
// wheel runs anywhere) and, where it pays, for AVX2 + FMA, picked at run time.
#pragma once

#include <cstdlib>
#include <string>

namespace fastlocal::cpu {

// AVX2 + FMA when the CPU has them; FASTLOCAL_CPU_ISA=baseline forces the portable kernels
// (read per call, so tests can run both builds on one machine).
inline bool use_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* forced = std::getenv("FASTLOCAL_CPU_ISA");
  return supported && !(forced != nullptr && std::string(forced) == "baseline");
}

// body() with everything it calls inlined (`flatten`) and compiled for AVX2 + FMA or for
// baseline x86-64: each instantiation is the whole kernel for one instruction set.
template <typename Body>
__attribute__((target("avx2,fma"), flatten)) void run_avx2(const Body& body) {
  body();
}

template <typename Body>
__attribute__((flatten)) void run_baseline(const Body& body) {
  body();
}

template <typename Body>
void run_for_isa(bool avx2, const Body& body) {
  if (avx2) run_avx2(body);
  else run_baseline(body);
}

}  // namespace fastlocal::cpu
