// Banded local attention on CUDA (docs/design.md §1): forward, backward, and the probabilities of
// selected rows. Semantics follow fastlocal/reference/local_attention.py and mirror the CPU
// kernels (csrc/cpu/local_attention_kernel.h, local_attention_probs.cpp); launchers are
// declared in local_attention.h.
//
// Algorithm (flash-attention style). A block owns a tile of `rows` consecutive queries of
// one (batch, head); since window bounds are monotone in i, the tile's keys are one
// contiguous band [keys_begin(i0), keys_end(i1 - 1)), visited in key tiles of `rows` keys.
// Each key tile costs three tile products in shared memory: S = Q K^T, then a masked,
// biased online-softmax update, then O += P V. Nothing of size T x window reaches global
// memory; the forward saves the per-row log-sum-exp, from which the backward recomputes P.
//
// Tile products: __half / __nv_bfloat16 use tensor cores through WMMA 16x16x16 with float
// accumulators (P and dS are rounded to the input type before their products, as in
// flash-attention); float / double use plain FMAs, 4 x 4 outputs per thread. D and Dv are
// zero-padded to multiples of 16 in shared memory, so both paths see whole 16 x 16 tiles
// for any head dim. The tile size (64, 32 or 16) is chosen at launch from the shared
// memory the head dims need.
//
// Backward, deterministic without atomics (no float atomics anywhere):
//   * delta_kernel: D_i = sum_c dO[i, c] * O[i, c] per row;
//   * dkdv_kernel (key-major): a block owns a key tile and loops over the query tiles
//     whose windows meet it (a contiguous range of rows), accumulating dK and dV in
//     shared memory; each dK / dV row has one owner, so no reduction is needed;
//   * dq_kernel (query-major): a block owns a chunk of query rows, accumulates dQ, and
//     adds dS along each bias diagonal into a private partial row of the bias gradient;
//   * bias_reduce_kernel sums those partials over batches and chunks in a fixed order.
// The price of splitting dQ from dK / dV is recomputing S and dP twice (7 tile products
// per key tile instead of 5), which buys bitwise reproducible gradients.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../common/dropout_hash.h"
#include "local_attention.h"

namespace fastlocal::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

template <typename E>
constexpr bool kTensorCores = std::is_same_v<E, __half> || std::is_same_v<E, __nv_bfloat16>;

template <typename X>
__host__ __device__ __forceinline__ X ceil_div(X a, X b) {
  return (a + b - 1) / b;
}

template <typename X>
__device__ __forceinline__ X neg_inf() {
  return X(-INFINITY);
}

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

// Round to nearest even, as at::Half / at::BFloat16 do on the CPU.
template <typename E>
__device__ __forceinline__ E from_acc(opmath_t<E> x) {
  if constexpr (std::is_same_v<E, __half>) return __float2half_rn(x);
  else if constexpr (std::is_same_v<E, __nv_bfloat16>) return __float2bfloat16_rn(x);
  else return x;
}

__device__ __forceinline__ float exp_acc(float x) { return expf(x); }
__device__ __forceinline__ double exp_acc(double x) { return exp(x); }
__device__ __forceinline__ float log_acc(float x) { return logf(x); }
__device__ __forceinline__ double log_acc(double x) { return log(x); }

template <typename X>
__device__ __forceinline__ X max_of(X a, X b) {
  return a > b ? a : b;
}

// Butterfly reductions: every lane ends with the same value, in a fixed order.
template <typename X>
__device__ __forceinline__ X warp_max(X x) {
  for (int offset = 16; offset > 0; offset /= 2) x = max_of(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}
template <typename X>
__device__ __forceinline__ X warp_sum(X x) {
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Block-wide sum or max (every thread gets it); `scratch` holds kWarps values. Fixed order,
// and ends with a barrier so that scratch can be reused (and earlier writes are visible).
template <bool kMax, typename X>
__device__ X block_reduce(X x, X* scratch) {
  x = kMax ? warp_max(x) : warp_sum(x);
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
  __syncthreads();
  X r = scratch[0];
  for (int w = 1; w < kWarps; ++w) r = kMax ? max_of(r, scratch[w]) : r + scratch[w];
  __syncthreads();
  return r;
}

// ---- dropout: the counter-based hash of fastlocal/reference/dropout.py ------------------

// Probability (bh, i, j) is kept iff hash(hash(hash(hash(bh) ^ seed) ^ i) ^ j) >= threshold
// (csrc/common/dropout_hash.h, shared with the CPU kernel), and kept ones are rescaled by
// 1 / (1 - p).
template <typename Acc>
struct Dropout {
  uint32_t threshold;  // 0: dropout off (also for p so small that no word falls below it, as on the CPU)
  uint32_t seed;
  Acc keep_scale;

  __device__ uint32_t row_key(int64_t bh, int64_t i) const {
    return dropout::row_key(dropout::head_key(seed, bh), i);
  }
  // The factor the probability of (row, j) is multiplied by: 1 without dropout.
  __device__ Acc factor(uint32_t row_key, int64_t j) const {
    if (threshold == 0) return Acc(1);
    return dropout::kept(row_key, j, threshold) ? keep_scale : Acc(0);
  }
};

template <typename Acc>
Dropout<Acc> make_dropout(double p, uint32_t seed) {
  Dropout<Acc> d{dropout::keep_threshold(p), seed, Acc(1)};
  if (p > 0.0) d.keep_scale = Acc(1) / (Acc(1) - Acc(p));
  return d;
}

// ---- window geometry --------------------------------------------------------------------

// What the logit of a pair needs about one (batch, head).
template <typename Acc>
struct HeadView {
  const LocalAttentionShape& shape;
  const Acc* bias;     // rpb row of head h, or nullptr
  const uint8_t* pad;  // padding row of batch b, or nullptr
  Acc scale;

  // score * scale + bias, or -inf when key j is outside query i's window (or i outside
  // the sequence) or padded: the masks are applied before the softmax.
  __device__ Acc logit(Acc score, int64_t i, int64_t j) const {
    if (i >= shape.length || j < shape.keys_begin(i) || j >= shape.keys_end(i)) return neg_inf<Acc>();
    if (pad != nullptr && pad[j]) return neg_inf<Acc>();
    const Acc x = score * scale;
    return bias != nullptr ? x + bias[j - i + shape.bias_offset()] : x;
  }
};

template <typename Acc>
__device__ HeadView<Acc> head_view(const LocalAttentionShape& sh, const Acc* rpb, const uint8_t* pad, Acc scale,
                                   int64_t bh) {
  const int64_t b = bh / sh.heads, h = bh % sh.heads;
  return {sh, rpb != nullptr ? rpb + h * sh.n_bias : nullptr, pad != nullptr ? pad + b * sh.length : nullptr,
          scale};
}

// Smallest i in [0, T] with pred(i), for a predicate that is false then true along i.
template <typename Pred>
__device__ int64_t first_row(int64_t length, Pred pred) {
  int64_t lo = 0, hi = length;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (pred(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

// ---- tiles in shared memory ---------------------------------------------------------------

// A tile is `rows` queries (or keys) by the head dims rounded up to 16.
template <typename E>
struct Tile {
  int rows, dp, dvp;

  // Leading dimension (elements) of a shared array of n columns of X. WMMA: padded by 16
  // bytes, which keeps fragments 32-byte aligned and staggers rows across banks. FMA path:
  // an odd stride, so threads reading consecutive rows hit distinct banks.
  template <typename X>
  __host__ __device__ int ld(int n) const {
    return kTensorCores<E> ? n + int(16 / sizeof(X)) : n + 1;
  }
};

template <typename E>
Tile<E> make_tile(int rows, const LocalAttentionShape& sh) {
  return {rows, int(ceil_div<int64_t>(sh.dim, 16) * 16), int(ceil_div<int64_t>(sh.dim_v, 16) * 16)};
}

__device__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char smem[];
  return smem;
}

// Hands out 128-byte aligned pieces of the dynamic shared memory. The host runs the same
// carving with base 0 to learn the size, so kernel and launcher cannot disagree.
struct Carver {
  uintptr_t base;
  size_t bytes = 0;

  template <typename X>
  __host__ __device__ X* take(int64_t count) {
    X* p = reinterpret_cast<X*>(base + bytes);
    bytes += (size_t(count) * sizeof(X) + 127) / 128 * 128;
    return p;
  }
};

template <typename E>
struct ForwardSmem {
  using Acc = opmath_t<E>;
  E *q, *k, *v, *p;      // Q tile, key tile, value tile, probabilities (dropout applied)
  Acc *s, *o;            // logits, output accumulator
  Acc *row_max, *row_sum;  // online-softmax state per query
  size_t bytes;

  __host__ __device__ ForwardSmem(const Tile<E>& t, uintptr_t base) {
    Carver c{base};
    q = c.take<E>(t.rows * t.template ld<E>(t.dp));
    k = c.take<E>(t.rows * t.template ld<E>(t.dp));
    v = c.take<E>(t.rows * t.template ld<E>(t.dvp));
    p = c.take<E>(t.rows * t.template ld<E>(t.rows));
    s = c.take<Acc>(t.rows * t.template ld<Acc>(t.rows));
    o = c.take<Acc>(t.rows * t.template ld<Acc>(t.dvp));
    row_max = c.take<Acc>(t.rows);
    row_sum = c.take<Acc>(t.rows);
    bytes = c.bytes;
  }
};

// Both backward kernels; the key-major one also needs p (for dV) and acc_v.
template <typename E>
struct BackwardSmem {
  using Acc = opmath_t<E>;
  E *q, *dout, *k, *v, *p, *ds;
  Acc *s, *dp;           // logits (the dq kernel then keeps dS there), dO V^T
  Acc *acc_k, *acc_v;    // dK and dV (key-major) or dQ (query-major, acc_k only)
  Acc *lse, *delta;      // per query of the current query tile
  size_t bytes;

  __host__ __device__ BackwardSmem(const Tile<E>& t, uintptr_t base, bool key_major) {
    Carver c{base};
    q = c.take<E>(t.rows * t.template ld<E>(t.dp));
    dout = c.take<E>(t.rows * t.template ld<E>(t.dvp));
    k = c.take<E>(t.rows * t.template ld<E>(t.dp));
    v = c.take<E>(t.rows * t.template ld<E>(t.dvp));
    p = key_major ? c.take<E>(t.rows * t.template ld<E>(t.rows)) : nullptr;
    ds = c.take<E>(t.rows * t.template ld<E>(t.rows));
    s = c.take<Acc>(t.rows * t.template ld<Acc>(t.rows));
    dp = c.take<Acc>(t.rows * t.template ld<Acc>(t.rows));
    acc_k = c.take<Acc>(t.rows * t.template ld<Acc>(t.dp));
    acc_v = key_major ? c.take<Acc>(t.rows * t.template ld<Acc>(t.dvp)) : nullptr;
    lse = c.take<Acc>(t.rows);
    delta = c.take<Acc>(t.rows);
    bytes = c.bytes;
  }
};

// dst[r][c] = src[(first + r) * dim + c] where first + r < limit and c < dim, else 0
// (r < rows, c < dim_p): the zeros make padded rows and head-dim columns inert in products.
template <typename E>
__device__ void load_rows(E* dst, int ld, const E* src, int64_t first, int64_t limit, int rows, int64_t dim,
                          int dim_p) {
  for (int idx = threadIdx.x; idx < rows * dim_p; idx += kThreads) {
    const int r = idx / dim_p, c = idx % dim_p;
    const int64_t row = first + r;
    dst[r * ld + c] = row < limit && c < dim ? src[row * dim + c] : from_acc<E>(0);
  }
}

template <typename X>
__device__ void fill(X* dst, int count, X value) {
  for (int idx = threadIdx.x; idx < count; idx += kThreads) dst[idx] = value;
}

// C[M][N] = (accumulate ? C : 0) + op(A)[M][K] op(B)[K][N], everything in shared memory,
// M, N, K multiples of 16. op(A)(m, k) = kTransA ? A[k * lda + m] : A[m * lda + k];
// op(B)(k, n) = kTransB ? B[n * ldb + k] : B[k * ldb + n]. The caller synchronises.
template <bool kTransA, bool kTransB, typename E>
__device__ void tile_mm_wmma(const E* A, int lda, const E* B, int ldb, float* C, int ldc, int M, int N, int K,
                             bool accumulate) {
  using namespace nvcuda;
  using LayoutA = std::conditional_t<kTransA, wmma::col_major, wmma::row_major>;
  using LayoutB = std::conditional_t<kTransB, wmma::col_major, wmma::row_major>;
  const int tiles_n = N / 16;
  for (int f = threadIdx.x / 32; f < (M / 16) * tiles_n; f += kWarps) {
    const int m0 = f / tiles_n * 16, n0 = f % tiles_n * 16;
    float* c_ptr = C + m0 * ldc + n0;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
    if (accumulate) wmma::load_matrix_sync(c, c_ptr, ldc, wmma::mem_row_major);
    else wmma::fill_fragment(c, 0.0f);
    for (int k0 = 0; k0 < K; k0 += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, E, LayoutA> a;
      wmma::fragment<wmma::matrix_b, 16, 16, 16, E, LayoutB> b;
      wmma::load_matrix_sync(a, kTransA ? A + k0 * lda + m0 : A + m0 * lda + k0, lda);
      wmma::load_matrix_sync(b, kTransB ? B + n0 * ldb + k0 : B + k0 * ldb + n0, ldb);
      wmma::mma_sync(c, a, b, c);
    }
    wmma::store_matrix_sync(c_ptr, c, ldc, wmma::mem_row_major);
  }
}

// Same contract with FMAs (float, double). Thread t owns rows m0 + a * M/4 and columns
// n0 + b * N/4 (a, b < 4): strided rather than adjacent outputs, so a warp reads
// consecutive rows / columns of shared memory without bank conflicts.
template <bool kTransA, bool kTransB, typename X>
__device__ void tile_mm_fma(const X* A, int lda, const X* B, int ldb, X* C, int ldc, int M, int N, int K,
                            bool accumulate) {
  constexpr int R = 4;
  const int stride_m = M / R, stride_n = N / R;
  for (int t = threadIdx.x; t < stride_m * stride_n; t += kThreads) {
    const int m0 = t / stride_n, n0 = t % stride_n;
    X c[R][R];
#pragma unroll
    for (int a = 0; a < R; ++a)
#pragma unroll
      for (int b = 0; b < R; ++b) c[a][b] = accumulate ? C[(m0 + a * stride_m) * ldc + n0 + b * stride_n] : X(0);
    for (int k = 0; k < K; ++k) {
      X av[R], bv[R];
#pragma unroll
      for (int x = 0; x < R; ++x) {
        const int m = m0 + x * stride_m, n = n0 + x * stride_n;
        av[x] = kTransA ? A[k * lda + m] : A[m * lda + k];
        bv[x] = kTransB ? B[n * ldb + k] : B[k * ldb + n];
      }
#pragma unroll
      for (int a = 0; a < R; ++a)
#pragma unroll
        for (int b = 0; b < R; ++b) c[a][b] += av[a] * bv[b];
    }
#pragma unroll
    for (int a = 0; a < R; ++a)
#pragma unroll
      for (int b = 0; b < R; ++b) C[(m0 + a * stride_m) * ldc + n0 + b * stride_n] = c[a][b];
  }
}

template <bool kTransA, bool kTransB, typename E>
__device__ void tile_mm(const E* A, int lda, const E* B, int ldb, opmath_t<E>* C, int ldc, int M, int N, int K,
                        bool accumulate) {
  if constexpr (kTensorCores<E>) tile_mm_wmma<kTransA, kTransB>(A, lda, B, ldb, C, ldc, M, N, K, accumulate);
  else tile_mm_fma<kTransA, kTransB>(A, lda, B, ldb, C, ldc, M, N, K, accumulate);
}

// ---- forward ------------------------------------------------------------------------------

// One key tile's online-softmax update, a warp per query row: mask and bias the logits in
// s, raise the row max, rescale what o and the row sum hold by exp(old max - new max), and
// write exp(logit - new max) times the dropout factor to p (the sum is taken before
// dropout: dropout rescales probabilities, not the normaliser).
template <typename E>
__device__ void online_softmax_step(const ForwardSmem<E>& sm, const Tile<E>& t, const HeadView<opmath_t<E>>& head,
                                    const Dropout<opmath_t<E>>& drop, int64_t bh, int64_t i0, int64_t key0) {
  using Acc = opmath_t<E>;
  const int lane = threadIdx.x % 32;
  const int ld_s = t.template ld<Acc>(t.rows), ld_p = t.template ld<E>(t.rows), ld_o = t.template ld<Acc>(t.dvp);
  for (int r = threadIdx.x / 32; r < t.rows; r += kWarps) {
    const int64_t i = i0 + r;
    Acc* s_row = sm.s + r * ld_s;
    Acc tile_max = neg_inf<Acc>();
    for (int c = lane; c < t.rows; c += 32) {
      const Acc x = head.logit(s_row[c], i, key0 + c);
      s_row[c] = x;
      tile_max = max_of(tile_max, x);
    }
    tile_max = warp_max(tile_max);
    const Acc old_max = sm.row_max[r];
    const Acc new_max = max_of(old_max, tile_max);
    // While a row has seen no visible key its max is -inf and o, sum are 0: exp(-inf - -inf)
    // would be NaN, so rescale by 0 instead.
    const Acc rescale = old_max == neg_inf<Acc>() ? Acc(0) : exp_acc(old_max - new_max);
    const uint32_t row_key = drop.row_key(bh, i);
    E* p_row = sm.p + r * ld_p;
    Acc sum = 0;
    for (int c = lane; c < t.rows; c += 32) {
      const Acc x = s_row[c];
      const Acc e = x == neg_inf<Acc>() ? Acc(0) : exp_acc(x - new_max);
      sum += e;
      p_row[c] = from_acc<E>(e * drop.factor(row_key, key0 + c));
    }
    sum = warp_sum(sum);
    Acc* o_row = sm.o + r * ld_o;
    for (int c = lane; c < t.dvp; c += 32) o_row[c] *= rescale;
    __syncwarp();  // every lane has read row_max[r] before lane 0 replaces it
    if (lane == 0) {
      sm.row_max[r] = new_max;
      sm.row_sum[r] = sm.row_sum[r] * rescale + sum;
    }
  }
}

template <typename E>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const LocalAttentionForwardParams<E> p, const Tile<E> t, const Dropout<opmath_t<E>> drop) {
  using Acc = opmath_t<E>;
  const LocalAttentionShape& sh = p.shape;
  const ForwardSmem<E> sm(t, reinterpret_cast<uintptr_t>(dynamic_smem()));
  const int ld_q = t.template ld<E>(t.dp), ld_v = t.template ld<E>(t.dvp);
  const int ld_p = t.template ld<E>(t.rows), ld_s = t.template ld<Acc>(t.rows), ld_o = t.template ld<Acc>(t.dvp);
  const int64_t tiles = ceil_div<int64_t>(sh.length, t.rows);
  const int64_t bh = blockIdx.x / tiles;
  const int64_t i0 = blockIdx.x % tiles * t.rows;
  const int64_t i1 = i0 + t.rows < sh.length ? i0 + t.rows : sh.length;
  const HeadView<Acc> head = head_view(sh, p.rpb, p.pad, p.scale, bh);
  const E* q = p.q + bh * sh.length * sh.dim;
  const E* k = p.k + bh * sh.length * sh.dim;
  const E* v = p.v + bh * sh.length * sh.dim_v;

  load_rows(sm.q, ld_q, q, i0, sh.length, t.rows, sh.dim, t.dp);
  fill(sm.o, t.rows * ld_o, Acc(0));
  fill(sm.row_max, t.rows, neg_inf<Acc>());
  fill(sm.row_sum, t.rows, Acc(0));
  // The band of the tile: windows are monotone, so its first and last rows bound it.
  const int64_t key_end = sh.keys_end(i1 - 1);
  for (int64_t key0 = sh.keys_begin(i0); key0 < key_end; key0 += t.rows) {
    load_rows(sm.k, ld_q, k, key0, key_end, t.rows, sh.dim, t.dp);
    load_rows(sm.v, ld_v, v, key0, key_end, t.rows, sh.dim_v, t.dvp);
    __syncthreads();
    tile_mm<false, true>(sm.q, ld_q, sm.k, ld_q, sm.s, ld_s, t.rows, t.rows, t.dp, false);
    __syncthreads();
    online_softmax_step(sm, t, head, drop, bh, i0, key0);
    __syncthreads();
    tile_mm<false, false>(sm.p, ld_p, sm.v, ld_v, sm.o, ld_o, t.rows, t.dvp, t.rows, true);
    __syncthreads();
  }

  // A row with no visible key keeps max = -inf: output 0 and lse = -inf, as on the CPU.
  E* out = p.out + bh * sh.length * sh.dim_v;
  for (int idx = threadIdx.x; idx < t.rows * sh.dim_v; idx += kThreads) {
    const int r = idx / int(sh.dim_v), c = idx % int(sh.dim_v);
    if (i0 + r >= i1) continue;
    const bool empty = sm.row_max[r] == neg_inf<Acc>();
    out[(i0 + r) * sh.dim_v + c] = from_acc<E>(empty ? Acc(0) : sm.o[r * ld_o + c] * (Acc(1) / sm.row_sum[r]));
  }
  for (int r = threadIdx.x; r < i1 - i0; r += kThreads) {
    const Acc m = sm.row_max[r];
    p.lse[bh * sh.length + i0 + r] = m == neg_inf<Acc>() ? m : m + log_acc(sm.row_sum[r]);
  }
}

// ---- backward -----------------------------------------------------------------------------

// delta[row] = sum_c grad[row, c] * out[row, c], a warp per row.
template <typename E>
__global__ void __launch_bounds__(kThreads)
    delta_kernel(const E* grad, const E* out, opmath_t<E>* delta, int64_t num_rows, int64_t dim_v) {
  const int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= num_rows) return;
  opmath_t<E> sum = 0;
  for (int64_t c = threadIdx.x % 32; c < dim_v; c += 32)
    sum += to_acc(grad[row * dim_v + c]) * to_acc(out[row * dim_v + c]);
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) delta[row] = sum;
}

template <typename Acc>
struct PairGrad {
  Acc p_drop;  // the probability as it multiplied v (dropout applied)
  Acc ds;      // gradient of the logit
};

// Pair (i, j) with score q.k and dp = dO_i . v_j: the probability recomputed from the row's
// log-sum-exp, and ds = p * (dp * keep - delta_i), exactly the CPU kernel's formula.
// Masked pairs and rows without a visible key have no gradient.
template <typename Acc>
__device__ PairGrad<Acc> pair_grad(const HeadView<Acc>& head, const Dropout<Acc>& drop, int64_t bh, int64_t i,
                                   int64_t j, Acc score, Acc dp, Acc lse, Acc delta) {
  const Acc x = head.logit(score, i, j);
  if (x == neg_inf<Acc>() || lse == neg_inf<Acc>()) return {Acc(0), Acc(0)};
  const Acc prob = exp_acc(x - lse);
  const Acc keep = drop.factor(drop.row_key(bh, i), j);
  return {prob * keep, prob * (dp * keep - delta)};
}

// Loads the query tile [i0, i0 + rows) that the backward kernels share: Q, dO, lse and delta
// of rows below `limit`; the rest are zero rows with lse = -inf (no gradient).
template <typename E>
__device__ void load_query_tile(const BackwardSmem<E>& sm, const Tile<E>& t, const LocalAttentionBackwardParams<E>& p,
                                const opmath_t<E>* delta, int64_t bh, int64_t i0, int64_t limit) {
  using Acc = opmath_t<E>;
  const LocalAttentionShape& sh = p.shape;
  load_rows(sm.q, t.template ld<E>(t.dp), p.q + bh * sh.length * sh.dim, i0, limit, t.rows, sh.dim, t.dp);
  load_rows(sm.dout, t.template ld<E>(t.dvp), p.grad + bh * sh.length * sh.dim_v, i0, limit, t.rows, sh.dim_v,
            t.dvp);
  for (int r = threadIdx.x; r < t.rows; r += kThreads) {
    const bool in = i0 + r < limit;
    sm.lse[r] = in ? p.lse[bh * sh.length + i0 + r] : neg_inf<Acc>();
    sm.delta[r] = in ? delta[bh * sh.length + i0 + r] : Acc(0);
  }
}

// Loads the key / value tile [key0, key0 + rows), rows at or past `limit` zero.
template <typename E>
__device__ void load_key_tile(const BackwardSmem<E>& sm, const Tile<E>& t, const LocalAttentionBackwardParams<E>& p,
                              int64_t bh, int64_t key0, int64_t limit) {
  const LocalAttentionShape& sh = p.shape;
  load_rows(sm.k, t.template ld<E>(t.dp), p.k + bh * sh.length * sh.dim, key0, limit, t.rows, sh.dim, t.dp);
  load_rows(sm.v, t.template ld<E>(t.dvp), p.v + bh * sh.length * sh.dim_v, key0, limit, t.rows, sh.dim_v, t.dvp);
}

// s = Q K^T and dp = dO V^T for the loaded query and key tiles.
template <typename E>
__device__ void scores_and_dp(const BackwardSmem<E>& sm, const Tile<E>& t) {
  using Acc = opmath_t<E>;
  const int ld_q = t.template ld<E>(t.dp), ld_v = t.template ld<E>(t.dvp), ld_s = t.template ld<Acc>(t.rows);
  tile_mm<false, true>(sm.q, ld_q, sm.k, ld_q, sm.s, ld_s, t.rows, t.rows, t.dp, false);
  tile_mm<false, true>(sm.dout, ld_v, sm.v, ld_v, sm.dp, ld_s, t.rows, t.rows, t.dvp, false);
}

// Key-major pass: dK and dV of one key tile, summed over every query tile whose windows
// meet it, in query order. Each key row has exactly one owner, hence no atomics.
template <typename E>
__global__ void __launch_bounds__(kThreads)
    dkdv_kernel(const LocalAttentionBackwardParams<E> p, const Tile<E> t, const Dropout<opmath_t<E>> drop) {
  using Acc = opmath_t<E>;
  const LocalAttentionShape& sh = p.shape;
  const BackwardSmem<E> sm(t, reinterpret_cast<uintptr_t>(dynamic_smem()), true);
  const int ld_q = t.template ld<E>(t.dp), ld_v = t.template ld<E>(t.dvp), ld_p = t.template ld<E>(t.rows);
  const int ld_s = t.template ld<Acc>(t.rows), ld_dk = t.template ld<Acc>(t.dp), ld_dv = t.template ld<Acc>(t.dvp);
  const int64_t tiles = ceil_div<int64_t>(sh.length, t.rows);
  const int64_t bh = blockIdx.x / tiles;
  const int64_t k0 = blockIdx.x % tiles * t.rows;
  const int64_t k1 = k0 + t.rows < sh.length ? k0 + t.rows : sh.length;
  const HeadView<Acc> head = head_view(sh, p.rpb, p.pad, p.scale, bh);
  const Acc* delta = p.workspace;
  // Queries whose window meets keys [k0, k1): window bounds are monotone in i, so they are
  // the contiguous rows [first, last) between these two searches.
  const int64_t first = first_row(sh.length, [&](int64_t i) { return sh.keys_end(i) > k0; });
  const int64_t last = first_row(sh.length, [&](int64_t i) { return sh.keys_begin(i) >= k1; });

  load_key_tile(sm, t, p, bh, k0, sh.length);
  fill(sm.acc_k, t.rows * ld_dk, Acc(0));
  fill(sm.acc_v, t.rows * ld_dv, Acc(0));
  for (int64_t i0 = first; i0 < last; i0 += t.rows) {
    load_query_tile(sm, t, p, delta, bh, i0, last);
    __syncthreads();
    scores_and_dp(sm, t);
    __syncthreads();
    for (int idx = threadIdx.x; idx < t.rows * t.rows; idx += kThreads) {
      const int r = idx / t.rows, c = idx % t.rows;
      const PairGrad<Acc> g = pair_grad(head, drop, bh, i0 + r, k0 + c, sm.s[r * ld_s + c], sm.dp[r * ld_s + c],
                                        sm.lse[r], sm.delta[r]);
      sm.p[r * ld_p + c] = from_acc<E>(g.p_drop);
      sm.ds[r * ld_p + c] = from_acc<E>(g.ds);
    }
    __syncthreads();
    tile_mm<true, false>(sm.p, ld_p, sm.dout, ld_v, sm.acc_v, ld_dv, t.rows, t.dvp, t.rows, true);  // dV += P^T dO
    tile_mm<true, false>(sm.ds, ld_p, sm.q, ld_q, sm.acc_k, ld_dk, t.rows, t.dp, t.rows, true);     // dK += dS^T Q
    __syncthreads();
  }
  __syncthreads();  // the accumulators' zeros, should the loop not run

  E* dk = p.dk + bh * sh.length * sh.dim;
  E* dv = p.dv + bh * sh.length * sh.dim_v;
  for (int idx = threadIdx.x; idx < t.rows * sh.dim; idx += kThreads) {
    const int r = idx / int(sh.dim), c = idx % int(sh.dim);
    if (k0 + r < k1) dk[(k0 + r) * sh.dim + c] = from_acc<E>(sm.acc_k[r * ld_dk + c] * p.scale);
  }
  for (int idx = threadIdx.x; idx < t.rows * sh.dim_v; idx += kThreads) {
    const int r = idx / int(sh.dim_v), c = idx % int(sh.dim_v);
    if (k0 + r < k1) dv[(k0 + r) * sh.dim_v + c] = from_acc<E>(sm.acc_v[r * ld_dv + c]);
  }
}

// Query rows per block of the dq pass. With a bias, each block keeps a private partial of
// the bias gradient (n_bias values): chunks of 64 rows while that costs at most
// max(4 * B * H * T, 2^24) values in all, longer chunks (fewer partials) beyond, so the
// workspace stays O(B * H * T) even for full attention. A multiple of every tile size.
int64_t dq_chunk_rows(const LocalAttentionShape& sh) {
  constexpr int64_t kBase = 64;
  if (sh.n_bias == 0) return kBase;
  const int64_t heads = sh.batch * sh.heads;
  const int64_t budget = 4 * heads * sh.length > (int64_t(1) << 24) ? 4 * heads * sh.length : int64_t(1) << 24;
  const int64_t partials = heads * ceil_div(sh.length, kBase) * sh.n_bias;
  return kBase * ceil_div(partials, budget);
}

// partial[m] += the tile's ds summed along the diagonal of bias index m, i.e. over its
// pairs (r, c) with c - r = m - offset - (key0 - i0). A thread owns a diagonal and adds in
// row order; the block owns `partial`, so the result is independent of scheduling.
template <typename Acc>
__device__ void add_bias_diagonals(const Acc* ds, int ld, int rows, int64_t rel0, const LocalAttentionShape& sh,
                                   Acc* partial) {
  for (int e = threadIdx.x; e < 2 * rows - 1; e += kThreads) {
    const int d = e - (rows - 1);  // c - r
    const int64_t m = rel0 + d + sh.bias_offset();
    if (m < 0 || m >= sh.n_bias) continue;  // no pair of the window lies there: all its ds are 0
    Acc sum = 0;
    for (int r = d < 0 ? -d : 0; r < rows && r + d < rows; ++r) sum += ds[r * ld + r + d];
    partial[m] += sum;
  }
}

// Query-major pass: dQ of a chunk of rows, and the chunk's partial bias gradient.
template <typename E>
__global__ void __launch_bounds__(kThreads) dq_kernel(const LocalAttentionBackwardParams<E> p, const Tile<E> t,
                                                      const Dropout<opmath_t<E>> drop, const int64_t chunk_rows) {
  using Acc = opmath_t<E>;
  const LocalAttentionShape& sh = p.shape;
  const BackwardSmem<E> sm(t, reinterpret_cast<uintptr_t>(dynamic_smem()), false);
  const int ld_q = t.template ld<E>(t.dp), ld_p = t.template ld<E>(t.rows);
  const int ld_s = t.template ld<Acc>(t.rows), ld_dq = t.template ld<Acc>(t.dp);
  const int64_t chunks = ceil_div(sh.length, chunk_rows);
  const int64_t bh = blockIdx.x / chunks;
  const int64_t r0 = blockIdx.x % chunks * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < sh.length ? r0 + chunk_rows : sh.length;
  const HeadView<Acc> head = head_view(sh, p.rpb, p.pad, p.scale, bh);
  const Acc* delta = p.workspace;
  Acc* partial = p.rpb != nullptr ? p.workspace + sh.batch * sh.heads * sh.length + blockIdx.x * sh.n_bias : nullptr;
  if (partial != nullptr)
    for (int64_t m = threadIdx.x; m < sh.n_bias; m += kThreads) partial[m] = Acc(0);

  for (int64_t i0 = r0; i0 < r1; i0 += t.rows) {
    const int64_t i1 = i0 + t.rows < r1 ? i0 + t.rows : r1;
    load_query_tile(sm, t, p, delta, bh, i0, i1);
    fill(sm.acc_k, t.rows * ld_dq, Acc(0));
    const int64_t key_end = sh.keys_end(i1 - 1);
    for (int64_t key0 = sh.keys_begin(i0); key0 < key_end; key0 += t.rows) {
      load_key_tile(sm, t, p, bh, key0, key_end);
      __syncthreads();
      scores_and_dp(sm, t);
      __syncthreads();
      for (int idx = threadIdx.x; idx < t.rows * t.rows; idx += kThreads) {
        const int r = idx / t.rows, c = idx % t.rows;
        const PairGrad<Acc> g = pair_grad(head, drop, bh, i0 + r, key0 + c, sm.s[r * ld_s + c],
                                          sm.dp[r * ld_s + c], sm.lse[r], sm.delta[r]);
        sm.s[r * ld_s + c] = g.ds;  // unrounded, for the bias gradient
        sm.ds[r * ld_p + c] = from_acc<E>(g.ds);
      }
      __syncthreads();
      tile_mm<false, false>(sm.ds, ld_p, sm.k, ld_q, sm.acc_k, ld_dq, t.rows, t.dp, t.rows, true);  // dQ += dS K
      if (partial != nullptr) add_bias_diagonals(sm.s, ld_s, t.rows, key0 - i0, sh, partial);
      __syncthreads();
    }
    E* dq = p.dq + bh * sh.length * sh.dim;
    for (int idx = threadIdx.x; idx < t.rows * sh.dim; idx += kThreads) {
      const int r = idx / int(sh.dim), c = idx % int(sh.dim);
      if (i0 + r < i1) dq[(i0 + r) * sh.dim + c] = from_acc<E>(sm.acc_k[r * ld_dq + c] * p.scale);
    }
    __syncthreads();  // acc_k and the query tile are reloaded next
  }
}

// drpb[h, m] = sum over b, then over the `chunks` partial rows of (b, h), in that order.
template <typename Acc>
__global__ void __launch_bounds__(kThreads) bias_reduce_kernel(const Acc* partial, Acc* drpb, int64_t batch,
                                                               int64_t heads, int64_t chunks, int64_t n_bias) {
  const int64_t idx = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= heads * n_bias) return;
  const int64_t h = idx / n_bias, m = idx % n_bias;
  Acc sum = 0;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t c = 0; c < chunks; ++c) sum += partial[((b * heads + h) * chunks + c) * n_bias + m];
  drpb[idx] = sum;
}

// ---- probabilities of selected rows ---------------------------------------------------------
// A few rows per sequence (TUT's boundary frames), so plain loops, as on the CPU.

// A block per (b, h, r): the logits of the row's W window entries (a warp per key), then
// the softmax in place, with block reductions in a fixed order.
template <typename E>
__global__ void __launch_bounds__(kThreads) probs_forward_kernel(const LocalAttentionProbsForwardParams<E> p) {
  using Acc = opmath_t<E>;
  __shared__ Acc scratch[kWarps];
  const LocalAttentionShape& sh = p.shape;
  const int64_t W = sh.window();
  const int64_t bh = blockIdx.x / p.num_rows, b = bh / sh.heads;
  const int64_t i = p.rows[b * p.num_rows + blockIdx.x % p.num_rows];
  const int64_t start = sh.window_start(i);
  const HeadView<Acc> head = head_view(sh, p.rpb, p.pad, p.scale, bh);
  const E* q_row = p.q + (bh * sh.length + i) * sh.dim;
  Acc* row = p.probs + int64_t(blockIdx.x) * W;
  const int lane = threadIdx.x % 32;
  for (int64_t m = threadIdx.x / 32; m < W; m += kWarps) {
    const int64_t j = start + m;
    Acc dot = 0;
    if (j >= 0 && j < sh.length) {
      const E* k_row = p.k + (bh * sh.length + j) * sh.dim;
      for (int64_t d = lane; d < sh.dim; d += 32) dot += to_acc(q_row[d]) * to_acc(k_row[d]);
    }
    dot = warp_sum(dot);
    if (lane == 0) row[m] = head.logit(dot, i, j);  // -inf outside the sequence / window, or padded
  }
  __syncthreads();
  Acc row_max = neg_inf<Acc>();
  for (int64_t m = threadIdx.x; m < W; m += kThreads) row_max = max_of(row_max, row[m]);
  row_max = block_reduce<true>(row_max, scratch);
  if (row_max == neg_inf<Acc>()) {  // no visible key: zeros
    for (int64_t m = threadIdx.x; m < W; m += kThreads) row[m] = Acc(0);
    return;
  }
  Acc sum = 0;
  for (int64_t m = threadIdx.x; m < W; m += kThreads) {
    const Acc e = row[m] == neg_inf<Acc>() ? Acc(0) : exp_acc(row[m] - row_max);
    row[m] = e;
    sum += e;
  }
  sum = block_reduce<false>(sum, scratch);
  for (int64_t m = threadIdx.x; m < W; m += kThreads) row[m] /= sum;
}

// Row r of one (b, h) in the probabilities' backward: which window entries are visible keys,
// and ds = p * (g - inner) for them, inner = sum over visible entries of p * g.
template <typename E>
struct ProbsGradRow {
  using Acc = opmath_t<E>;
  const E* probs;
  const E* grad;
  const uint8_t* pad;  // padding row of batch b, or nullptr
  int64_t start, length;
  Acc inner;

  __device__ bool visible(int64_t m) const {
    const int64_t j = start + m;
    return j >= 0 && j < length && !(pad != nullptr && pad[j]);
  }
  __device__ Acc ds(int64_t m) const { return to_acc(probs[m]) * (to_acc(grad[m]) - inner); }
};

// A block per (b, h), rows in order: ds over the visible keys, then dq[i] += scale * sum_m
// ds_m k_j, dk[j] += scale * ds_m q_i and the (b, h) partial of the bias gradient. Within a
// row every output element has one thread; rows are separated by barriers, so repeated
// rows and overlapping windows add in row order (deterministic). (Min. blocks 1: without it
// ptxas capped this kernel at 64 registers and spilled.)
template <typename E>
__global__ void __launch_bounds__(kThreads, 1) probs_backward_kernel(const LocalAttentionProbsBackwardParams<E> p) {
  using Acc = opmath_t<E>;
  __shared__ Acc scratch[kWarps];
  const LocalAttentionShape& sh = p.shape;
  const int64_t W = sh.window(), T = sh.length, D = sh.dim;
  const int64_t bh = blockIdx.x, b = bh / sh.heads;
  Acc* partial = sh.n_bias > 0 ? p.workspace + bh * sh.n_bias : nullptr;
  if (partial != nullptr)
    for (int64_t m = threadIdx.x; m < sh.n_bias; m += kThreads) partial[m] = Acc(0);
  const E* k = p.k + bh * T * D;
  Acc* dk = p.dk + bh * T * D;
  for (int64_t r = 0; r < p.num_rows; ++r) {
    const int64_t i = p.rows[b * p.num_rows + r];
    ProbsGradRow<E> row{p.probs + (bh * p.num_rows + r) * W, p.grad + (bh * p.num_rows + r) * W,
                        p.pad != nullptr ? p.pad + b * T : nullptr, sh.window_start(i), T, Acc(0)};
    Acc inner = 0;
    for (int64_t m = threadIdx.x; m < W; m += kThreads)
      if (row.visible(m)) inner += to_acc(row.probs[m]) * to_acc(row.grad[m]);
    row.inner = block_reduce<false>(inner, scratch);  // its barriers also order the previous row's writes
    const E* q_row = p.q + (bh * T + i) * D;
    for (int64_t d = threadIdx.x; d < D; d += kThreads) {
      Acc acc = 0;
      for (int64_t m = 0; m < W; ++m)
        if (row.visible(m)) acc += row.ds(m) * to_acc(k[(row.start + m) * D + d]);
      p.dq[(bh * T + i) * D + d] += p.scale * acc;
    }
    for (int64_t idx = threadIdx.x; idx < W * D; idx += kThreads) {
      const int64_t m = idx / D, d = idx % D;
      if (row.visible(m)) dk[(row.start + m) * D + d] += p.scale * row.ds(m) * to_acc(q_row[d]);
    }
    if (partial != nullptr)
      for (int64_t m = threadIdx.x; m < W; m += kThreads)
        if (row.visible(m)) partial[row.start + m - i + sh.bias_offset()] += row.ds(m);
    __syncthreads();
  }
}

// ---- launchers ------------------------------------------------------------------------------

int device_attribute(cudaDeviceAttr attribute) {
  int device = 0, value = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&value, attribute, device) != cudaSuccess)
    return 0;
  return value;
}

template <typename E>
size_t smem_bytes(const Tile<E>& t, bool backward) {
  // The key-major backward kernel needs the most of the two backward kernels.
  return backward ? BackwardSmem<E>(t, 0, true).bytes : ForwardSmem<E>(t, 0).bytes;
}

// The largest tile (fewest reloads of a band) whose shared memory leaves room for two
// resident blocks per SM; failing that the largest that fits a block; rows = 0 if none.
template <typename E>
Tile<E> choose_tile(const LocalAttentionShape& sh, bool backward) {
  const size_t per_block = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  const size_t per_sm = size_t(device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor));
  constexpr size_t kReservedPerBlock = 1024;  // what the runtime keeps per resident block
  Tile<E> fits = make_tile<E>(0, sh);
  for (const int rows : {64, 32, 16}) {
    const Tile<E> t = make_tile<E>(rows, sh);
    const size_t bytes = smem_bytes(t, backward);
    if (2 * (bytes + kReservedPerBlock) <= per_sm) return t;
    if (bytes <= per_block && fits.rows == 0) fits = t;
  }
  return fits;
}

template <typename Kernel, typename... Args>
cudaError_t launch_kernel(Kernel kernel, int64_t blocks, size_t smem, cudaStream_t stream, const Args&... args) {
  if (blocks == 0) return cudaSuccess;
  if (blocks > INT_MAX) return cudaErrorInvalidConfiguration;
  if (smem > 0) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<unsigned(blocks), kThreads, smem, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

int64_t local_attention_backward_workspace(const LocalAttentionShape& sh) {
  const int64_t heads = sh.batch * sh.heads;
  return heads * sh.length + heads * ceil_div(sh.length, dq_chunk_rows(sh)) * sh.n_bias;
}

template <typename scalar_t>
int local_attention_tile_rows(const LocalAttentionShape& shape, bool backward) {
  return choose_tile<scalar_t>(shape, backward).rows;
}

template <typename scalar_t>
cudaError_t launch_local_attention_forward(const LocalAttentionForwardParams<scalar_t>& p, cudaStream_t stream) {
  const LocalAttentionShape& sh = p.shape;
  const Tile<scalar_t> t = choose_tile<scalar_t>(sh, false);
  if (t.rows == 0) return cudaErrorInvalidValue;
  const auto drop = make_dropout<opmath_t<scalar_t>>(p.dropout_p, p.seed);
  const int64_t blocks = sh.batch * sh.heads * ceil_div<int64_t>(sh.length, t.rows);
  return launch_kernel(forward_kernel<scalar_t>, blocks, smem_bytes(t, false), stream, p, t, drop);
}

template <typename scalar_t>
cudaError_t launch_local_attention_backward(const LocalAttentionBackwardParams<scalar_t>& p, cudaStream_t stream) {
  using Acc = opmath_t<scalar_t>;
  const LocalAttentionShape& sh = p.shape;
  const Tile<scalar_t> t = choose_tile<scalar_t>(sh, true);
  if (t.rows == 0) return cudaErrorInvalidValue;
  const auto drop = make_dropout<Acc>(p.dropout_p, p.seed);
  const int64_t heads = sh.batch * sh.heads, rows = heads * sh.length;
  cudaError_t err = launch_kernel(delta_kernel<scalar_t>, ceil_div<int64_t>(rows, kWarps), 0, stream, p.grad, p.out,
                                  p.workspace, rows, sh.dim_v);
  if (err != cudaSuccess) return err;
  err = launch_kernel(dkdv_kernel<scalar_t>, heads * ceil_div<int64_t>(sh.length, t.rows), smem_bytes(t, true),
                      stream, p, t, drop);
  if (err != cudaSuccess) return err;
  const int64_t chunk_rows = dq_chunk_rows(sh), chunks = ceil_div(sh.length, chunk_rows);
  err = launch_kernel(dq_kernel<scalar_t>, heads * chunks, BackwardSmem<scalar_t>(t, 0, false).bytes, stream, p, t,
                      drop, chunk_rows);
  if (err != cudaSuccess || p.rpb == nullptr) return err;
  return launch_kernel(bias_reduce_kernel<Acc>, ceil_div<int64_t>(sh.heads * sh.n_bias, kThreads), 0, stream,
                       static_cast<const Acc*>(p.workspace + rows), p.drpb, sh.batch, sh.heads, chunks, sh.n_bias);
}

template <typename scalar_t>
cudaError_t launch_local_attention_probs_forward(const LocalAttentionProbsForwardParams<scalar_t>& p,
                                                 cudaStream_t stream) {
  const LocalAttentionShape& sh = p.shape;
  return launch_kernel(probs_forward_kernel<scalar_t>, sh.batch * sh.heads * p.num_rows, 0, stream, p);
}

template <typename scalar_t>
cudaError_t launch_local_attention_probs_backward(const LocalAttentionProbsBackwardParams<scalar_t>& p,
                                                  cudaStream_t stream) {
  using Acc = opmath_t<scalar_t>;
  const LocalAttentionShape& sh = p.shape;
  if (p.num_rows == 0) {  // nothing to add; the bias gradient is zero
    if (sh.n_bias == 0) return cudaSuccess;
    return cudaMemsetAsync(p.drpb, 0, sizeof(Acc) * sh.heads * sh.n_bias, stream);
  }
  const cudaError_t err = launch_kernel(probs_backward_kernel<scalar_t>, sh.batch * sh.heads, 0, stream, p);
  if (err != cudaSuccess || sh.n_bias == 0) return err;
  return launch_kernel(bias_reduce_kernel<Acc>, ceil_div<int64_t>(sh.heads * sh.n_bias, kThreads), 0, stream,
                       static_cast<const Acc*>(p.workspace), p.drpb, sh.batch, sh.heads, int64_t(1), sh.n_bias);
}

#define FASTLOCAL_INSTANTIATE(T)                                                                                \
  template int local_attention_tile_rows<T>(const LocalAttentionShape&, bool);                                 \
  template cudaError_t launch_local_attention_forward<T>(const LocalAttentionForwardParams<T>&, cudaStream_t); \
  template cudaError_t launch_local_attention_backward<T>(const LocalAttentionBackwardParams<T>&, cudaStream_t); \
  template cudaError_t launch_local_attention_probs_forward<T>(const LocalAttentionProbsForwardParams<T>&,      \
                                                               cudaStream_t);                                  \
  template cudaError_t launch_local_attention_probs_backward<T>(const LocalAttentionProbsBackwardParams<T>&,    \
                                                                cudaStream_t);
FASTLOCAL_INSTANTIATE(__half)
FASTLOCAL_INSTANTIATE(__nv_bfloat16)
FASTLOCAL_INSTANTIATE(float)
FASTLOCAL_INSTANTIATE(double)
#undef FASTLOCAL_INSTANTIATE

}  // namespace fastlocal::cuda
