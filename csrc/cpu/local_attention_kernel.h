// Banded local attention kernels, written once and compiled per instruction set: the glue
// (local_attention.cpp) calls forward() / backward() inside run_for_isa (isa.h).
//
// Algorithm (flash-attention style, per task = one batch-head x `chunk` query rows):
//   * the task's keys (a contiguous slice: windows are monotone in i) are transposed
//     once into kt [D, keys] (and vt [Dv, keys] for the backward);
//   * query rows go in tiles of kRows = 4: the tile's scores against the union of its
//     windows (<= window + 3 keys) are one register-blocked product, vectorised over
//     keys, so each loaded key vector feeds 4 FMAs (6 rows spill registers: 2x slower);
//   * bias, out-of-window and padding masks, exp and the row sums are vector loops over
//     the same tile; the output is the probability-weighted sum of value rows,
//     vectorised over Dv. Nothing of size T x window is ever stored.
//   * backward recomputes the probabilities from the saved log-sum-exp, writes dq, the
//     dk/dv rows the task owns, and its contributions to neighbouring rows (halo) and to
//     the bias table (partial), which the glue adds in task order: no atomics, no races,
//     bitwise reproducible for any thread count.
//
// Non-finite values (docs/design.md, "Non-finite values"): logits outside a row's window
// or on padded keys are set to -inf by selection, the row max propagates NaN, and a row
// whose max is NaN or +inf is NaN on its band (exp_row); the register-blocked products
// multiply a tile's rows by every key of the tile, so a tile whose v / k / q / dout rows
// hold a NaN or inf (flagged once per task by NonFinite) takes masked_combine /
// masked_scatter instead, which add only the pairs inside each row's band. Finite data
// never leaves the fast loops.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../common/dropout_hash.h"
#include "local_attention.h"
#include "vec.h"

namespace fastlocal::cpu::local_attention {

using simd::ceil_to;
using simd::hmax;
using simd::hsum;
using simd::iota;
using simd::ivec;
using simd::kLanes;
using simd::splat;
using simd::vec;
using simd::vexp;
using simd::vload;
using simd::vstore;

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// exp of 8 floats as 2^(x log2 e): round-to-nearest split t = n + f (|f| <= 1/2) with the
// 1.5 * 2^23 trick, 2^f by its degree-6 Taylor polynomial (relative error < 2e-7), and
// 2^n added to the exponent bits. Lanes holding -inf (masked scores) give exactly 0.
inline vec<float> vexp(vec<float> x) {
  using V = vec<float>;
  using I = ivec<float>;
  const I masked = x == splat<float>(-__builtin_inff());
  x = x > splat(-87.0f) ? x : splat(-87.0f);
  x = x < splat(88.0f) ? x : splat(88.0f);
  const V t = x * 1.44269504088896341f;
  const V n = (t + 12582912.0f) - 12582912.0f;
  const V f = t - n;
  V y = splat(1.5403530e-4f);
  y = y * f + 1.3333558e-3f;
  y = y * f + 9.6181291e-3f;
  y = y * f + 5.5504109e-2f;
  y = y * f + 2.4022651e-1f;
  y = y * f + 6.9314718e-1f;
  y = y * f + 1.0f;
  I bits;
  __builtin_memcpy(&bits, &y, sizeof(bits));
  bits += __builtin_convertvector(n, I) << 23;
  __builtin_memcpy(&y, &bits, sizeof(y));
  return masked ? splat(0.0f) : y;
}

inline float log_of(float x) { return ::logf(x); }  // the double log was 8% of the forward
inline double log_of(double x) { return ::log(x); }

// The counter-based dropout of fastlocal/reference/dropout.py (csrc/common/dropout_hash.h),
// with the key of batch-head bh computed once per task.
struct Dropout {
  uint32_t threshold = 0;  // keep when hash >= threshold
  uint32_t head_key = 0;   // hash(hash(bh) ^ seed)

  Dropout(double p, uint32_t seed, int64_t bh) {
    threshold = dropout::keep_threshold(p);
    if (p > 0.0) head_key = dropout::head_key(seed, bh);
  }
  bool active() const { return threshold != 0; }
  uint32_t row_key(int64_t i) const { return dropout::row_key(head_key, i); }
  bool keep(uint32_t row_key, int64_t j) const { return dropout::kept(row_key, j, threshold); }
};

// out[r][j] = sum_d a[r][d] * bt[d][j] for r < kRows, j < n (rounded up to 2 vectors).
// a: kRows row pointers of `dims` values; bt: [dims, ld_bt]. Each key vector loaded is
// used by the 4 rows of the tile, which keeps the loop FMA-bound.
template <typename T, int NV>
inline void tile_scores_step(const T* const* a, int64_t dims, const T* col, int64_t ld_bt, T* out, int64_t ld_out) {
  constexpr int W = kLanes<T>;
  constexpr int R = Layout::kRows;
  using V = vec<T>;
  V acc[R][NV] = {};
  for (int64_t d = 0; d < dims; ++d) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = vload(col + d * ld_bt + v * W);
    for (int r = 0; r < R; ++r) {
      const T x = a[r][d];
      for (int v = 0; v < NV; ++v) acc[r][v] += x * b[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) vstore(out + r * ld_out + v * W, acc[r][v]);
}

// out[r][j] = sum_d a[r][d] * bt[d][j] for r < kRows, j < n (rounded up to a vector).
// a: kRows row pointers of `dims` values; bt: [dims, ld_bt]. Each key vector loaded
// feeds the kRows rows of the tile (kRows x 2 accumulators + loads fit the 16 registers),
// which keeps the loop FMA-bound.
template <typename T>
void tile_scores(const T* const* a, int64_t dims, const T* bt, int64_t ld_bt, int64_t n, T* out, int64_t ld_out) {
  constexpr int W = kLanes<T>;
  int64_t j = 0;
  for (; j + 2 * W < n; j += 3 * W) tile_scores_step<T, 3>(a, dims, bt + j, ld_bt, out + j, ld_out);
  if (j + W < n) tile_scores_step<T, 2>(a, dims, bt + j, ld_bt, out + j, ld_out);
  else if (j < n) tile_scores_step<T, 1>(a, dims, bt + j, ld_bt, out + j, ld_out);
}

// out[r][:dims] = sum_{j < n} w[r][j] * m[j][:dims] (m rows of stride ld_m), r < kRows.
template <typename T>
void tile_combine(const T* w, int64_t ld_w, int64_t n, const T* m, int64_t ld_m, int64_t dims, T* out,
                  int64_t ld_out) {
  constexpr int W = kLanes<T>;
  constexpr int R = Layout::kRows;
  using V = vec<T>;
  int64_t c = 0;
  for (; c + 2 * W <= dims; c += 2 * W) {
    V acc[R][2] = {};
    for (int64_t j = 0; j < n; ++j) {
      const V m0 = vload(m + j * ld_m + c), m1 = vload(m + j * ld_m + c + W);
      for (int r = 0; r < R; ++r) {
        const T x = w[r * ld_w + j];
        acc[r][0] += x * m0;
        acc[r][1] += x * m1;
      }
    }
    for (int r = 0; r < R; ++r) {
      vstore(out + r * ld_out + c, acc[r][0]);
      vstore(out + r * ld_out + c + W, acc[r][1]);
    }
  }
  for (; c < dims; ++c) {
    for (int r = 0; r < R; ++r) {
      T acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += w[r * ld_w + j] * m[j * ld_m + c];
      out[r * ld_out + c] = acc;
    }
  }
}

// m[j][c : c + NV vectors] += sum_{r < kRows} w[r][j] * a[r][c : ...] for j < n. The
// kRows x NV vectors of `a` stay in registers across all j, so each key row costs NV
// loads + NV stores for kRows x NV FMAs (with a[r] reloaded per key it was load-bound).
template <typename T, int NV>
inline void tile_scatter_cols(const T* w, int64_t ld_w, int64_t n, const T* const* a, int64_t c, T* m,
                              int64_t ld_m) {
  constexpr int W = kLanes<T>;
  constexpr int R = Layout::kRows;
  using V = vec<T>;
  V av[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) av[r][v] = vload(a[r] + c + v * W);
  for (int64_t j = 0; j < n; ++j) {
    T* row = m + j * ld_m + c;
    for (int v = 0; v < NV; ++v) {
      V acc = vload(row + v * W);
      for (int r = 0; r < R; ++r) acc += w[r * ld_w + j] * av[r][v];
      vstore(row + v * W, acc);
    }
  }
}

// m[j][:dims] += sum_{r < kRows} w[r][j] * a[r][:dims] for j < n (the transpose of
// tile_combine: the backward's dk / dv accumulation into the task's key rows).
template <typename T>
void tile_scatter(const T* w, int64_t ld_w, int64_t n, const T* const* a, int64_t dims, T* m, int64_t ld_m) {
  constexpr int W = kLanes<T>;
  int64_t c = 0;
  for (; c + 2 * W <= dims; c += 2 * W) tile_scatter_cols<T, 2>(w, ld_w, n, a, c, m, ld_m);
  for (; c + W <= dims; c += W) tile_scatter_cols<T, 1>(w, ld_w, n, a, c, m, ld_m);
  for (; c < dims; ++c)
    for (int64_t j = 0; j < n; ++j)
      for (int r = 0; r < Layout::kRows; ++r) m[j * ld_m + c] += w[r * ld_w + j] * a[r][c];
}

// Which rows of a [rows, dims] matrix hold a NaN or inf, as prefix counts over rows
// [lo, hi) of one batch-head, so a tile asks "any in [a, b)?" in O(1).
template <typename T>
struct NonFinite {
  std::vector<int32_t> count;
  int64_t lo = 0;
  void build(const T* base, int64_t dims, int64_t lo_, int64_t hi) {
    lo = lo_;
    count.assign(static_cast<size_t>(hi - lo + 1), 0);
    for (int64_t j = lo; j < hi; ++j) {
      // x - x is NaN for NaN and inf, 0 otherwise, and NaN sticks in a sum: whole vectors.
      const T* row = base + j * dims;
      vec<T> acc{};
      int64_t c = 0;
      for (; c + kLanes<T> <= dims; c += kLanes<T>) acc += vload(row + c) - vload(row + c);
      T tail = hsum<T>(acc);
      for (; c < dims; ++c) tail += row[c] - row[c];
      count[j - lo + 1] = count[j - lo] + (tail != T(0));
    }
  }
  bool any(int64_t a, int64_t b) const { return count[b - lo] != count[a - lo]; }
};

// Everything a task needs that does not change from one row tile to the next.
template <typename T>
struct Task {
  const Params<T>& p;
  const Layout& lay;
  T* scratch;
  int64_t bh, b, h, row_begin, row_end, key_begin, key_end;

  Task(const Params<T>& p_, const Layout& lay_, T* scratch_, int64_t t) : p(p_), lay(lay_), scratch(scratch_) {
    bh = t / p.chunks();
    b = bh / p.heads;
    h = bh % p.heads;
    row_begin = (t % p.chunks()) * p.chunk;
    row_end = min64(row_begin + p.chunk, p.length);
    key_begin = p.keys_begin(row_begin);
    key_end = p.keys_end(row_end - 1);
  }
  int64_t keys() const { return key_end - key_begin; }

  // kt (and vt) <- the task's keys (values) transposed, so score loops read keys contiguously;
  // `factor` folds the logit scale into the keys once instead of into every score.
  void transpose(const T* src, int64_t dims, T factor, T* dst) const {
    const T* base = src + (bh * p.length + key_begin) * dims;
    const int64_t n = keys();
    int64_t j0 = 0, d0 = 0;
    if constexpr (kLanes<T> == 8) {  // 8 x 8 blocks through registers (a scalar copy was 8% of the forward)
      for (; j0 + 8 <= n; j0 += 8)
        for (d0 = 0; d0 + 8 <= dims; d0 += 8)
          transpose8x8(base + j0 * dims + d0, dims, factor, dst + d0 * lay.ld_keys + j0);
      d0 = dims - dims % 8;
    }
    for (int64_t d = 0; d < dims; ++d) {  // what the blocks left: the last keys, and trailing dims
      const int64_t from = d < d0 ? j0 : 0;
      for (int64_t j = from; j < n; ++j) dst[d * lay.ld_keys + j] = base[j * dims + d] * factor;
      for (int64_t j = n; j < lay.ld_keys; ++j) dst[d * lay.ld_keys + j] = T(0);
    }
  }

  // dst[d][j] = src[j][d] * factor for an 8 x 8 block (rows of src `ld_src` apart, of dst
  // lay.ld_keys apart): unpack pairs, then quads, then halves.
  void transpose8x8(const T* src, int64_t ld_src, T factor, T* dst) const {
    using V = vec<T>;
    using M = ivec<T>;
    V r[8], t[8], u[8];
    for (int k = 0; k < 8; ++k) r[k] = vload(src + k * ld_src) * factor;
    const M lo2 = {0, 8, 1, 9, 4, 12, 5, 13}, hi2 = {2, 10, 3, 11, 6, 14, 7, 15};
    const M lo4 = {0, 1, 8, 9, 4, 5, 12, 13}, hi4 = {2, 3, 10, 11, 6, 7, 14, 15};
    const M lo8 = {0, 1, 2, 3, 8, 9, 10, 11}, hi8 = {4, 5, 6, 7, 12, 13, 14, 15};
    for (int k = 0; k < 8; k += 2) {
      t[k] = __builtin_shuffle(r[k], r[k + 1], lo2);
      t[k + 1] = __builtin_shuffle(r[k], r[k + 1], hi2);
    }
    for (int k = 0; k < 8; k += 4)
      for (int h = 0; h < 2; ++h) {
        u[k + 2 * h] = __builtin_shuffle(t[k + h], t[k + h + 2], lo4);
        u[k + 2 * h + 1] = __builtin_shuffle(t[k + h], t[k + h + 2], hi4);
      }
    // u[k] (k < 4) holds dims k and k + 4 of keys 0-3 (lanes 0-3, 4-7); u[k + 4] of keys 4-7.
    for (int k = 0; k < 4; ++k) {
      vstore(dst + k * lay.ld_keys, __builtin_shuffle(u[k], u[k + 4], lo8));
      vstore(dst + (k + 4) * lay.ld_keys, __builtin_shuffle(u[k], u[k + 4], hi8));
    }
  }

  // The bias row of head h with zero slack around it; pen[j] = -inf for padded keys.
  void prepare_bias_and_padding() const {
    T* bias = scratch + lay.bias;
    for (int64_t m = 0; m < lay.bias_len; ++m) bias[m] = T(0);
    if (p.rpb != nullptr)
      for (int64_t m = 0; m < p.n_bias; ++m) bias[Layout::kBias + m] = p.rpb[h * p.n_bias + m];
    T* pen = scratch + lay.pen;
    for (int64_t j = 0; j < lay.ld_keys; ++j) {
      const bool padded = p.pad != nullptr && j < keys() && p.pad[b * p.length + key_begin + j];
      pen[j] = padded ? -__builtin_inf() : T(0);
    }
  }
};

// One tile of up to kRows query rows: its rows, their key ranges, the keys the tile spans.
template <typename T>
struct RowTile {
  int64_t first, count, key0, n;  // rows first..first+count-1; keys key0..key0+n-1
  const T* q[Layout::kRows];

  RowTile(const Task<T>& task, int64_t i0) {
    const Params<T>& p = task.p;
    first = i0;
    count = min64(Layout::kRows, task.row_end - i0);
    key0 = p.keys_begin(first);
    n = p.keys_end(first + count - 1) - key0;
    for (int r = 0; r < Layout::kRows; ++r)  // a short tile repeats its last row (results unused)
      q[r] = p.q + (task.bh * p.length + first + min64(r, count - 1)) * p.dim;
  }
};

// s[r][:] <- masked, biased logits of the tile (-inf outside each row's window / on padding);
// returns each row's max in row_max.
template <typename T>
void tile_logits(const Task<T>& task, const RowTile<T>& tile, T* s, T* row_max) {
  constexpr int W = kLanes<T>;
  using V = vec<T>;
  const Params<T>& p = task.p;
  const Layout& lay = task.lay;
  tile_scores(tile.q, p.dim, task.scratch + lay.kt + (tile.key0 - task.key_begin), lay.ld_keys, tile.n, s,
              lay.ld_cols);
  const T* pen = task.scratch + lay.pen + (tile.key0 - task.key_begin);
  const V lanes = iota<vec<T>>();
  const V neg_inf = splat<T>(-__builtin_inf());
  for (int64_t r = 0; r < tile.count; ++r) {
    const int64_t i = tile.first + r;
    // bias[jj] is the bias of key key0 + jj for query i: a contiguous slice of the table.
    const T* bias = task.scratch + lay.bias + Layout::kBias + (tile.key0 - i) + p.bias_offset();
    const V lo = splat(T(p.keys_begin(i) - tile.key0)), hi = splat(T(p.keys_end(i) - tile.key0));
    T* row = s + r * lay.ld_cols;
    V m = neg_inf;
    for (int64_t jj = 0; jj < tile.n; jj += W) {
      const V idx = lanes + T(jj);
      V x = vload(row + jj);
      if (p.rpb != nullptr) x += vload(bias + jj);
      // Selection, not addition: NaN + -inf would be NaN on a padded key.
      if (p.pad != nullptr)
        x = (idx >= lo) & (idx < hi) & (vload(pen + jj) == T(0)) ? x : neg_inf;
      else
        x = (idx >= lo) & (idx < hi) ? x : neg_inf;
      vstore(row + jj, x);
      m = (x != x) | (x > m) ? x : m;  // a NaN logit sticks: NaN > y is false
    }
    T mx = m[0];
    for (int l = 1; l < W; ++l) mx = (m[l] != m[l]) | (m[l] > mx) ? m[l] : mx;
    row_max[r] = mx;
  }
}

// row[jj] <- exp(row[jj] - shift) for jj < n (whole vectors: lanes past n hold -inf
// logits and become 0); returns the row sum. A NaN or +inf shift (a NaN logit, a +inf
// logit or an overflow) is softmax's NaN on the row's band [lo, hi) minus padded keys
// (pen, relative to the tile), 0 elsewhere, and a NaN sum.
template <typename T>
T exp_row(T* row, int64_t n, T shift, int64_t lo, int64_t hi, const T* pen) {
  constexpr int W = kLanes<T>;
  if (!(shift < __builtin_inf())) {
    for (int64_t jj = 0; jj < ceil_to(n, int64_t(W)); ++jj)
      row[jj] = jj >= lo && jj < hi && (pen == nullptr || pen[jj] == T(0)) ? T(__builtin_nan("")) : T(0);
    return T(__builtin_nan(""));
  }
  vec<T> sum{};
  for (int64_t jj = 0; jj < n; jj += W) {
    const vec<T> e = vexp(vload(row + jj) - shift);
    vstore(row + jj, e);
    sum += e;
  }
  return hsum<T>(sum);
}

template <typename T>
void zero(T* x, int64_t n) {
  for (int64_t m = 0; m < n; ++m) x[m] = T(0);
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  constexpr int W = kLanes<T>;
  vec<T> acc{};
  int64_t c = 0;
  for (; c + W <= n; c += W) acc += vload(a + c) * vload(b + c);
  T s = hsum<T>(acc);
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

// Band of row r of the tile, relative to tile.key0.
template <typename T>
inline void row_band(const Task<T>& task, const RowTile<T>& tile, int64_t r, int64_t* lo, int64_t* hi) {
  *lo = task.p.keys_begin(tile.first + r) - tile.key0;
  *hi = task.p.keys_end(tile.first + r) - tile.key0;
}

template <typename T>
inline bool padded(const Task<T>& task, const RowTile<T>& tile, int64_t jj) {
  return task.p.pad != nullptr && task.scratch[task.lay.pen + tile.key0 - task.key_begin + jj] != T(0);
}

// tile_combine restricted to each row's band and unpadded keys (rows with skip[r] give 0):
// the path of tiles whose m rows hold a NaN or inf, so 0 * NaN never crosses the band.
template <typename T>
void masked_combine(const Task<T>& task, const RowTile<T>& tile, const bool* skip, const T* w, int64_t ld_w,
                    const T* m, int64_t ld_m, int64_t dims, T* out, int64_t ld_out) {
  for (int64_t r = 0; r < tile.count; ++r) {
    T* o = out + r * ld_out;
    zero(o, dims);
    if (skip[r]) continue;
    int64_t lo, hi;
    row_band(task, tile, r, &lo, &hi);
    for (int64_t jj = lo; jj < hi; ++jj) {
      if (padded(task, tile, jj)) continue;
      const T x = w[r * ld_w + jj];
      for (int64_t c = 0; c < dims; ++c) o[c] += x * m[jj * ld_m + c];
    }
  }
}

// tile_scatter restricted to each row's band and unpadded keys, rows with skip[r] left out.
template <typename T>
void masked_scatter(const Task<T>& task, const RowTile<T>& tile, const bool* skip, const T* w, int64_t ld_w,
                    const T* const* a, int64_t dims, T* m, int64_t ld_m) {
  for (int64_t r = 0; r < tile.count; ++r) {
    if (skip[r]) continue;
    int64_t lo, hi;
    row_band(task, tile, r, &lo, &hi);
    for (int64_t jj = lo; jj < hi; ++jj) {
      if (padded(task, tile, jj)) continue;
      const T x = w[r * ld_w + jj];
      for (int64_t c = 0; c < dims; ++c) m[jj * ld_m + c] += x * a[r][c];
    }
  }
}

// The kernels, over tasks [t0, t1). Task t covers batch-head t / chunks() and query rows
// [c * chunk, (c + 1) * chunk) with c = t % chunks().
//   forward:  out, lse.
//   backward: dq; dk/dv rows the task owns (its own query rows); contributions to
//             other rows go to halo + t * halo_stride(); the task's partial rpb
//             gradient goes to drpb_partial + t * n_bias. merge_backward() then adds
//             both in task order, so the result is independent of the thread count.
template <typename T>
void forward(const Params<T>& p, int64_t t0, int64_t t1, T* scratch) {
  constexpr int R = Layout::kRows;
  const Layout lay(p, false);
  T* s = scratch + lay.s;
  T* o = scratch + lay.o;
  const T keep_scale = T(1) / (T(1) - T(p.dropout_p));
  for (int64_t t = t0; t < t1; ++t) {
    const Task<T> task(p, lay, scratch, t);
    task.transpose(p.k, p.dim, p.scale, scratch + lay.kt);
    task.prepare_bias_and_padding();
    const Dropout drop(p.dropout_p, p.seed, task.bh);
    NonFinite<T> bad_v;
    bad_v.build(p.v + task.bh * p.length * p.dim_v, p.dim_v, task.key_begin, task.key_end);
    for (int64_t i0 = task.row_begin; i0 < task.row_end; i0 += R) {
      const RowTile<T> tile(task, i0);
      T row_max[R];
      tile_logits(task, tile, s, row_max);
      T inv_sum[R] = {};
      bool empty[R] = {};
      for (int64_t r = 0; r < R; ++r) {
        T* row = s + r * lay.ld_cols;
        const int64_t i = tile.first + r;
        if (r >= tile.count || row_max[r] == -__builtin_inf()) {  // no visible key: output 0
          zero(row, tile.n);
          empty[r] = true;
          if (r < tile.count) p.lse[task.bh * p.length + i] = -__builtin_inf();
          continue;
        }
        int64_t lo, hi;
        row_band(task, tile, r, &lo, &hi);
        const T* pen = p.pad != nullptr ? task.scratch + lay.pen + (tile.key0 - task.key_begin) : nullptr;
        const T sum = exp_row(row, tile.n, row_max[r], lo, hi, pen);
        p.lse[task.bh * p.length + i] = row_max[r] + log_of(sum);
        inv_sum[r] = T(1) / sum;
        if (drop.active()) {
          const uint32_t key = drop.row_key(i);
          for (int64_t jj = 0; jj < tile.n; ++jj) row[jj] *= drop.keep(key, tile.key0 + jj) ? keep_scale : T(0);
        }
      }
      const T* v_rows = p.v + (task.bh * p.length + tile.key0) * p.dim_v;
      if (bad_v.any(tile.key0, tile.key0 + tile.n))
        masked_combine(task, tile, empty, s, lay.ld_cols, v_rows, p.dim_v, p.dim_v, o, p.dim_v);
      else
        tile_combine(s, lay.ld_cols, tile.n, v_rows, p.dim_v, p.dim_v, o, p.dim_v);
      for (int64_t r = 0; r < tile.count; ++r) {
        T* dst = p.out + (task.bh * p.length + tile.first + r) * p.dim_v;
        if (empty[r]) zero(dst, p.dim_v);  // 0 * NaN must not reach a fully masked row
        else
          for (int64_t c = 0; c < p.dim_v; ++c) dst[c] = o[r * p.dim_v + c] * inv_sum[r];
      }
    }
  }
}

// Per row of the tile: s <- the dropped-out probabilities p~ (what multiplied v),
// dp <- ds = p * (dp~ * mask - delta), and accumulates ds into the task's bias gradient.
template <typename T>
void tile_softmax_backward(const Task<T>& task, const RowTile<T>& tile, const Dropout& drop, bool v_finite, T* s,
                           T* dp, bool* skip) {
  constexpr int W = kLanes<T>;
  const Params<T>& p = task.p;
  const Layout& lay = task.lay;
  const T keep_scale = T(1) / (T(1) - T(p.dropout_p));
  for (int64_t r = 0; r < Layout::kRows; ++r) {
    T* prow = s + r * lay.ld_cols;
    T* dprow = dp + r * lay.ld_cols;
    const int64_t i = tile.first + r;
    const T lse = r < tile.count ? p.lse[task.bh * p.length + i] : -__builtin_inf();
    skip[r] = lse == -__builtin_inf();
    if (skip[r]) {  // a row with no visible key (or past the tile) has no gradient
      zero(prow, tile.n);
      zero(dprow, tile.n);
      continue;
    }
    int64_t lo, hi;
    row_band(task, tile, r, &lo, &hi);
    const T* pen = p.pad != nullptr ? task.scratch + lay.pen + (tile.key0 - task.key_begin) : nullptr;
    exp_row(prow, tile.n, lse, lo, hi, pen);
    const int64_t row = task.bh * p.length + i;
    const T delta = dot(p.dout + row * p.dim_v, p.out + row * p.dim_v, p.dim_v);
    // Finite lse, delta (so finite dout and out) and v: every ds outside the band is
    // 0 * finite = 0. Otherwise select the band, so no 0 * NaN lands outside it.
    if (!(v_finite && lse < __builtin_inf() && delta - delta == T(0))) {
      for (int64_t jj = 0; jj < ceil_to(tile.n, int64_t(W)); ++jj) {
        const bool inside = jj >= lo && jj < hi && (pen == nullptr || pen[jj] == T(0));
        const T m = !drop.active() ? T(1) : drop.keep(drop.row_key(i), tile.key0 + jj) ? keep_scale : T(0);
        dprow[jj] = inside ? prow[jj] * (dprow[jj] * m - delta) : T(0);
        prow[jj] = inside ? prow[jj] * m : T(0);
      }
    } else
    if (drop.active()) {
      const uint32_t key = drop.row_key(i);
      // Whole vectors, like the branch below: the bias loop reads dprow up to
      // ceil_to(n, W), and lanes past n must be p * (...) = 0, not stale dO.v scores
      // (with edge="shift" those lanes index real entries of the 2W-1 bias table).
      for (int64_t jj = 0; jj < ceil_to(tile.n, int64_t(W)); ++jj) {
        const T m = drop.keep(key, tile.key0 + jj) ? keep_scale : T(0);
        dprow[jj] = prow[jj] * (dprow[jj] * m - delta);
        prow[jj] *= m;
      }
    } else {
      for (int64_t jj = 0; jj < tile.n; jj += W) vstore(dprow + jj, vload(prow + jj) * (vload(dprow + jj) - delta));
    }
    T* dbias = task.scratch + lay.dbias + Layout::kBias + (tile.key0 - i) + p.bias_offset();
    for (int64_t jj = 0; jj < tile.n; jj += W) vstore(dbias + jj, vload(dbias + jj) + vload(dprow + jj));
  }
}

template <typename T>
void backward(const Params<T>& p, int64_t t0, int64_t t1, T* scratch, T* halo, T* drpb_partial) {
  constexpr int R = Layout::kRows;
  const Layout lay(p, true);
  T* s = scratch + lay.s;
  T* dp = scratch + lay.dp;
  T* o = scratch + lay.o;
  T* dk = scratch + lay.dk;
  T* dv = scratch + lay.dv;
  const int64_t halo_rows_max = halo_rows(p);
  for (int64_t t = t0; t < t1; ++t) {
    const Task<T> task(p, lay, scratch, t);
    task.transpose(p.k, p.dim, p.scale, scratch + lay.kt);
    task.transpose(p.v, p.dim_v, T(1), scratch + lay.vt);
    task.prepare_bias_and_padding();
    zero(scratch + lay.dbias, lay.bias_len);
    zero(dk, task.keys() * p.dim);
    zero(dv, task.keys() * p.dim_v);
    const Dropout drop(p.dropout_p, p.seed, task.bh);
    NonFinite<T> bad_q, bad_k, bad_v, bad_dout;
    bad_k.build(p.k + task.bh * p.length * p.dim, p.dim, task.key_begin, task.key_end);
    bad_v.build(p.v + task.bh * p.length * p.dim_v, p.dim_v, task.key_begin, task.key_end);
    bad_q.build(p.q + task.bh * p.length * p.dim, p.dim, task.row_begin, task.row_end);
    bad_dout.build(p.dout + task.bh * p.length * p.dim_v, p.dim_v, task.row_begin, task.row_end);
    for (int64_t i0 = task.row_begin; i0 < task.row_end; i0 += R) {
      const RowTile<T> tile(task, i0);
      T row_max[R];
      tile_logits(task, tile, s, row_max);
      const int64_t tile_end = tile.first + tile.count, keys_end = tile.key0 + tile.n;
      const T* grad_rows[R];
      for (int r = 0; r < R; ++r) grad_rows[r] = p.dout + (task.bh * p.length + tile.first + min64(r, tile.count - 1)) * p.dim_v;
      tile_scores(grad_rows, p.dim_v, scratch + lay.vt + (tile.key0 - task.key_begin), lay.ld_keys, tile.n, dp,
                  lay.ld_cols);
      bool skip[R] = {};
      tile_softmax_backward(task, tile, drop, !bad_v.any(tile.key0, keys_end), s, dp, skip);
      const int64_t local = tile.key0 - task.key_begin;
      const T* k_rows = p.k + (task.bh * p.length + tile.key0) * p.dim;
      if (bad_k.any(tile.key0, keys_end))
        masked_combine(task, tile, skip, dp, lay.ld_cols, k_rows, p.dim, p.dim, o, p.dim);
      else
        tile_combine(dp, lay.ld_cols, tile.n, k_rows, p.dim, p.dim, o, p.dim);
      for (int64_t r = 0; r < tile.count; ++r) {
        T* dst = p.dq + (task.bh * p.length + tile.first + r) * p.dim;
        for (int64_t c = 0; c < p.dim; ++c) dst[c] = o[r * p.dim + c] * p.scale;
      }
      if (bad_q.any(tile.first, tile_end))
        masked_scatter(task, tile, skip, dp, lay.ld_cols, tile.q, p.dim, dk + local * p.dim, p.dim);
      else
        tile_scatter(dp, lay.ld_cols, tile.n, tile.q, p.dim, dk + local * p.dim, p.dim);
      if (bad_dout.any(tile.first, tile_end))
        masked_scatter(task, tile, skip, s, lay.ld_cols, grad_rows, p.dim_v, dv + local * p.dim_v, p.dim_v);
      else
        tile_scatter(s, lay.ld_cols, tile.n, grad_rows, p.dim_v, dv + local * p.dim_v, p.dim_v);
    }
    // Owned key rows (= the task's query rows) go straight to dk / dv; rows before and
    // after go to this task's halo, added by the glue in task order.
    const int64_t n_lo = task.row_begin - task.key_begin, n_hi = task.key_end - task.row_end;
    T* h = halo + t * halo_stride(p);
    T* dk_lo = h;
    T* dk_hi = dk_lo + halo_rows_max * p.dim;
    T* dv_lo = dk_hi + halo_rows_max * p.dim;
    T* dv_hi = dv_lo + halo_rows_max * p.dim_v;
    const auto emit = [&](const T* src, int64_t rows, int64_t dims, T factor, T* dst) {
      for (int64_t m = 0; m < rows * dims; ++m) dst[m] = src[m] * factor;
    };
    const int64_t own = task.row_end - task.row_begin;
    emit(dk, n_lo, p.dim, p.scale, dk_lo);
    emit(dk + n_lo * p.dim, own, p.dim, p.scale, p.dk + (task.bh * p.length + task.row_begin) * p.dim);
    emit(dk + (n_lo + own) * p.dim, n_hi, p.dim, p.scale, dk_hi);
    emit(dv, n_lo, p.dim_v, T(1), dv_lo);
    emit(dv + n_lo * p.dim_v, own, p.dim_v, T(1), p.dv + (task.bh * p.length + task.row_begin) * p.dim_v);
    emit(dv + (n_lo + own) * p.dim_v, n_hi, p.dim_v, T(1), dv_hi);
    const T* dbias = scratch + lay.dbias + Layout::kBias;
    for (int64_t m = 0; m < p.n_bias; ++m) drpb_partial[t * p.n_bias + m] = dbias[m];
  }
}

}  // namespace fastlocal::cpu::local_attention
