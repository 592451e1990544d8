// VidTr's topK-std pooled temporal attention on CUDA: one thread block per (batch, head)
// problem (a [T, T] attention, T = 9..33 in VidTr), everything of size T x T in shared
// memory. Semantics follow csrc/cpu/topk_std.cpp step by step (fastlocal/reference/topk_std.py):
//   forward:  S = (scale q) k^T; per row (one warp) max, exp, sum and the unbiased std of
//             the probabilities; per ranked row (one thread) its rank = ranked rows that
//             beat it (larger std, NaN above all, ties to the lower index) and its output
//             position among the kept rows; kept rows normalised (second softmax optional);
//             out = A[kept] v; the kept rows' log-sum-exp saved for the backward.
//   backward: kept rows recomputed from the index and log-sum-exp; dv = A'^T dout,
//             dS = A * (dA - rowsum(A dA)) (through the second softmax first), dq = dS k *
//             scale on the kept rows (0 elsewhere), dk = dS^T q * scale.
// Every output element is written by exactly one thread: no atomics, deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "topk_std.h"

namespace fastlocal::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kMaxBlocks = 1 << 20;  // grid-stride beyond this many problems

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

__device__ __forceinline__ void store(__half* dst, float v) { *dst = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16* dst, float v) { *dst = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(float* dst, float v) { *dst = v; }
__device__ __forceinline__ void store(double* dst, double v) { *dst = v; }

__device__ __forceinline__ float exp_of(float x) { return expf(x); }
__device__ __forceinline__ double exp_of(double x) { return exp(x); }
__device__ __forceinline__ float log_of(float x) { return logf(x); }
__device__ __forceinline__ double log_of(double x) { return log(x); }
__device__ __forceinline__ float sqrt_of(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_of(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <typename T>
__device__ __forceinline__ T warp_max(T x) {
  for (int offset = 16; offset > 0; offset >>= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Row j ranks before row i (the CPU kernel's ranks_before).
template <typename T>
__device__ __forceinline__ bool ranks_before(T sj, int64_t j, T si, int64_t i) {
  const bool nj = isnan(sj), ni = isnan(si);
  if (nj != ni) return nj;
  if (!nj && sj != si) return sj > si;
  return j < i;
}

// Element offset of row t, column c of problem (b, h) in a strided [B, H, T, C] tensor.
__device__ __forceinline__ int64_t at(const TopkStdStrides& s, int64_t b, int64_t h, int64_t t, int64_t c) {
  return b * s.b + h * s.h + t * s.t + c * s.c;
}

// Shared memory of one block, in elements of the accumulation type, then int32 row lists.
// k and v rows are padded by one element so that threads walking keys hit distinct banks.
struct ForwardSmem {
  int64_t q, k, v, s, w, stats, acc_elems;  // offsets / total of the accumulation-type part
  int64_t ints;                             // int32 entries: kept flags [T], kept rows [R]
  __host__ __device__ explicit ForwardSmem(const TopkStdShape& sh) {
    const int64_t n = sh.length;
    q = 0;
    k = q + n * sh.dim;
    v = k + n * (sh.dim + 1);
    s = v + n * (sh.dim_v + 1);
    w = s + n * n;
    stats = w + sh.rows() * n;  // max, sum, score per row
    acc_elems = stats + 3 * n;
    ints = n + sh.rows();
  }
};

struct BackwardSmem {
  int64_t q, k, v, g, a, a2, da, acc_elems;
  int64_t ints;  // kept rows [R], row -> kept position or -1 [T]
  __host__ __device__ explicit BackwardSmem(const TopkStdShape& sh) {
    const int64_t n = sh.length, r = sh.rows();
    q = 0;
    k = q + r * sh.dim;
    v = k + n * (sh.dim + 1);
    g = v + n * (sh.dim_v + 1);
    a = g + r * sh.dim_v;
    a2 = a + r * n;
    da = a2 + (sh.second_softmax ? r * n : 0);
    acc_elems = da + r * n;
    ints = r + n;
  }
};

template <typename Layout>
size_t smem_bytes(const TopkStdShape& shape, size_t acc_bytes) {
  const Layout l(shape);
  return static_cast<size_t>(l.acc_elems) * acc_bytes + static_cast<size_t>(l.ints) * sizeof(int);
}

// row[0:n] <- exp(row - max), by one warp; returns the sum (every lane) and the max in `max`.
template <typename T>
__device__ __forceinline__ T warp_exp_row(T* row, int64_t n, int lane, T& max) {
  T m = -INFINITY;
  for (int64_t j = lane; j < n; j += 32) m = fmax(m, row[j]);
  m = warp_max(m);
  T sum = 0;
  for (int64_t j = lane; j < n; j += 32) {
    const T e = exp_of(row[j] - m);
    row[j] = e;
    sum += e;
  }
  max = m;
  return warp_sum(sum);
}

// Softmax of row[0:n] in place, by one warp.
template <typename T>
__device__ __forceinline__ void warp_softmax(T* row, int64_t n, int lane) {
  T m;
  const T inv = T(1) / warp_exp_row(row, n, lane, m);
  for (int64_t j = lane; j < n; j += 32) row[j] *= inv;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) topk_std_forward_kernel(const TopkStdForwardParams<scalar_t> p) {
  using T = opmath_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TopkStdShape& sh = p.shape;
  const ForwardSmem lay(sh);
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *q = sm + lay.q, *k = sm + lay.k, *v = sm + lay.v, *s = sm + lay.s, *w = sm + lay.w;
  T *rmax = sm + lay.stats, *rsum = rmax + sh.length, *score = rsum + sh.length;
  int* kept = reinterpret_cast<int*>(sm + lay.acc_elems);
  int* sel = kept + sh.length;
  const int64_t n = sh.length, D = sh.dim, Dv = sh.dim_v, R = sh.rows(), first = sh.first();
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  for (int64_t bh = blockIdx.x; bh < sh.problems(); bh += gridDim.x) {
    const int64_t b = bh / sh.heads, h = bh % sh.heads;
    for (int64_t e = tid; e < n * D; e += kThreads) {
      const int64_t t = e / D, c = e % D;
      q[e] = to_acc(p.q[at(p.sq, b, h, t, c)]) * p.scale;
      k[t * (D + 1) + c] = to_acc(p.k[at(p.sk, b, h, t, c)]);
    }
    for (int64_t e = tid; e < n * Dv; e += kThreads) {
      const int64_t t = e / Dv, c = e % Dv;
      v[t * (Dv + 1) + c] = to_acc(p.v[at(p.sv, b, h, t, c)]);
    }
    __syncthreads();
    for (int64_t e = tid; e < n * n; e += kThreads) {
      const T* qi = q + (e / n) * D;
      const T* kj = k + (e % n) * (D + 1);
      T acc = 0;
      for (int64_t c = 0; c < D; ++c) acc += qi[c] * kj[c];
      s[e] = acc;
    }
    __syncthreads();
    for (int64_t i = warp; i < n; i += kWarps) {  // one warp per row: exp(S - max), sum, std
      T* row = s + i * n;
      T m;
      const T sum = warp_exp_row(row, n, lane, m);
      const T mean = sum / T(n);
      T sq = 0;
      for (int64_t j = lane; j < n; j += 32) sq += (row[j] - mean) * (row[j] - mean);
      sq = warp_sum(sq);
      if (lane == 0) {
        rmax[i] = m;
        rsum[i] = sum;
        score[i] = n > 1 ? sqrt_of(sq / T(n - 1)) / sum : T(0);  // std(A_i) = std(e_i) / sum(e_i)
      }
    }
    __syncthreads();
    for (int64_t i = tid; i < n; i += kThreads) {
      int64_t rank = 0;
      if (i >= first)
        for (int64_t j = first; j < n && rank < sh.keep; ++j) rank += ranks_before(score[j], j, score[i], i);
      kept[i] = i < first || rank < sh.keep;
    }
    __syncthreads();
    for (int64_t i = tid; i < n; i += kThreads) {
      if (!kept[i]) continue;
      int position = 0;
      for (int64_t j = 0; j < i; ++j) position += kept[j];
      sel[position] = static_cast<int>(i);
    }
    __syncthreads();
    for (int64_t r = warp; r < R; r += kWarps) {  // one warp per kept row
      const int64_t i = sel[r];
      const T inv = T(1) / rsum[i];
      for (int64_t j = lane; j < n; j += 32) w[r * n + j] = s[i * n + j] * inv;
      if (sh.second_softmax) {
        __syncwarp();
        warp_softmax(w + r * n, n, lane);
      }
      if (lane == 0) {
        p.lse[bh * R + r] = rmax[i] + log_of(rsum[i]);
        if (r >= first) p.index[bh * sh.keep + r - first] = i;
      }
    }
    __syncthreads();
    for (int64_t e = tid; e < R * Dv; e += kThreads) {
      const int64_t r = e / Dv, c = e % Dv;
      T acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += w[r * n + j] * v[j * (Dv + 1) + c];
      store(p.out + bh * R * Dv + e, acc);
    }
    __syncthreads();  // the next problem overwrites the shared memory
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads) topk_std_backward_kernel(const TopkStdBackwardParams<scalar_t> p) {
  using T = opmath_t<scalar_t>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const TopkStdShape& sh = p.shape;
  const BackwardSmem lay(sh);
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *q = sm + lay.q, *k = sm + lay.k, *v = sm + lay.v, *g = sm + lay.g, *a = sm + lay.a, *da = sm + lay.da;
  T* used = sh.second_softmax ? sm + lay.a2 : a;  // the rows that multiply v
  int* sel = reinterpret_cast<int*>(sm + lay.acc_elems);
  int* position = sel + sh.rows();
  const int64_t n = sh.length, D = sh.dim, Dv = sh.dim_v, R = sh.rows(), first = sh.first();
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  for (int64_t bh = blockIdx.x; bh < sh.problems(); bh += gridDim.x) {
    const int64_t b = bh / sh.heads, h = bh % sh.heads;
    for (int64_t i = tid; i < n; i += kThreads) position[i] = -1;
    for (int64_t r = tid; r < R; r += kThreads)
      sel[r] = r < first ? 0 : static_cast<int>(p.index[bh * sh.keep + r - first]);
    __syncthreads();
    for (int64_t r = tid; r < R; r += kThreads) position[sel[r]] = static_cast<int>(r);
    for (int64_t e = tid; e < R * D; e += kThreads) {
      const int64_t r = e / D, c = e % D;
      q[e] = to_acc(p.q[at(p.sq, b, h, sel[r], c)]) * p.scale;
    }
    for (int64_t e = tid; e < R * Dv; e += kThreads) g[e] = to_acc(p.grad[at(p.sg, b, h, e / Dv, e % Dv)]);
    for (int64_t e = tid; e < n * D; e += kThreads) {
      const int64_t t = e / D, c = e % D;
      k[t * (D + 1) + c] = to_acc(p.k[at(p.sk, b, h, t, c)]);
    }
    for (int64_t e = tid; e < n * Dv; e += kThreads) {
      const int64_t t = e / Dv, c = e % Dv;
      v[t * (Dv + 1) + c] = to_acc(p.v[at(p.sv, b, h, t, c)]);
    }
    __syncthreads();
    for (int64_t e = tid; e < R * n; e += kThreads) {  // A = exp(S - lse), dA = dout v^T
      const int64_t r = e / n, j = e % n;
      const T *qr = q + r * D, *kj = k + j * (D + 1), *gr = g + r * Dv, *vj = v + j * (Dv + 1);
      T dot = 0;
      for (int64_t c = 0; c < D; ++c) dot += qr[c] * kj[c];
      a[e] = exp_of(dot - p.lse[bh * R + r]);
      T dot_v = 0;
      for (int64_t c = 0; c < Dv; ++c) dot_v += gr[c] * vj[c];
      da[e] = dot_v;
    }
    __syncthreads();
    for (int64_t r = warp; r < R; r += kWarps) {  // one warp per kept row
      T* ar = a + r * n;
      T* dar = da + r * n;
      if (sh.second_softmax) {  // A' = softmax(A): dA = A' * (dA' - sum_j A' dA')
        T* a2r = used + r * n;
        for (int64_t j = lane; j < n; j += 32) a2r[j] = ar[j];
        __syncwarp();
        warp_softmax(a2r, n, lane);
        __syncwarp();
        T dot = 0;
        for (int64_t j = lane; j < n; j += 32) dot += a2r[j] * dar[j];
        dot = warp_sum(dot);
        for (int64_t j = lane; j < n; j += 32) dar[j] = a2r[j] * (dar[j] - dot);
      }
      T dot = 0;
      for (int64_t j = lane; j < n; j += 32) dot += ar[j] * dar[j];
      dot = warp_sum(dot);
      for (int64_t j = lane; j < n; j += 32) dar[j] = ar[j] * (dar[j] - dot);  // dS
    }
    __syncthreads();
    scalar_t* dq = p.dq + bh * n * D;
    scalar_t* dk = p.dk + bh * n * D;
    scalar_t* dv = p.dv + bh * n * Dv;
    for (int64_t e = tid; e < n * Dv; e += kThreads) {  // dv = used^T dout
      const int64_t j = e / Dv, c = e % Dv;
      T acc = 0;
      for (int64_t r = 0; r < R; ++r) acc += used[r * n + j] * g[r * Dv + c];
      store(dv + e, acc);
    }
    for (int64_t e = tid; e < n * D; e += kThreads) {
      const int64_t t = e / D, c = e % D;
      T acc_k = 0;  // dk = dS^T (scale q)
      for (int64_t r = 0; r < R; ++r) acc_k += da[r * n + t] * q[r * D + c];
      store(dk + e, acc_k);
      const int r = position[t];  // dq = scale dS k on kept rows, 0 elsewhere
      T acc_q = 0;
      if (r >= 0)
        for (int64_t j = 0; j < n; ++j) acc_q += da[r * n + j] * k[j * (D + 1) + c];
      store(dq + e, acc_q * p.scale);
    }
    __syncthreads();
  }
}

// One block per problem (grid-stride past kMaxBlocks); above the default 48 KiB of dynamic
// shared memory the kernel opts in, which fails cleanly beyond the device's limit.
template <typename Layout, typename scalar_t, typename Params>
cudaError_t launch(void (*kernel)(Params), const Params& params, cudaStream_t stream) {
  const int64_t problems = params.shape.problems();
  if (problems == 0) return cudaSuccess;
  const size_t bytes = smem_bytes<Layout>(params.shape, sizeof(opmath_t<scalar_t>));
  if (bytes > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 static_cast<int>(bytes));
    if (err != cudaSuccess) return err;
  }
  const auto blocks = static_cast<unsigned int>(std::min<int64_t>(problems, kMaxBlocks));
  kernel<<<blocks, kThreads, bytes, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace

size_t topk_std_forward_smem_bytes(const TopkStdShape& shape, size_t acc_bytes) {
  return smem_bytes<ForwardSmem>(shape, acc_bytes);
}

size_t topk_std_backward_smem_bytes(const TopkStdShape& shape, size_t acc_bytes) {
  return smem_bytes<BackwardSmem>(shape, acc_bytes);
}

template <typename scalar_t>
cudaError_t launch_topk_std_forward(const TopkStdForwardParams<scalar_t>& params, cudaStream_t stream) {
  return launch<ForwardSmem, scalar_t>(topk_std_forward_kernel<scalar_t>, params, stream);
}

template <typename scalar_t>
cudaError_t launch_topk_std_backward(const TopkStdBackwardParams<scalar_t>& params, cudaStream_t stream) {
  return launch<BackwardSmem, scalar_t>(topk_std_backward_kernel<scalar_t>, params, stream);
}

#define FASTLOCAL_INSTANTIATE(T)                                                                         \
  template cudaError_t launch_topk_std_forward<T>(const TopkStdForwardParams<T>&, cudaStream_t);        \
  template cudaError_t launch_topk_std_backward<T>(const TopkStdBackwardParams<T>&, cudaStream_t);
FASTLOCAL_INSTANTIATE(__half)
FASTLOCAL_INSTANTIATE(__nv_bfloat16)
FASTLOCAL_INSTANTIATE(float)
FASTLOCAL_INSTANTIATE(double)
#undef FASTLOCAL_INSTANTIATE

}  // namespace fastlocal::cuda
