// VidTr's topK-std pooled temporal attention on CPU (fastlocal/reference/topk_std.py).
//
// One task = one (batch, head) problem: a tiny [T, T] attention (T = 9..33 in VidTr).
// Everything of size T x T lives in the thread's scratch, never in a tensor:
//   forward:  scores S = (scale q) k^T, row softmax, the unbiased std of every row, the
//             top-`keep` selection (ties: lower index; kept rows ascending; with
//             exclude_first row 0 unranked and kept first), optional second softmax of the
//             kept rows, and out = A[kept] @ v. Saves the kept rows' log-sum-exp.
//   backward: recomputes the kept rows from that log-sum-exp and writes dq (non-zero on
//             kept rows only), dk and dv. Nothing flows through the selection.
// Inputs are read through their strides and converted to the accumulation type (float,
// double for float64) while being copied into scratch, so non-contiguous and half
// precision inputs cost no extra tensor. Each problem owns its output slices: no atomics,
// results do not depend on the thread count.
//
// Scores are `dots` (q_i . k_j: one vector sum then one fixed lane sum, whatever the tile),
// the other products `rows_times` (out[a][:] = sum_b w[a][b] * x[b][:], vectorised over
// x's columns, one sequential sum over b). Matrices with one row per attention row are
// stored transposed, [T, rows], so softmax, std and selection run one row per vector lane.
// So bitwise-equal attention rows get bitwise-equal stds (the tie rule relies on it).
// Outputs of 16 MiB and more are written with streaming stores. The kernels are compiled
// for every instruction-set level of isa.h and one is chosen at run time
// (FASTLOCAL_CPU_ISA=baseline forces the portable build).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../common/topk_std_checks.h"
#include "huge_pages.h"
#include "isa.h"
#include "ops.h"
#include "streaming_stores.h"
#include "vec.h"

namespace fastlocal::cpu {
namespace {

// ---- vectors (vec.h) --------------------------------------------------------------------------

using simd::ceil_to;
using simd::iota;
using simd::ivec;
using simd::kLanes;
using simd::vec;
using simd::vexp;
using simd::vload;
using simd::vstore;

// v[0] + ... + v[kLanes - 1]: in lane order for doubles (hsum); floats below.
template <typename T>
inline T lane_sum(vec<T> v) {
  return simd::hsum<T>(v);
}
// Floats by pairs, ((v0 + v1) + (v2 + v3)) + ((v4 + v5) + (v6 + v7)): the order reduce8
// gives every lane, so a sum comes out the same by either.
template <>
inline float lane_sum<float>(vec<float> v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// Pairwise sums of neighbours: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7].
inline vec<float> hadd(vec<float> a, vec<float> b) {
  return __builtin_shufflevector(a, b, 0, 2, 8, 10, 4, 6, 12, 14) +
         __builtin_shufflevector(a, b, 1, 3, 9, 11, 5, 7, 13, 15);
}

// Lane l of the result = lane_sum(x[l]), eight sums at the cost of about two.
inline vec<float> reduce8(const vec<float>* x) {
  const vec<float> u0 = hadd(hadd(x[0], x[1]), hadd(x[2], x[3]));
  const vec<float> u1 = hadd(hadd(x[4], x[5]), hadd(x[6], x[7]));
  return __builtin_shufflevector(u0, u1, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(u0, u1, 4, 5, 6, 7, 12, 13, 14, 15);
}

// e^x for 8 floats: x = k ln2 + r with k = floor(x / ln2 + 1/2) and a two-part (Cody-Waite)
// ln2, e^r by its degree-6 Taylor polynomial on |r| <= ln2 / 2 (relative error < 2e-7),
// 2^k built in the exponent bits (as 2^(k + 64) * 2^-64 for k < -63), so that e^x underflows as the
// reference's expf does: through the subnormals to 0 (x is clamped to [-104, 88]; e^-104
// rounds to 0). A floor at a normal float would make a probability the reference gives as
// 0 a tiny number, and 0 * inf = NaN into tiny * inf = inf (tests/test_topk_std_fuzz.py
// found it). Between -87 and 88 both factors are exact powers of two: the result is the
// same as 2^k's. NaN stays NaN.
inline vec<float> vexp(vec<float> x) {
  using V = vec<float>;
  using I = ivec<float>;
  x = x > V{} + 88.0f ? V{} + 88.0f : x;
  x = x < V{} - 104.0f ? V{} - 104.0f : x;
  const V t = x * 1.4426950408889634f + 0.5f;
  V k = __builtin_convertvector(__builtin_convertvector(t, I), V);  // truncation ...
  k = k > t ? k - 1.0f : k;                                         // ... made a floor
  const V r = (x - k * 0.693359375f) + k * 2.12194440e-4f;          // ln2 = 0.693359375 - 2.12194440e-4
  V p = V{} + (1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const I ki = __builtin_convertvector(k, I);
  const I tiny = ki < -63;  // lanes whose 2^k is built as 2^(k + 64) * 2^-64
  const I bits = (ki + (tiny & 64) + 127) << 23;
  V two_k;  // a normal float: k + 64 >= -126 for x >= -104
  std::memcpy(&two_k, &bits, sizeof(two_k));
  return (p * two_k) * (tiny ? V{} + 5.42101086242752217e-20f : V{} + 1.0f);  // 2^-64 or 1
}

// One vector by streaming stores (streaming_stores.h); p 16-byte aligned.
template <typename T>
inline void vstream(T* p, vec<T> v) {
  if constexpr (std::is_same<T, float>::value) {
    stream16(p, __builtin_shufflevector(v, v, 0, 1, 2, 3));
    stream16(p + 4, __builtin_shufflevector(v, v, 4, 5, 6, 7));
  } else {
    stream16(p, __builtin_shufflevector(v, v, 0, 1));
    stream16(p + 2, __builtin_shufflevector(v, v, 2, 3));
  }
}

// ---- the one product ------------------------------------------------------------------------

// out[r][c] = sum_{b < nb} w[r * ldw + b * wstep] * x[b * ldx + c] for r < R, over NV
// vectors of c.
template <typename T, bool Stream, int R, int NV>
inline void rows_times_block(const T* w, int64_t ldw, int64_t wstep, int64_t nb, const T* x, int64_t ldx, T* out,
                             int64_t ldo) {
  vec<T> acc[R][NV] = {};
  for (int64_t b = 0; b < nb; ++b) {
    vec<T> xv[NV];
    for (int c = 0; c < NV; ++c) xv[c] = vload(x + b * ldx + c * kLanes<T>);
    for (int r = 0; r < R; ++r) {
      const T s = w[r * ldw + b * wstep];
      for (int c = 0; c < NV; ++c) acc[r][c] += s * xv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) {
      if constexpr (Stream) vstream(out + r * ldo + c * kLanes<T>, acc[r][c]);
      else vstore(out + r * ldo + c * kLanes<T>, acc[r][c]);
    }
}

template <typename T, bool Stream, int R>
inline void rows_times_tile(const T* w, int64_t ldw, int64_t wstep, int64_t nb, const T* x, int64_t ldx, int64_t m,
                            T* out, int64_t ldo) {
  int64_t c = 0;
  for (; c + 2 * kLanes<T> <= m; c += 2 * kLanes<T>)
    rows_times_block<T, Stream, R, 2>(w, ldw, wstep, nb, x + c, ldx, out + c, ldo);
  for (; c < m; c += kLanes<T>) rows_times_block<T, Stream, R, 1>(w, ldw, wstep, nb, x + c, ldx, out + c, ldo);
}

// out[a][0:m] = sum_{b < nb} w[a * ldw + b * wstep] * x[b * ldx + 0:m] for a < na (wstep
// = 1: w row-major; ldw = 1: w stored transposed). Columns go in whole vectors: x and out
// must hold ceil_to(m, kLanes) columns (x's extra columns only reach out's extra columns).
// Row tiles of 4 x 2 vectors: 8 accumulators, each x vector loaded once per tile.
// Stream: out is written with vstream (16-byte aligned rows).
template <typename T, bool Stream = false>
void rows_times(const T* w, int64_t ldw, int64_t wstep, int64_t na, int64_t nb, const T* x, int64_t ldx, int64_t m,
                T* out, int64_t ldo) {
  int64_t a = 0;
  for (; a + 4 <= na; a += 4)
    rows_times_tile<T, Stream, 4>(w + a * ldw, ldw, wstep, nb, x, ldx, m, out + a * ldo, ldo);
  switch (na - a) {
    case 3: rows_times_tile<T, Stream, 3>(w + a * ldw, ldw, wstep, nb, x, ldx, m, out + a * ldo, ldo); break;
    case 2: rows_times_tile<T, Stream, 2>(w + a * ldw, ldw, wstep, nb, x, ldx, m, out + a * ldo, ldo); break;
    case 1: rows_times_tile<T, Stream, 1>(w + a * ldw, ldw, wstep, nb, x, ldx, m, out + a * ldo, ldo); break;
    default: break;
  }
}

// rows_times into an output tensor's rows (stride m), streamed when the output is large
// (stream_output).
template <typename T>
inline void rows_times_out(bool stream, const T* w, int64_t ldw, int64_t wstep, int64_t na, int64_t nb, const T* x,
                           int64_t ldx, int64_t m, T* out) {
  if (stream) rows_times<T, true>(w, ldw, wstep, na, nb, x, ldx, m, out, m);
  else rows_times<T>(w, ldw, wstep, na, nb, x, ldx, m, out, m);
}

// out[i * ldo + j] = sum_c a[i * lda + c] * b[j * ldb + c] for i < na, j < nb, over dp
// columns (a multiple of kLanes; a and b hold them). Each element is one vector sum over c
// then one lane sum, the same instructions wherever (i, j) falls in the tiles: bitwise-equal
// rows of a give bitwise-equal rows of out.
template <typename T, int R, int C>
inline void dots_block(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t dp, T* out, int64_t ldo) {
  vec<T> acc[R][C] = {};
  for (int64_t c = 0; c < dp; c += kLanes<T>) {
    vec<T> bv[C];
    for (int j = 0; j < C; ++j) bv[j] = vload(b + j * ldb + c);
    for (int i = 0; i < R; ++i) {
      const vec<T> av = vload(a + i * lda + c);
      for (int j = 0; j < C; ++j) acc[i][j] += av * bv[j];
    }
  }
  if constexpr (std::is_same<T, float>::value && R * C == 8) {
    const vec<float> sums = reduce8(&acc[0][0]);
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) out[i * ldo + j] = sums[i * C + j];
  } else {
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) out[i * ldo + j] = lane_sum<T>(acc[i][j]);
  }
}

// Columns j < nb (a multiple of 4) of rows [0, R).
template <typename T, int R>
inline void dots_rows(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t nb, int64_t dp, T* out, int64_t ldo) {
  int64_t j = 0;
  if constexpr (R == 1)
    for (; j + 8 <= nb; j += 8) dots_block<T, 1, 8>(a, lda, b + j * ldb, ldb, dp, out + j, ldo);
  for (; j < nb; j += 4) dots_block<T, R, 4>(a, lda, b + j * ldb, ldb, dp, out + j, ldo);
}

// Tiles of 2 x 4, and the last nb % 4 columns in tiles of 8 x 1 (T = 9 or 33 leaves one
// such column: a 2 x 1 tile would be two lone dependency chains).
template <typename T>
void dots(const T* a, int64_t lda, int64_t na, const T* b, int64_t ldb, int64_t nb, int64_t dp, T* out,
          int64_t ldo) {
  const int64_t nb4 = nb / 4 * 4;
  int64_t i = 0;
  for (; i + 2 <= na; i += 2) dots_rows<T, 2>(a + i * lda, lda, b, ldb, nb4, dp, out + i * ldo, ldo);
  if (i < na) dots_rows<T, 1>(a + i * lda, lda, b, ldb, nb4, dp, out + i * ldo, ldo);
  for (int64_t j = nb4; j < nb; ++j) {
    for (i = 0; i + 8 <= na; i += 8) dots_block<T, 8, 1>(a + i * lda, lda, b + j * ldb, ldb, dp, out + i * ldo + j, ldo);
    for (; i < na; ++i) dots_block<T, 1, 1>(a + i * lda, lda, b + j * ldb, ldb, dp, out + i * ldo + j, ldo);
  }
}

// ---- softmax pieces, kLanes rows side by side ---------------------------------------------------
// A [rows, n] matrix is stored transposed, [n, rp] with rp = ceil_to(rows, kLanes): row r is
// lane r % kLanes of the vectors at column r - r % kLanes, and its softmax is that lane's
// loop over j. Lanes past the last row compute values nothing reads; zeroed on entry
// (zero_padding_lanes) they stay finite and the same for every problem.

template <typename T>
inline void zero_padding_lanes(T* x, int64_t n, int64_t rows, int64_t rp) {
  for (int64_t j = 0; rows < rp && j < n; ++j) std::fill(x + j * rp + rows, x + (j + 1) * rp, T(0));
}

// scale * x, rounded: the compiler may not contract it with a following subtraction into
// one fused multiply-add. Fused, exp(scale x - max) of a row's largest logit would be
// exp(the product's rounding error) instead of exp(0) = 1: at |logit| ~ 1e36 (float) or
// 1e100 (double) that error alone is beyond exp's range (NaN or a wrong row; the fuzzer in
// tests/test_topk_std_fuzz.py found it), and the saved log-sum-exp would not match.
template <typename T>
inline vec<T> scaled(vec<T> x, T scale) {
  vec<T> s = x * scale;
  asm("" : "+m"(s));  // an opaque barrier: s is the rounded product
  return s;
}

// x[j] = exp(scale x[j] - shift[lanes]) in place: the kept rows of A from their log-sum-exp.
template <typename T>
inline void exp_columns(T* x, int64_t n, int64_t rp, T scale, const T* shift) {
  for (int64_t r = 0; r < rp; r += kLanes<T>) {
    const vec<T> m = vload(shift + r);
    for (int64_t j = 0; j < n; ++j) vstore(x + j * rp + r, vexp(scaled(vload(x + j * rp + r), scale) - m));
  }
}

// One lane group of the rows of scale x (x[j * ld], j < n): their max into *max, then
// dst[j * ld] = exp(scale x[j * ld] - max); returns the sums. dst may be x.
template <typename T>
inline vec<T> exp_minus_max(const T* x, T* dst, int64_t n, int64_t ld, T scale, vec<T>* max) {
  // The max needs no barrier (a product that is only compared cannot be fused).
  vec<T> m = vload(x) * scale;
  for (int64_t j = 1; j < n; ++j) {
    const vec<T> s = vload(x + j * ld) * scale;
    m = s > m ? s : m;
  }
  vec<T> sum{};
  for (int64_t j = 0; j < n; ++j) {
    const vec<T> e = vexp(scaled(vload(x + j * ld), scale) - m);
    vstore(dst + j * ld, e);
    sum += e;
  }
  *max = m;
  return sum;
}

// dst = softmax(src) row by row (the second softmax; dst may be src).
template <typename T>
inline void softmax_columns(const T* src, T* dst, int64_t n, int64_t rp) {
  for (int64_t r = 0; r < rp; r += kLanes<T>) {
    vec<T> m;
    const vec<T> inv = T(1) / exp_minus_max(src + r, dst + r, n, rp, T(1), &m);
    for (int64_t j = 0; j < n; ++j) vstore(dst + j * rp + r, vload(dst + j * rp + r) * inv);
  }
}

// Softmax backward row by row, in place: g[j] = mul * p[j] * (g[j] - sum_j p[j] g[j]).
template <typename T>
inline void softmax_grad_columns(const T* p, T* g, int64_t n, int64_t rp, T mul) {
  for (int64_t r = 0; r < rp; r += kLanes<T>) {
    vec<T> dot{};
    for (int64_t j = 0; j < n; ++j) dot += vload(p + j * rp + r) * vload(g + j * rp + r);
    for (int64_t j = 0; j < n; ++j)
      vstore(g + j * rp + r, vload(p + j * rp + r) * (vload(g + j * rp + r) - dot) * mul);
  }
}

// The softmax statistics of every row of S = scale st^T, kLanes rows side by side: st is
// [n, np] with st[j * np + i] = q_i . k_j, so row i is lane i % kLanes of the vectors at
// column i - i % kLanes, and each row's numbers come from its own lane's loop over j (equal
// rows, equal statistics). Writes e = exp(S - max) over st and, for i < np, the row max,
// the sum of e and the unbiased std of A_i = e_i / sum (0 when n < 2). Lanes past n hold
// finite garbage.
template <typename T>
inline void row_statistics(T* st, int64_t n, int64_t np, T scale, T* rmax, T* rsum, T* score) {
  using V = vec<T>;
  for (int64_t i = 0; i < np; i += kLanes<T>) {
    V m;
    const V sum = exp_minus_max(st + i, st + i, n, np, scale, &m);
    V var{};
    if (n >= 2) {
      const V mean = sum / static_cast<T>(n);
      for (int64_t j = 0; j < n; ++j) {
        const V d = vload(st + j * np + i) - mean;
        var += d * d;
      }
      var /= static_cast<T>(n - 1);
    }
    for (int l = 0; l < kLanes<T>; ++l) var[l] = std::sqrt(var[l]);
    vstore(rmax + i, m);
    vstore(rsum + i, sum);
    vstore(score + i, var / sum);  // std(A_i) = std(e_i) / sum(e_i)
  }
}

// ---- problem description ------------------------------------------------------------------------

// A [B, H, T, C] input read through its strides (in elements).
template <typename S>
struct Strided {
  const S* data;
  int64_t sb, sh, st, sc;
};

template <typename S>
Strided<S> strided(const at::Tensor& t) {
  return {t.const_data_ptr<S>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// Row t of problem (b, h), columns [0, cols), converted to T.
template <typename S, typename T>
inline void load_row(const Strided<S>& in, int64_t b, int64_t h, int64_t t, int64_t cols, T* dst) {
  const S* src = in.data + b * in.sb + h * in.sh + t * in.st;
  if (in.sc == 1) {
    if constexpr (std::is_same<S, T>::value) {
      std::memcpy(dst, src, cols * sizeof(T));
    } else {
      for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<T>(src[c]);
    }
  } else {
    for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<T>(src[c * in.sc]);
  }
}

template <typename S, typename T>
inline void store_row(const T* src, int64_t cols, S* dst) {
  if constexpr (std::is_same<S, T>::value) {
    std::memcpy(dst, src, cols * sizeof(T));
  } else {
    for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<S>(src[c]);
  }
}

// dst[0:cols] = src[0:cols], or zeros when src is null, by streaming stores (when
// stream_row_output allows them: no conversion, whole vectors, aligned rows).
template <typename S, typename T>
inline void stream_row(const T* src, int64_t cols, S* dst) {
  if constexpr (std::is_same<S, T>::value) {
    for (int64_t c = 0; c < cols; c += kLanes<T>) vstream(dst + c, src ? vload(src + c) : vec<T>{});
  }
}

template <typename S, typename T>
bool stream_row_output(const at::Tensor& out) {
  return std::is_same<S, T>::value && out.size(-1) % kLanes<T> == 0 && stream_output(out);
}

// Rows [0, n) of problem (b, h) as a [n, ceil_to(cols, kLanes)] matrix with leading
// dimension *ld: the input itself when it already is one (accumulation dtype, unit column
// stride, whole vectors per row), else a copy in `scratch` (whose padding stays 0).
template <typename S, typename T>
inline bool direct(const Strided<S>& in, int64_t cols) {
  return std::is_same<S, T>::value && in.sc == 1 && cols % kLanes<T> == 0;
}

template <typename S, typename T>
inline const T* rows_of(const Strided<S>& in, int64_t b, int64_t h, int64_t n, int64_t cols, T* scratch,
                        int64_t* ld) {
  if constexpr (std::is_same<S, T>::value) {
    if (direct<S, T>(in, cols)) {
      *ld = in.st;
      return in.data + b * in.sb + h * in.sh;
    }
  }
  const int64_t cp = ceil_to(cols, kLanes<T>);
  for (int64_t t = 0; t < n; ++t) load_row(in, b, h, t, cols, scratch + t * cp);
  *ld = cp;
  return scratch;
}

template <typename S, typename T>
struct Problem {
  Strided<S> q, k, v;
  int64_t heads, n, d, dv, keep, first;  // n = T; first = 1 with exclude_first
  bool second;
  T scale;
  // Padded widths: whole vectors per row.
  int64_t np() const { return ceil_to(n, kLanes<T>); }
  int64_t dp() const { return ceil_to(d, kLanes<T>); }
  int64_t dvp() const { return ceil_to(dv, kLanes<T>); }
  int64_t rows() const { return keep + first; }
  int64_t rp() const { return ceil_to(rows(), kLanes<T>); }

  // Ask for problem bh's q, k, v rows ahead of use: one problem computes for about as long as
  // its ~7 KB (VidTr-S) take to stream in, so fetching the next one while this one runs
  // hides most of the DRAM latency that otherwise stalls the first loads.
  void prefetch(int64_t bh) const {
    const int64_t b = bh / heads, h = bh % heads;
    prefetch_rows(q, b, h, d);
    prefetch_rows(k, b, h, d);
    prefetch_rows(v, b, h, dv);
  }

 private:
  void prefetch_rows(const Strided<S>& in, int64_t b, int64_t h, int64_t cols) const {
    constexpr int64_t kLine = 64;
    const int64_t bytes = ((cols - 1) * in.sc + 1) * static_cast<int64_t>(sizeof(S));
    for (int64_t t = 0; t < n; ++t) {
      const char* row = reinterpret_cast<const char*>(in.data + b * in.sb + h * in.sh + t * in.st);
      for (int64_t at = 0; at < bytes; at += kLine) __builtin_prefetch(row + at);
    }
  }
};

// Kept rows into sel[0 : rows), ascending (row 0 first with exclude_first). Row j ranks
// before row i: larger score, NaN above everything, ties to the lower index (a strict
// total order, so exactly `keep` rows are kept whatever the scores).
// `key` (np entries of scratch) holds the scores with NaN made +inf (scores are stds of
// probabilities, finite or NaN), so the order above is: larger key, then lower index. The
// ranks of kLanes rows are counted side by side.
template <typename S, typename T>
inline void select_rows(const Problem<S, T>& p, const T* score, T* key, int64_t* sel) {
  using I = ivec<T>;
  using E = typename simd::Simd<T>::E;
  for (int64_t i = 0; i < p.n; ++i) {
    const T si = score[i];
    key[i] = std::isnan(si) ? std::numeric_limits<T>::infinity() : std::min(si, std::numeric_limits<T>::max());
  }
  const I lane = iota<I>();
  int64_t r = 0;
  if (p.first) sel[r++] = 0;
  for (int64_t i0 = 0; i0 < p.n; i0 += kLanes<T>) {
    const vec<T> ki = vload(key + i0);
    const I index = lane + static_cast<E>(i0);
    I rank{};
    for (int64_t j = p.first; j < p.n; ++j) {
      const vec<T> kj = vec<T>{} + key[j];
      rank -= (kj > ki) | ((kj == ki) & (I{} + static_cast<E>(j) < index));  // true is -1
    }
    for (int64_t i = std::max(i0, p.first); i < std::min(i0 + kLanes<T>, p.n); ++i)
      if (rank[i - i0] < p.keep) sel[r++] = i;
  }
}

// ---- forward ------------------------------------------------------------------------------------

template <typename S, typename T>
struct Forward {
  Problem<S, T> p;
  S* out;        // [BH, rows, dv]
  int64_t* index;  // [BH, keep]
  T* lse;        // [BH, rows]
  bool stream;   // out written with streaming stores (stream_output)

  // Scratch layout (elements of T), shared by every problem of a thread. q, k, v are used
  // in place when rows_of can (float32 / float64 with unit column stride): then their
  // scratch stays unused.
  int64_t q_at() const { return 0; }                                  // [n, dp]
  int64_t k_at() const { return q_at() + p.n * p.dp(); }              // [n, dp]
  int64_t v_at() const { return k_at() + p.n * p.dp(); }              // [n, dvp]
  int64_t s_at() const { return v_at() + p.n * p.dvp(); }             // [n, np], S^T, then exp
  int64_t w_at() const { return s_at() + p.n * p.np(); }              // [n, rp], kept rows transposed
  int64_t o_at() const { return w_at() + p.n * p.rp(); }              // [rows, dvp]
  int64_t stat_at() const { return o_at() + p.rows() * p.dvp(); }     // [4, np]: max, sum, score, key
  int64_t scratch() const { return stat_at() + 4 * p.np(); }

  void run(int64_t bh, T* buf, int64_t* sel) const {
    const int64_t b = bh / p.heads, h = bh % p.heads, n = p.n, np = p.np(), rows = p.rows(), rp = p.rp();
    T *st = buf + s_at(), *w = buf + w_at();
    T *o = buf + o_at(), *rmax = buf + stat_at(), *rsum = rmax + np, *score = rsum + np;
    int64_t ldq, ldk, ldv;
    const T* q = rows_of(p.q, b, h, n, p.d, buf + q_at(), &ldq);
    const T* k = rows_of(p.k, b, h, n, p.d, buf + k_at(), &ldk);
    const T* v = rows_of(p.v, b, h, n, p.dv, buf + v_at(), &ldv);
    dots(k, ldk, n, q, ldq, n, p.dp(), st, np);  // (q k^T)^T: rows side by side in lanes
    row_statistics(st, n, np, p.scale, rmax, rsum, score);
    select_rows(p, score, score + np, sel);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = sel[r];
      const T inv = T(1) / rsum[i];
      for (int64_t j = 0; j < n; ++j) w[j * rp + r] = st[j * np + i] * inv;
      lse[bh * rows + r] = rmax[i] + std::log(rsum[i]);
      if (r >= p.first) index[bh * p.keep + r - p.first] = i;
    }
    if (p.second) softmax_columns(w, w, n, rp);
    S* out_bh = out + bh * rows * p.dv;
    if constexpr (std::is_same<S, T>::value) {
      if (p.dv % kLanes<T> == 0) {  // whole vectors per row: straight into the output
        rows_times_out(stream, w, 1, rp, rows, n, v, ldv, p.dv, out_bh);
        return;
      }
    }
    rows_times(w, 1, rp, rows, n, v, ldv, p.dv, o, p.dvp());  // out = A[kept] v
    for (int64_t r = 0; r < rows; ++r) store_row(o + r * p.dvp(), p.dv, out_bh + r * p.dv);
  }
};

// ---- backward -----------------------------------------------------------------------------------

template <typename S, typename T>
struct Backward {
  Problem<S, T> p;
  Strided<S> grad;       // [B, H, rows, dv]
  const int64_t* index;  // [BH, keep]
  const T* lse;          // [BH, rows]
  S *dq, *dk, *dv;       // contiguous, like q, k, v
  bool stream_dq, stream_dk, stream_dv;  // written with streaming stores (stream_output)

  // Scratch layout (elements of T). The kept rows' [rows, n] matrices are stored transposed,
  // [n, rp], so their softmax pieces run rows side by side and the products read them with
  // either stride.
  int64_t q_at() const { return 0; }                                 // [rows, dp], kept q rows
  int64_t k_at() const { return q_at() + p.rows() * p.dp(); }        // [n, dp] (unless direct)
  int64_t v_at() const { return k_at() + p.n * p.dp(); }             // [n, dvp] (unless direct)
  int64_t g_at() const { return v_at() + p.n * p.dvp(); }            // [rows, dvp], upstream gradient
  int64_t a_at() const { return g_at() + p.rows() * p.dvp(); }       // [n, rp], A^T (kept rows)
  int64_t a2_at() const { return a_at() + p.n * p.rp(); }            // [n, rp], after 2nd softmax
  int64_t da_at() const { return a2_at() + p.n * p.rp(); }           // [n, rp], dA^T, then scale dS^T
  int64_t lse_at() const { return da_at() + p.n * p.rp(); }          // [rp], this problem's lse
  int64_t dq_at() const { return lse_at() + p.rp(); }                // [rows, dp]
  int64_t dk_at() const { return dq_at() + p.rows() * p.dp(); }      // [n, dp]
  int64_t dv_at() const { return dk_at() + p.n * p.dp(); }           // [n, dvp]
  int64_t scratch() const { return dv_at() + p.n * p.dvp(); }

  void run(int64_t bh, T* buf, int64_t* sel) const {
    const int64_t b = bh / p.heads, h = bh % p.heads, n = p.n, rows = p.rows(), rp = p.rp();
    const int64_t dp = p.dp(), dvp = p.dvp();
    T *q = buf + q_at(), *at = buf + a_at(), *a2t = buf + a2_at(), *dat = buf + da_at(), *shift = buf + lse_at();
    T *gq = buf + dq_at(), *gk = buf + dk_at(), *gv = buf + dv_at();
    if (p.first) sel[0] = 0;
    for (int64_t r = p.first; r < rows; ++r) sel[r] = index[bh * p.keep + r - p.first];
    for (int64_t r = 0; r < rows; ++r) {
      load_row(p.q, b, h, sel[r], p.d, q + r * dp);
      shift[r] = lse[bh * rows + r];
    }
    int64_t ldk, ldv, ldg;
    const T* k = rows_of(p.k, b, h, n, p.d, buf + k_at(), &ldk);
    const T* v = rows_of(p.v, b, h, n, p.dv, buf + v_at(), &ldv);
    const T* g = rows_of(grad, b, h, rows, p.dv, buf + g_at(), &ldg);
    dots(k, ldk, n, q, dp, rows, dp, at, rp);      // (q k^T)^T of the kept rows, as in the forward
    dots(v, ldv, n, g, ldg, rows, dvp, dat, rp);   // dA'^T = (dout v^T)^T
    zero_padding_lanes(at, n, rows, rp);
    zero_padding_lanes(dat, n, rows, rp);
    exp_columns(at, n, rp, p.scale, shift);        // A = exp(scale S - lse)
    const T* used = at;                            // the rows multiplied by v
    if (p.second) {                                // A' = softmax(A): dA = A' * (dA' - sum_j A' dA')
      softmax_columns(at, a2t, n, rp);
      softmax_grad_columns(a2t, dat, n, rp, T(1));
      used = a2t;
    }
    S* dv_bh = dv + bh * n * p.dv;
    S* dk_bh = dk + bh * n * p.d;
    bool dv_done = false, dk_done = false;
    if constexpr (std::is_same<S, T>::value) {
      if (p.dv % kLanes<T> == 0) {  // dv = used^T dout, straight into the output
        rows_times_out(stream_dv, used, rp, 1, n, rows, g, ldg, p.dv, dv_bh);
        dv_done = true;
      }
    }
    if (!dv_done) rows_times(used, rp, 1, n, rows, g, ldg, p.dv, gv, dvp);
    softmax_grad_columns(at, dat, n, rp, p.scale);          // scale dS = scale A * (dA - sum_j A dA)
    rows_times(dat, 1, rp, rows, n, k, ldk, p.d, gq, dp);  // dq[kept] = scale dS k
    if constexpr (std::is_same<S, T>::value) {
      if (p.d % kLanes<T> == 0) {  // dk = scale dS^T q, straight into the output
        rows_times_out(stream_dk, dat, rp, 1, n, rows, q, dp, p.d, dk_bh);
        dk_done = true;
      }
    }
    if (!dk_done) rows_times(dat, rp, 1, n, rows, q, dp, p.d, gk, dp);
    S* dq_bh = dq + bh * n * p.d;
    for (int64_t t = 0, r = 0; t < n; ++t) {  // sel is ascending: kept rows in one pass
      S* dq_t = dq_bh + t * p.d;
      const bool kept = r < rows && sel[r] == t;
      if (stream_dq) {
        stream_row(kept ? gq + r++ * dp : nullptr, p.d, dq_t);
      } else if (kept) {
        store_row(gq + r++ * dp, p.d, dq_t);
      } else {
        std::fill(dq_t, dq_t + p.d, static_cast<S>(0));
      }
      if (!dk_done) store_row(gk + t * dp, p.d, dk_bh + t * p.d);
      if (!dv_done) store_row(gv + t * dvp, p.dv, dv_bh + t * p.dv);
    }
  }
};

// Problems [bh0, bh1) with one scratch buffer; compiled per instruction set (isa.h).
template <typename Kernel, typename T>
inline void run_problems(const Kernel& kernel, int64_t bh0, int64_t bh1, T* buf, int64_t* sel) {
  for (int64_t bh = bh0; bh < bh1; ++bh) {
    if (bh + 1 < bh1) kernel.p.prefetch(bh + 1);
    kernel.run(bh, buf, sel);
  }
}

// Problems per task: enough to amortise the scheduling, few enough to balance 2..64 threads.
constexpr int64_t kGrain = 16;

template <typename T, typename Kernel>
void run_all(const Kernel& kernel, int64_t problems) {
  const Isa isa = cpu_isa();
  at::parallel_for(0, problems, kGrain, [&](int64_t bh0, int64_t bh1) {
    // Zero-filled once: padding columns are never written, so they stay 0.
    std::vector<T> buf(kernel.scratch() + kLanes<T>);
    std::vector<int64_t> sel(kernel.p.rows());
    run_for_isa(isa, [&] { run_problems(kernel, bh0, bh1, buf.data(), sel.data()); });
    finish_streaming();
  });
}

// ---- glue ---------------------------------------------------------------------------------------

template <typename S, typename T>
Problem<S, T> make_problem(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t keep,
                           bool exclude_first, double scale, bool second) {
  return {strided<S>(q), strided<S>(k), strided<S>(v), q.size(1), q.size(2), q.size(3), v.size(3), keep,
          exclude_first ? 1 : 0, second, T(scale)};
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_forward(const at::Tensor& q, const at::Tensor& k,
                                                                          const at::Tensor& v, int64_t keep,
                                                                          bool exclude_first, double scale,
                                                                          bool second_softmax) {
  check_topk_std_inputs(q, k, v, keep, exclude_first);
  TORCH_CHECK_VALUE(q.device().is_cpu(), "q, k, v must be CPU tensors, got ", q.device());
  const int64_t B = q.size(0), H = q.size(1), rows = keep + (exclude_first ? 1 : 0);
  at::Tensor out = empty_huge({B, H, rows, v.size(3)}, q.options());
  at::Tensor index = at::empty({B, H, keep}, q.options().dtype(at::kLong));
  at::Tensor lse = at::empty({B, H, rows}, q.options().dtype(acc_type(q.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "topk_std_attention_forward", [&] {
    using T = at::opmath_type<scalar_t>;
    const Forward<scalar_t, T> kernel{make_problem<scalar_t, T>(q, k, v, keep, exclude_first, scale, second_softmax),
                                      out.mutable_data_ptr<scalar_t>(), index.mutable_data_ptr<int64_t>(),
                                      lse.mutable_data_ptr<T>(), stream_output(out)};
    run_all<T>(kernel, B * H);
  });
  return {out, index, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> topk_std_attention_backward(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& index_,
    const at::Tensor& lse_, bool exclude_first, double scale, bool second_softmax) {
  TORCH_CHECK_VALUE(index_.dim() == 3, "index must be [B, H, keep], got ", index_.sizes());
  const int64_t keep = index_.size(2);
  check_topk_std_inputs(q, k, v, keep, exclude_first);
  TORCH_CHECK_VALUE(q.device().is_cpu() && grad.device().is_cpu(), "grad, q, k, v must be CPU tensors");
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), first = exclude_first ? 1 : 0, rows = keep + first;
  check_topk_std_backward(grad, index_, q, v, keep, exclude_first);
  TORCH_CHECK_VALUE(lse_.dim() == 3 && lse_.size(0) == B && lse_.size(1) == H && lse_.size(2) == rows,
                    "lse must be [B, H, keep + exclude_first], got ", lse_.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == q.scalar_type(), "grad must have the dtype of q");
  const at::Tensor index = index_.to(at::kLong).contiguous();
  const at::Tensor lse = lse_.to(acc_type(q.scalar_type())).contiguous();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  for (int64_t m = 0; m < index.numel(); ++m) {  // the kernel gathers q rows by these, in order
    TORCH_CHECK_VALUE(idx[m] >= first && idx[m] < T, "index values must be in [", first, ", ", T, "), got ", idx[m]);
    TORCH_CHECK_VALUE(m % keep == 0 || idx[m] > idx[m - 1],
                      "index must be strictly increasing along its last dimension (as the forward returns it)");
  }
  at::Tensor dq = empty_huge(q.sizes(), q.options()), dk = empty_huge(k.sizes(), k.options());
  at::Tensor dv = empty_huge(v.sizes(), v.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "topk_std_attention_backward", [&] {
    using T = at::opmath_type<scalar_t>;
    const Backward<scalar_t, T> kernel{make_problem<scalar_t, T>(q, k, v, keep, exclude_first, scale, second_softmax),
                                       strided<scalar_t>(grad), idx, lse.const_data_ptr<T>(),
                                       dq.mutable_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(),
                                       dv.mutable_data_ptr<scalar_t>(), stream_row_output<scalar_t, T>(dq), stream_output(dk), stream_output(dv)};
    run_all<T>(kernel, B * H);
  });
  return {dq, dk, dv};
}

}  // namespace fastlocal::cpu
