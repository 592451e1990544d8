// Banded local attention on CPU: what the ATen glue (local_attention.cpp) and the kernels
// (local_attention_kernel.h) share: the parameters of a call, its split into tasks, and
// the layout of a thread's scratch.
#pragma once

#include <cstdint>

namespace fastlocal::cpu::local_attention {

// Everything a kernel reads or writes. Tensors are contiguous, in the accumulation
// type T (float, or double for float64 inputs): q/k [BH, Tlen, D], v/out/dout [BH, Tlen, Dv],
// lse [BH, Tlen], rpb [H, n_bias], pad [B, Tlen] (1 = padding key).
template <typename T>
struct Params {
  const T* q;
  const T* k;
  const T* v;
  const T* rpb;          // nullptr: no bias
  const uint8_t* pad;    // nullptr: no padding
  T* out;                // forward
  T* lse;                // forward writes, backward reads; -inf for a row with no visible key
  const T* dout;         // backward (with out, which it also reads)
  T* dq;
  T* dk;
  T* dv;
  int64_t batch, heads, length, dim, dim_v;
  int64_t left, right;   // window offsets; W = left + right + 1
  bool shift;            // NATTEN edges (window moved inward) instead of clipped ones
  int64_t n_bias;        // entries per head of rpb
  T scale;
  double dropout_p;      // 0 disables dropout
  uint32_t seed;
  int64_t chunk;         // query rows per task (fixed, so results do not depend on threads)

  int64_t window() const { return left + right + 1; }
  int64_t chunks() const { return (length + chunk - 1) / chunk; }
  int64_t tasks() const { return batch * heads * chunks(); }
  int64_t bias_offset() const { return shift ? left + right : left; }
  // First key of query i's window (negative for clipped windows at the start).
  int64_t window_start(int64_t i) const {
    if (!shift) return i - left;
    const int64_t s = i - left < length - window() ? i - left : length - window();
    return s > 0 ? s : 0;
  }
  int64_t keys_begin(int64_t i) const { const int64_t s = window_start(i); return s > 0 ? s : 0; }
  int64_t keys_end(int64_t i) const {
    const int64_t e = window_start(i) + window();
    return e < length ? e : length;
  }
};

// Query rows (and owned key rows) per task: fixed, never derived from the thread count, and
// at least the window so that a task's halo (below) stays O(window) rows.
inline int64_t task_rows(int64_t window) {
  return window > 512 ? window : 512;
}

// Rows a backward task may touch outside the key rows it owns, on each side.
template <typename T>
int64_t halo_rows(const Params<T>& p) {
  const int64_t w = p.window() - 1;
  return w < p.length ? w : p.length;
}

// Halo values per task: halo_rows() rows before and after, of dim (dk) + dim_v (dv).
template <typename T>
int64_t halo_stride(const Params<T>& p) {
  return 2 * halo_rows(p) * (p.dim + p.dim_v);
}

// One thread's scratch, in elements of T. Row tiles are kRows queries; every buffer a
// vector loop reads has kPad elements of slack past its last used column, so loops run
// in whole vectors and ignore the extra lanes.
struct Layout {
  static constexpr int64_t kRows = 4;
  static constexpr int64_t kPad = 64;
  int64_t ld_keys;   // columns of the transposed key/value tiles: a task's keys + slack
  int64_t ld_cols;   // columns of the score tiles: a row tile's keys + slack
  int64_t bias_len;  // a bias row with slack on both sides (index kBias + relative offset)
  int64_t kt, vt, s, dp, o, bias, dbias, pen, dk, dv, size;
  static constexpr int64_t kBias = kRows + kPad;

  template <typename T>
  Layout(const Params<T>& p, bool backward) {
    const int64_t window = p.window() < p.length ? p.window() : p.length;
    const int64_t task_keys = p.chunk + window - 1 < p.length ? p.chunk + window - 1 : p.length;
    const int64_t tile_keys = window + kRows - 1 < p.length ? window + kRows - 1 : p.length;
    ld_keys = task_keys + kPad;
    ld_cols = tile_keys + kPad;
    bias_len = kBias + 2 * p.window() + tile_keys + kPad;
    int64_t at = 0;
    const auto take = [&at](int64_t n) { const int64_t start = at; at += n; return start; };
    kt = take(p.dim * ld_keys);
    vt = backward ? take(p.dim_v * ld_keys) : 0;
    s = take(kRows * ld_cols);
    dp = backward ? take(kRows * ld_cols) : 0;
    o = take(kRows * (p.dim > p.dim_v ? p.dim : p.dim_v) + kPad);
    bias = take(bias_len);
    dbias = backward ? take(bias_len) : 0;
    pen = take(ld_keys);
    dk = backward ? take(task_keys * p.dim + kPad) : 0;
    dv = backward ? take(task_keys * p.dim_v + kPad) : 0;
    size = at;
  }
};

}  // namespace fastlocal::cpu::local_attention
