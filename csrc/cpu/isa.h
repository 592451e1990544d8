// Instruction-set dispatch for every CPU kernel. The library is built for baseline x86-64
// (the wheel runs anywhere); each kernel is also compiled for the levels listed in
// FASTLOCAL_CPU_ISA_LEVELS below and one is picked at run time.
//
// One mechanism: run_for_isa(isa, body), where body is a lambda holding a kernel's whole
// per-ISA work (e.g. the problems of one parallel task). It is called through a function
// template with __attribute__((target(...), flatten)): everything body calls is inlined
// there and compiled for that level, while every function left out of line (today only
// libm / libc calls) is the ordinary baseline build.
// Chosen over one translation unit per ISA (`#pragma GCC target` over a kernel header
// included in a namespace per ISA, which local_attention used): the pragma builds every
// inline function and template of its unit for the ISA, and the linker may keep such an
// AVX2 copy of a shared inline (std::, ATen, our headers) for code that must run anywhere,
// so kernels had to stay free of them, behind a plain interface, in a .cpp per op per ISA.
// Target attributes confine the ISA to the inlined copies: a kernel stays in its op's file
// and a new level (AVX-512, later) is one line of FASTLOCAL_CPU_ISA_LEVELS.
//
// FASTLOCAL_CPU_ISA=<level> (read on every call, so tests can run every build on one
// machine) caps the choice at that level: `baseline` forces the portable kernels, `avx2`
// allows at most AVX2. A level the CPU lacks is never used; any other value (as before)
// leaves the choice to the CPU, with no error.
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastlocal::cpu {

// The levels above baseline, lowest first: X(level, target attribute, CPU check).
// A new level is one line here, e.g. (a later issue)
//   X(avx512, "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma",
//     __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
//     __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
#define FASTLOCAL_CPU_ISA_LEVELS(X) \
  X(avx2, "avx2,fma", __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))

enum class Isa : int {
  baseline,
#define FASTLOCAL_ISA_ENUM(level, flags, check) level,
  FASTLOCAL_CPU_ISA_LEVELS(FASTLOCAL_ISA_ENUM)
#undef FASTLOCAL_ISA_ENUM
};

// The highest level this CPU supports (checked once).
inline Isa supported_isa() {
  static const Isa best = [] {
    Isa isa = Isa::baseline;
#define FASTLOCAL_ISA_CHECK(level, flags, check) \
  if (check) isa = Isa::level;
    FASTLOCAL_CPU_ISA_LEVELS(FASTLOCAL_ISA_CHECK)
#undef FASTLOCAL_ISA_CHECK
    return isa;
  }();
  return best;
}

// The level to run now: supported_isa(), capped by FASTLOCAL_CPU_ISA when it names a level.
inline Isa cpu_isa() {
  const Isa best = supported_isa();
  const char* forced = std::getenv("FASTLOCAL_CPU_ISA");
  if (forced == nullptr) return best;
  Isa want = best;
  if (std::strcmp(forced, "baseline") == 0) want = Isa::baseline;
#define FASTLOCAL_ISA_NAME(level, flags, check) \
  if (std::strcmp(forced, #level) == 0) want = Isa::level;
  FASTLOCAL_CPU_ISA_LEVELS(FASTLOCAL_ISA_NAME)
#undef FASTLOCAL_ISA_NAME
  return want < best ? want : best;
}

// body() with everything it calls inlined and compiled for one level: each instantiation
// is the whole kernel for one instruction set.
template <typename Body>
__attribute__((flatten)) void run_baseline(const Body& body) {
  body();
}

#define FASTLOCAL_ISA_RUNNER(level, flags, check)                            \
  template <typename Body>                                                    \
  __attribute__((target(flags), flatten)) void run_##level(const Body& body) { \
    body();                                                                   \
  }
FASTLOCAL_CPU_ISA_LEVELS(FASTLOCAL_ISA_RUNNER)
#undef FASTLOCAL_ISA_RUNNER

template <typename Body>
void run_for_isa(Isa isa, const Body& body) {
  switch (isa) {
#define FASTLOCAL_ISA_CASE(level, flags, check) \
  case Isa::level:                              \
    run_##level(body);                          \
    return;
    FASTLOCAL_CPU_ISA_LEVELS(FASTLOCAL_ISA_CASE)
#undef FASTLOCAL_ISA_CASE
    case Isa::baseline:
      break;
  }
  run_baseline(body);
}

}  // namespace fastlocal::cpu
