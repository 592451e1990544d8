// Correctly rounded arithmetic that nvcc may neither contract into FMAs nor approximate
// under --use_fast_math (setup.py builds with it). Used wherever a kernel takes a discrete
// decision (which frame a RoI sample hits, whether an IoU exceeds the threshold), so that
// it rounds step by step as the CPU kernel does and decides the same way.
//
// The functions are __host__ __device__ so that the code using them can also be run on
// the host, e.g. to check it against the CPU kernel on a machine without a GPU.
#pragma once

#include <cuda_runtime.h>

namespace fastlocal::cuda {

#ifdef __CUDA_ARCH__
#define FASTLOCAL_ROUNDED(intrinsic, op) return intrinsic(a, b)
#else
#define FASTLOCAL_ROUNDED(intrinsic, op) return a op b
#endif

__host__ __device__ __forceinline__ float add_rn(float a, float b) { FASTLOCAL_ROUNDED(__fadd_rn, +); }
__host__ __device__ __forceinline__ float sub_rn(float a, float b) { FASTLOCAL_ROUNDED(__fsub_rn, -); }
__host__ __device__ __forceinline__ float mul_rn(float a, float b) { FASTLOCAL_ROUNDED(__fmul_rn, *); }
__host__ __device__ __forceinline__ float div_rn(float a, float b) { FASTLOCAL_ROUNDED(__fdiv_rn, /); }
__host__ __device__ __forceinline__ double add_rn(double a, double b) { FASTLOCAL_ROUNDED(__dadd_rn, +); }
__host__ __device__ __forceinline__ double sub_rn(double a, double b) { FASTLOCAL_ROUNDED(__dsub_rn, -); }
__host__ __device__ __forceinline__ double mul_rn(double a, double b) { FASTLOCAL_ROUNDED(__dmul_rn, *); }
__host__ __device__ __forceinline__ double div_rn(double a, double b) { FASTLOCAL_ROUNDED(__ddiv_rn, /); }

#undef FASTLOCAL_ROUNDED

}  // namespace fastlocal::cuda
