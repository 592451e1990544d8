"""Triton kernels of ``local_attention`` and ``local_attention_probs`` (the ``triton`` backend).

Semantics: ``fastlocal/reference/local_attention.py``. Everything is flash-attention
style: nothing of size T x window reaches global memory, the forward keeps an online
softmax per query row and saves its log-sum-exp, and the backward recomputes the
probabilities from it.

Geometry. Query i sees keys ``[start(i), start(i) + W)`` ∩ ``[0, T)`` with
``start(i) = i - left`` (clip) or ``clamp(i - left, 0, max(T - W, 0))`` (shift, NATTEN);
``start`` is non-decreasing in i, so a block of queries meets one contiguous run of keys
and a block of keys one contiguous run of queries: every loop below visits only the
tiles that intersect the band. The bias of pair (i, j) is ``rpb[h, (j - i) + off]``,
``off = left`` (clip) or ``W - 1`` (shift).

Kernels:
  forward        one program per (b*h, query block): online softmax over the key tiles
                 of its band -> out, lse.
  backward dk/dv one program per (b*h, key block), looping over the query tiles whose
                 windows contain its keys (each program owns its dk/dv rows: no atomics).
  backward dq    one program per (b*h, query block), tiled by *relative offset*
                 d = j - i instead of by key: a tile of BLOCK_R offsets meets the span of
                 BLOCK_M + BLOCK_R keys ``m0 + d0 + c``; the [BLOCK_M, SPAN] products
                 are skewed into [BLOCK_M, BLOCK_R] with ``tl.gather`` (entry (r, c) ->
                 (r, c - r)), so the column sums of ds are the bias gradient of offsets
                 d0 .. d0 + BLOCK_R - 1. Each program writes them to its own row of a
                 workspace, reduced afterwards by one ``sum`` in a fixed order: the bias
                 gradient is deterministic, with no float atomics anywhere.
  probs          one program per (b*h, row) for the forward; the backward writes ds
                 by bias index (one row per query), then one program per (b*h, block of
                 positions) gathers dq and dk from the rows that touch it, in row order.

Dropout keeps probability (bh, i, j) iff ``lowbias32`` of (seed, bh, i, j) clears a
threshold, bit for bit as ``fastlocal/reference/dropout.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._dispatch import triton_interpreted
from ..reference.dropout import keep_threshold

# ------------------------------------------------------------------------ device helpers


@triton.jit
def _hash32(x):
    """lowbias32 on uint32 words (fastlocal/reference/dropout.py)."""
    x ^= x >> 16
    x *= tl.full([], 0x7FEB352D, tl.uint32)
    x ^= x >> 15
    x *= tl.full([], 0x846CA68B, tl.uint32)
    x ^= x >> 16
    return x


@triton.jit
def _dropout_keep(seed, bh, i, j, threshold):
    """True where probability (bh, i, j) is kept; i and j broadcast against each other."""
    h = _hash32(_hash32(bh.to(tl.uint32)) ^ seed.to(tl.uint32))
    h = _hash32(h ^ i.to(tl.uint32))
    h = _hash32(h ^ j.to(tl.uint32))
    return h.to(tl.int64) >= threshold


@triton.jit
def _window_start(i, T, LEFT, W, SHIFT: tl.constexpr):
    """First key of query i's window (negative at the start for clip)."""
    if SHIFT:
        return tl.minimum(tl.maximum(i - LEFT, 0), tl.maximum(T - W, 0))
    return i - LEFT


@triton.jit
def _visible(rows, keys, T, LEFT, W, SHIFT: tl.constexpr):
    """[rows x keys] bool: key inside the query's window and the sequence (rows < T)."""
    start = _window_start(rows, T, LEFT, W, SHIFT)
    return (keys >= start) & (keys < start + W) & (keys >= 0) & (keys < T) & (rows < T)


@triton.jit
def _load_rows(base, rows, stride_t, stride_d, T, D, BLOCK_D: tl.constexpr):
    """[len(rows), BLOCK_D] tile of a [T, D] matrix, zero outside it."""
    cols = tl.arange(0, BLOCK_D)
    ptrs = base + rows[:, None].to(tl.int64) * stride_t + cols[None, :] * stride_d
    return tl.load(ptrs, mask=(rows[:, None] >= 0) & (rows[:, None] < T) & (cols[None, :] < D), other=0.0)


@triton.jit
def _store_rows(base, value, rows, stride_t, T, D, BLOCK_D: tl.constexpr):
    cols = tl.arange(0, BLOCK_D)
    ptrs = base + rows[:, None].to(tl.int64) * stride_t + cols[None, :]
    tl.store(ptrs, value.to(base.dtype.element_ty), mask=(rows[:, None] < T) & (cols[None, :] < D))


@triton.jit
def _mm(a, b, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr):
    """a @ b accumulated in ACC. UPCAST: Triton's interpreter (3.9) multiplies bfloat16
    operands wrongly, so there they are widened (exactly) to float32 first."""
    if UPCAST:
        a, b = a.to(tl.float32), b.to(tl.float32)
    return tl.dot(a, b, input_precision=PRECISION, out_dtype=ACC)


@triton.jit
def _key_padding(Mask, b, keys, T, HAS_MASK: tl.constexpr):
    """True where key ``keys`` of batch b may be attended (in range and not padding)."""
    ok = (keys >= 0) & (keys < T)
    if HAS_MASK:
        ok &= tl.load(Mask + b * T + keys, mask=ok, other=1) == 0
    return ok


@triton.jit
def _nonfinite(x):
    """Scalar: does the tile hold a NaN or an inf?"""
    return tl.max(tl.where((x != x) | (tl.abs(x.to(tl.float32)) == float("inf")), 1, 0))


@triton.jit
def _banded_mm(a, b, band, PRECISION: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr):
    """sum over j with band[i, j] of a[i, j] * b[j, :]: the pairs outside ``band`` are left
    out by selection (0 * NaN must not cross it), inside it the plain product (0 * inf = NaN,
    p * inf = inf). The slow path of a tile whose b holds a NaN or inf (fastlocal/reference:
    _banded_mm): finite part by one dot, the non-finite entries by counting dots."""
    a = tl.where(band, a, 0.0)
    nan_b = (b != b).to(ACC)
    pos_b = (b == float("inf")).to(ACC)
    neg_b = (b == float("-inf")).to(ACC)
    out = _mm(a.to(b.dtype), tl.where((nan_b + pos_b + neg_b) > 0, 0.0, b), PRECISION, ACC, UPCAST)
    nan = _mm(band.to(ACC), nan_b, "ieee", ACC, False) + _mm((band & (a == 0)).to(ACC), pos_b + neg_b, "ieee", ACC,
                                                            False)
    a_pos = (band & (a > 0)).to(ACC)
    a_neg = (band & (a < 0)).to(ACC)
    pos = _mm(a_pos, pos_b, "ieee", ACC, False) + _mm(a_neg, neg_b, "ieee", ACC, False)
    neg = _mm(a_pos, neg_b, "ieee", ACC, False) + _mm(a_neg, pos_b, "ieee", ACC, False)
    poison = tl.where((nan > 0) | ((pos > 0) & (neg > 0)), float("nan"),
                      tl.where(pos > 0, float("inf"), tl.where(neg > 0, float("-inf"), 0.0)))
    return out + poison


# ------------------------------------------------------------------------ forward


@triton.jit
def _forward_kernel(
    Q, K, V, Bias, Mask, Out, Lse,
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd,
    H, T, D, DV, LEFT, W, WINDOW_KEY, BIAS_OFF, BIAS_SIZE,
    Scales, seed, drop_threshold,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFT: tl.constexpr, DROPOUT: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    n_blocks = tl.cdiv(T, BLOCK_M)
    bh = tl.program_id(0) // n_blocks
    m0 = (tl.program_id(0) % n_blocks) * BLOCK_M
    scale, drop_scale = tl.load(Scales), tl.load(Scales + 1)
    b, h = bh // H, bh % H
    rows = m0 + tl.arange(0, BLOCK_M)
    q = _load_rows(Q + b.to(tl.int64) * sqb + h * sqh, rows, sqt, sqd, T, D, BLOCK_D)
    k_base = K + b.to(tl.int64) * skb + h * skh
    v_base = V + b.to(tl.int64) * svb + h * svh

    m_i = tl.full([BLOCK_M], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_M], ACC)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], ACC)
    last = tl.minimum(m0 + BLOCK_M, T) - 1
    lo = tl.maximum(_window_start(m0, T, LEFT, W, SHIFT), 0)
    hi = tl.minimum(_window_start(last, T, LEFT, W, SHIFT) + W, T)
    for n0 in range(lo, hi, BLOCK_N):
        keys = n0 + tl.arange(0, BLOCK_N)
        k = _load_rows(k_base, keys, skt, skd, T, D, BLOCK_D)
        s = _mm(q, tl.trans(k), PRECISION, ACC, UPCAST) * scale
        valid = _visible(rows[:, None], keys[None, :], T, LEFT, W, SHIFT)
        valid &= _key_padding(Mask, b, keys, T, HAS_MASK)[None, :]
        if HAS_BIAS:
            rel = keys[None, :] - rows[:, None] + BIAS_OFF
            s += tl.load(Bias + h * BIAS_SIZE + rel, mask=valid, other=0.0).to(ACC)
        s = tl.where(valid, s, float("-inf"))
        # A NaN logit sticks in the running max (tl.max would drop it): the row becomes NaN.
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_new = tl.where((tl.max(tl.where(s != s, 1, 0), 1) > 0) | (m_i != m_i), float("nan"), m_new)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing visible yet
        alpha = tl.exp(m_i - m_ref)
        p = tl.exp(s - m_ref[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, rows[:, None], keys[None, :], drop_threshold)
            p = tl.where(keep, p * drop_scale, 0.0)
        v = _load_rows(v_base, keys, svt, svd, T, DV, BLOCK_DV)
        if _nonfinite(v):  # rare: keep a NaN / inf of v inside the band
            pv = _banded_mm(p, v, valid, PRECISION, ACC, UPCAST)
        else:
            pv = _mm(p.to(v.dtype), v, PRECISION, ACC, UPCAST)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    empty = l_i == 0.0  # no visible key: output zeros (never 0 * NaN), lse = -inf
    out = tl.where(empty[:, None], 0.0, acc / tl.where(empty, 1.0, l_i)[:, None])
    bh_rows = bh.to(tl.int64) * T
    _store_rows(Out + bh_rows * DV, out, rows, DV, T, DV, BLOCK_DV)
    lse = tl.where(empty, float("-inf"), m_i + tl.log(tl.where(empty, 1.0, l_i)))
    tl.store(Lse + bh_rows + rows, lse, mask=rows < T)


# ------------------------------------------------------------------------ backward


@triton.jit
def _row_dot_kernel(A, B_, Out, n_rows, DV, BLOCK: tl.constexpr, BLOCK_DV: tl.constexpr, ACC: tl.constexpr):
    """delta[r] = sum(dO[r] * O[r]) for contiguous [n_rows, DV] matrices."""
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = _load_rows(A, rows, DV, 1, n_rows, DV, BLOCK_DV).to(ACC)
    b = _load_rows(B_, rows, DV, 1, n_rows, DV, BLOCK_DV).to(ACC)
    tl.store(Out + rows, tl.sum(a * b, 1), mask=rows < n_rows)


@triton.jit
def _backward_dkdv_kernel(
    Q, K, V, Bias, Mask, DO, Lse, Delta, DK, DV_,
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd,
    H, T, D, DV, LEFT, W, WINDOW_KEY, BIAS_OFF, BIAS_SIZE,
    Scales, seed, drop_threshold,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFT: tl.constexpr, DROPOUT: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    n_blocks = tl.cdiv(T, BLOCK_N)
    bh = tl.program_id(0) // n_blocks
    n0 = (tl.program_id(0) % n_blocks) * BLOCK_N
    scale, drop_scale = tl.load(Scales), tl.load(Scales + 1)
    b, h = bh // H, bh % H
    keys = n0 + tl.arange(0, BLOCK_N)
    k = _load_rows(K + b.to(tl.int64) * skb + h * skh, keys, skt, skd, T, D, BLOCK_D)
    v = _load_rows(V + b.to(tl.int64) * svb + h * svh, keys, svt, svd, T, DV, BLOCK_DV)
    key_ok = _key_padding(Mask, b, keys, T, HAS_MASK)
    q_base = Q + b.to(tl.int64) * sqb + h * sqh
    bh_rows = bh.to(tl.int64) * T
    right = W - 1 - LEFT

    # Queries whose windows contain a key of [n0, last]: a contiguous run (start() is monotone).
    last = tl.minimum(n0 + BLOCK_N, T) - 1
    i_lo = tl.maximum(n0 - right, 0)
    i_hi = tl.minimum(last + LEFT, T - 1)
    if SHIFT:
        i_lo = tl.where(n0 - W + 1 <= 0, 0, i_lo)
        i_hi = tl.where(last >= tl.maximum(T - W, 0), T - 1, i_hi)

    dk = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], ACC)
    for m0 in range(i_lo, i_hi + 1, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        q = _load_rows(q_base, rows, sqt, sqd, T, D, BLOCK_D)
        do = _load_rows(DO + bh_rows * DV, rows, DV, 1, T, DV, BLOCK_DV)
        lse = tl.load(Lse + bh_rows + rows, mask=rows < T, other=0.0)
        delta = tl.load(Delta + bh_rows + rows, mask=rows < T, other=0.0)
        # Transposed tile [keys, rows]: the accumulators are per key.
        s = _mm(k, tl.trans(q), PRECISION, ACC, UPCAST) * scale
        valid = _visible(rows[None, :], keys[:, None], T, LEFT, W, SHIFT) & key_ok[:, None]
        if HAS_BIAS:
            rel = keys[:, None] - rows[None, :] + BIAS_OFF
            s += tl.load(Bias + h * BIAS_SIZE + rel, mask=valid, other=0.0).to(ACC)
        valid &= (lse != float("-inf"))[None, :]  # fully masked rows have no gradient
        p = tl.where(valid, tl.exp(s - lse[None, :]), 0.0)
        dp = _mm(v, tl.trans(do), PRECISION, ACC, UPCAST)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, rows[None, :], keys[:, None], drop_threshold)
            dropped = tl.where(keep, p * drop_scale, 0.0)
            dp = tl.where(keep, dp * drop_scale, 0.0)
        else:
            dropped = p
        if _nonfinite(do):
            dv += _banded_mm(dropped, do, valid, PRECISION, ACC, UPCAST)
        else:
            dv += _mm(dropped.to(do.dtype), do, PRECISION, ACC, UPCAST)
        ds = tl.where(valid, p * (dp - delta[None, :]), 0.0)  # selection: dp may be NaN off the band
        if _nonfinite(q):
            dk += _banded_mm(ds, q, valid, PRECISION, ACC, UPCAST)
        else:
            dk += _mm(ds.to(q.dtype), q, PRECISION, ACC, UPCAST)
    _store_rows(DK + bh_rows * D, dk * scale, keys, D, T, D, BLOCK_D)
    _store_rows(DV_ + bh_rows * DV, dv, keys, DV, T, DV, BLOCK_DV)


@triton.jit
def _backward_dq_kernel(
    Q, K, V, Bias, Mask, DO, Lse, Delta, DQ, DBias,
    sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd,
    H, T, D, DV, LEFT, W, WINDOW_KEY, BIAS_OFF, BIAS_SIZE,
    Scales, seed, drop_threshold,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFT: tl.constexpr, DROPOUT: tl.constexpr,
    ACC: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    SPAN: tl.constexpr = 2 * BLOCK_M  # >= BLOCK_M + BLOCK_R - 1 keys (configs keep BLOCK_R <= BLOCK_M)
    n_blocks = tl.cdiv(T, BLOCK_M)
    bh = tl.program_id(0) // n_blocks
    block = tl.program_id(0) % n_blocks
    m0 = block * BLOCK_M
    scale, drop_scale = tl.load(Scales), tl.load(Scales + 1)
    b, h = bh // H, bh % H
    rows = m0 + tl.arange(0, BLOCK_M)
    bh_rows = bh.to(tl.int64) * T
    q = _load_rows(Q + b.to(tl.int64) * sqb + h * sqh, rows, sqt, sqd, T, D, BLOCK_D)
    do = _load_rows(DO + bh_rows * DV, rows, DV, 1, T, DV, BLOCK_DV)
    lse = tl.load(Lse + bh_rows + rows, mask=rows < T, other=0.0)
    delta = tl.load(Delta + bh_rows + rows, mask=rows < T, other=0.0)
    k_base = K + b.to(tl.int64) * skb + h * skh
    v_base = V + b.to(tl.int64) * svb + h * svh

    # Offsets d = j - i met by this block's windows.
    last = tl.minimum(m0 + BLOCK_M, T) - 1
    d_lo = _window_start(last, T, LEFT, W, SHIFT) - last  # -left and right for clip
    d_hi = _window_start(m0, T, LEFT, W, SHIFT) + W - 1 - m0

    r_idx = tl.arange(0, BLOCK_M)[:, None]
    skew = r_idx + tl.arange(0, BLOCK_R)[None, :]  # [M, R] -> column of the span
    unskew = tl.arange(0, SPAN)[None, :] - r_idx  # [M, SPAN] -> column of the skewed tile
    in_tile = (unskew >= 0) & (unskew < BLOCK_R)
    unskew = tl.minimum(tl.maximum(unskew, 0), BLOCK_R - 1)
    dq = tl.zeros([BLOCK_M, BLOCK_D], ACC)
    for d0 in range(d_lo, d_hi + 1, BLOCK_R):
        span = m0 + d0 + tl.arange(0, SPAN)
        k = _load_rows(k_base, span, skt, skd, T, D, BLOCK_D)
        v = _load_rows(v_base, span, svt, svd, T, DV, BLOCK_DV)
        s = tl.gather(_mm(q, tl.trans(k), PRECISION, ACC, UPCAST), skew, 1) * scale
        dp = tl.gather(_mm(do, tl.trans(v), PRECISION, ACC, UPCAST), skew, 1)
        d = d0 + tl.arange(0, BLOCK_R)
        keys = rows[:, None] + d[None, :]
        valid = _visible(rows[:, None], keys, T, LEFT, W, SHIFT) & (d[None, :] <= d_hi)
        if HAS_MASK:
            valid &= tl.load(Mask + b * T + keys, mask=valid, other=1) == 0
        if HAS_BIAS:
            bias = tl.load(Bias + h * BIAS_SIZE + d + BIAS_OFF, mask=d <= d_hi, other=0.0).to(ACC)
            s += bias[None, :]
        valid &= (lse != float("-inf"))[:, None]  # fully masked rows have no gradient
        p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, rows[:, None], keys, drop_threshold)
            dp = tl.where(keep, dp * drop_scale, 0.0)
        ds = tl.where(valid, p * (dp - delta[:, None]), 0.0)  # selection: dp may be NaN off the band
        if HAS_BIAS:  # this program's partial sums of offsets d0 .. d0 + BLOCK_R - 1 (written once)
            ws = DBias + (bh.to(tl.int64) * n_blocks + block) * BIAS_SIZE
            tl.store(ws + d + BIAS_OFF, tl.sum(ds, 0), mask=d <= d_hi)
        ds_span = tl.where(in_tile, tl.gather(ds, unskew, 1), 0.0)
        if _nonfinite(k):
            band = in_tile & (tl.gather(valid.to(tl.int32), unskew, 1) != 0)
            dq += _banded_mm(ds_span, k, band, PRECISION, ACC, UPCAST)
        else:
            dq += _mm(ds_span.to(k.dtype), k, PRECISION, ACC, UPCAST)
    _store_rows(DQ + bh_rows * D, dq * scale, rows, D, T, D, BLOCK_D)


# ------------------------------------------------------------------------ probs


@triton.jit
def _probs_forward_kernel(
    Q, K, Rows, Bias, Mask, Probs,
    sqb, sqh, sqt, sqd, skb, skh, skt, skd,
    H, T, D, R, LEFT, W, BIAS_OFF, BIAS_SIZE, Scales,
    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, SHIFT: tl.constexpr, ACC: tl.constexpr,
    BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0) // R
    r = tl.program_id(0) % R
    b, h = bh // H, bh % H
    i = tl.load(Rows + b * R + r)
    start = _window_start(i, T, LEFT, W, SHIFT)
    scale = tl.load(Scales)
    cols = tl.arange(0, BLOCK_D)
    q = tl.load(Q + b.to(tl.int64) * sqb + h * sqh + i.to(tl.int64) * sqt + cols * sqd, mask=cols < D, other=0.0)
    k_base = K + b.to(tl.int64) * skb + h * skh
    out = Probs + ((bh.to(tl.int64) * R) + r) * W

    # Pass 1: running max and sum over the window; pass 2: write the probabilities.
    m_i = tl.full([], float("-inf"), ACC)
    l_i = tl.zeros([], ACC)
    for pass_ in tl.static_range(2):
        for w0 in range(0, W, BLOCK_W):
            offs = w0 + tl.arange(0, BLOCK_W)
            keys = start + offs
            valid = (offs < W) & _key_padding(Mask, b, keys, T, HAS_MASK)
            k = _load_rows(k_base, tl.where(valid, keys, -1), skt, skd, T, D, BLOCK_D)
            s = tl.sum(k.to(ACC) * q.to(ACC)[None, :], 1) * scale
            if HAS_BIAS:
                s += tl.load(Bias + h * BIAS_SIZE + keys - i + BIAS_OFF, mask=valid, other=0.0).to(ACC)
            s = tl.where(valid, s, float("-inf"))
            if pass_ == 0:
                m_new = tl.maximum(m_i, tl.max(s, 0))
                m_new = tl.where((tl.max(tl.where(s != s, 1, 0), 0) > 0) | (m_i != m_i), float("nan"), m_new)
                m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
                l_i = l_i * tl.exp(m_i - m_ref) + tl.sum(tl.exp(s - m_ref), 0)
                m_i = m_new
            else:
                lse = m_i + tl.log(tl.where(l_i == 0.0, 1.0, l_i))
                p = tl.where(valid, tl.exp(s - lse), 0.0)
                p = tl.where(l_i != 0.0, p, 0.0)  # fully masked: zeros (NaN != 0 keeps a NaN row)
                tl.store(out + offs, p.to(Probs.dtype.element_ty), mask=offs < W)


@triton.jit
def _probs_backward_rows_kernel(
    Grad, Probs, K, Rows, Mask, DS, DQRows,
    skb, skh, skt, skd,
    H, T, D, R, LEFT, W, BIAS_OFF, BIAS_SIZE, Scales,
    HAS_MASK: tl.constexpr, SHIFT: tl.constexpr, ACC: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Per (b*h, row): ds = p * (g - <p, g>) laid out by bias index, and the row's dq."""
    bh = tl.program_id(0) // R
    r = tl.program_id(0) % R
    b, h = bh // H, bh % H
    i = tl.load(Rows + b * R + r)
    start = _window_start(i, T, LEFT, W, SHIFT)
    row = (bh.to(tl.int64) * R + r) * W
    # Only the band (keys in the sequence, unpadded) takes part: the gradient at other
    # entries never reaches the row (0 * NaN), and a fully masked row (all p = 0) has none.
    pg = tl.zeros([], ACC)
    live = tl.zeros([], tl.int32)
    for w0 in range(0, W, BLOCK_W):
        offs = w0 + tl.arange(0, BLOCK_W)
        valid = (offs < W) & _key_padding(Mask, b, start + offs, T, HAS_MASK)
        p = tl.load(Probs + row + offs, mask=offs < W, other=0.0).to(ACC)
        g = tl.load(Grad + row + offs, mask=offs < W, other=0.0).to(ACC)
        pg += tl.sum(tl.where(valid, p * g, 0.0), 0)
        live = tl.maximum(live, tl.max(tl.where(valid & (p != 0.0), 1, 0), 0))
    k_base = K + b.to(tl.int64) * skb + h * skh
    ds_row = DS + (bh.to(tl.int64) * R + r) * BIAS_SIZE + start - i + BIAS_OFF
    dq = tl.zeros([BLOCK_D], ACC)
    for w0 in range(0, W, BLOCK_W):
        offs = w0 + tl.arange(0, BLOCK_W)
        p = tl.load(Probs + row + offs, mask=offs < W, other=0.0).to(ACC)
        g = tl.load(Grad + row + offs, mask=offs < W, other=0.0).to(ACC)
        valid = (offs < W) & _key_padding(Mask, b, start + offs, T, HAS_MASK)
        valid = valid & (tl.zeros([BLOCK_W], tl.int32) + live > 0)
        ds = tl.where(valid, p * (g - pg), 0.0)
        tl.store(ds_row + offs, ds, mask=offs < W)
        k = _load_rows(k_base, tl.where(valid, start + offs, -1), skt, skd, T, D, BLOCK_D).to(ACC)
        dq += tl.sum(ds[:, None] * k, 0)
    cols = tl.arange(0, BLOCK_D)
    tl.store(DQRows + (bh.to(tl.int64) * R + r) * D + cols, dq * tl.load(Scales), mask=cols < D)


@triton.jit
def _probs_backward_gather_kernel(
    Q, Rows, DS, DQRows, DQ, DK,
    sqb, sqh, sqt, sqd,
    H, T, D, R, BIAS_OFF, BIAS_SIZE, Scales,
    ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Per (b*h, block of positions): sum, in row order, what every row gives to them."""
    n_blocks = tl.cdiv(T, BLOCK_T)
    bh = tl.program_id(0) // n_blocks
    t0 = (tl.program_id(0) % n_blocks) * BLOCK_T
    b, h = bh // H, bh % H
    pos = t0 + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * sqb + h * sqh
    dq = tl.zeros([BLOCK_T, BLOCK_D], ACC)
    dk = tl.zeros([BLOCK_T, BLOCK_D], ACC)
    for r in range(R):
        i = tl.load(Rows + b * R + r)
        row = bh.to(tl.int64) * R + r
        # ds is zero outside the row's window, so keys outside it add nothing.
        rel = pos - i + BIAS_OFF
        ds = tl.load(DS + row * BIAS_SIZE + rel, mask=(rel >= 0) & (rel < BIAS_SIZE) & (pos < T), other=0.0)
        q_i = tl.load(q_base + i.to(tl.int64) * sqt + cols * sqd, mask=cols < D, other=0.0).to(ACC)
        # ds is 0 off the band and NaN wherever a band entry meets a NaN / inf q_i, so
        # selecting ds != 0 leaves out exactly the pairs off the band (no 0 * NaN).
        dk += tl.where((ds != 0.0)[:, None], ds[:, None] * q_i[None, :], 0.0)
        dq_row = tl.load(DQRows + row * D + cols, mask=cols < D, other=0.0)
        dq += tl.where((pos == i)[:, None], dq_row[None, :], 0.0)
    bh_rows = bh.to(tl.int64) * T
    _store_rows(DQ + bh_rows * D, dq, pos, D, T, D, BLOCK_D)
    _store_rows(DK + bh_rows * D, dk * tl.load(Scales), pos, D, T, D, BLOCK_D)


# ------------------------------------------------------------------------ host side


def _configs(names: tuple[str, ...], options: list[tuple]) -> list[triton.Config]:
    """Autotuning candidates; one small tile under the interpreter (it would time each)."""
    if triton_interpreted():
        options = [(16,) * len(names) + options[0][len(names):]]
    n = len(names)
    return [triton.Config(dict(zip(names, o[:n], strict=True)), num_warps=o[n], num_stages=o[n + 1]) for o in options]


_FWD_CONFIGS = _configs(
    ("BLOCK_M", "BLOCK_N"),
    [(64, 32, 4, 2), (64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 2), (128, 32, 4, 3), (32, 32, 4, 2)],
)
_DKDV_CONFIGS = _configs(
    ("BLOCK_M", "BLOCK_N"), [(32, 64, 4, 2), (64, 64, 4, 2), (64, 64, 8, 2), (32, 128, 8, 2), (32, 32, 4, 2)]
)
# The dq kernel's query block fixes the bias-gradient workspace layout, so only the offset
# tile and the launch shape are tuned (BLOCK_M is chosen by _dq_block below).
_DQ_CONFIGS = [
    triton.Config({"BLOCK_R": r}, num_warps=w, num_stages=s)
    for r, w, s in ([(16, 4, 1)] if triton_interpreted() else [(32, 4, 2), (64, 4, 2), (64, 8, 2), (32, 4, 3)])
]
_KEY = ["D", "DV", "WINDOW_KEY"]

_forward = triton.autotune(_FWD_CONFIGS, key=_KEY)(_forward_kernel)
_backward_dkdv = triton.autotune(_DKDV_CONFIGS, key=_KEY)(_backward_dkdv_kernel)
_backward_dq = triton.autotune(_DQ_CONFIGS, key=_KEY, reset_to_zero=["DBias"])(_backward_dq_kernel)


def _dq_block(head_dim: int) -> int:
    if triton_interpreted():
        return 16
    return 64 if head_dim <= 128 else 32


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's TF32 switch for matmuls (off by default): exact unless opted in."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _block(n: int) -> int:
    """Padded extent of a head dimension: a power of two, >= 16 (tl.dot's minimum)."""
    return max(16, triton.next_power_of_2(n))


def _strides(*tensors: torch.Tensor) -> list[int]:
    return [s for t in tensors for s in t.stride()]


def _bias(rpb: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """The [H, bias size] table, contiguous; kernels take a pointer even without one (a dummy)."""
    return like.new_zeros(1) if rpb is None else rpb.contiguous()


def _mask_bytes(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(1, dtype=torch.uint8) if mask is None else mask.contiguous().view(torch.uint8)


def _scales(like: torch.Tensor, scale: float, dropout_p: float = 0.0) -> torch.Tensor:
    """(scale, 1 / (1 - p)) in the accumulation dtype: scalar kernel arguments would be float32."""
    return torch.tensor([scale, 1.0 / (1.0 - dropout_p)], dtype=_acc_dtype(like.dtype), device=like.device)


def _bias_offset(left: int, right: int, shift: bool) -> int:
    return left + right if shift else left


def _attention_args(q, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed) -> dict:
    """Scalar, flag and block arguments shared by the attention kernels."""
    window = left + right + 1
    return dict(
        H=q.shape[1], T=q.shape[2], D=q.shape[3], DV=v.shape[3], LEFT=left, W=window, WINDOW_KEY=window,
        BIAS_OFF=_bias_offset(left, right, shift), BIAS_SIZE=0 if rpb is None else rpb.shape[1],
        Scales=_scales(q, scale, dropout_p), seed=seed, drop_threshold=keep_threshold(dropout_p),
        HAS_BIAS=rpb is not None, HAS_MASK=key_padding_mask is not None, SHIFT=shift, DROPOUT=dropout_p > 0,
        ACC=_acc(q.dtype), PRECISION=_precision(q.dtype), UPCAST=triton_interpreted() and q.dtype == torch.bfloat16,
        BLOCK_D=_block(q.shape[3]), BLOCK_DV=_block(v.shape[3]),
    )


def local_attention_forward(q, k, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed):
    """-> (out [B, H, T, Dv] in q.dtype, lse [B, H, T] float32 (float64 for float64))."""
    B, H, T, _ = q.shape
    out = q.new_empty((B, H, T, v.shape[-1]))
    lse = q.new_empty((B, H, T), dtype=_acc_dtype(q.dtype))
    if out.numel() == 0:
        return out.zero_(), lse.fill_(float("-inf"))
    args = _attention_args(q, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed)
    grid = lambda meta: (B * H * triton.cdiv(T, meta["BLOCK_M"]),)  # noqa: E731
    _forward[grid](q, k, v, _bias(rpb, q), _mask_bytes(key_padding_mask, q), out, lse, *_strides(q, k, v), **args)
    return out, lse


def local_attention_backward(grad, q, k, v, out, lse, rpb, key_padding_mask, left, right, shift, scale, dropout_p,
                             seed):
    """-> (dq, dk, dv, drpb or None), contiguous; deterministic."""
    B, H, T, D = q.shape
    Dv = v.shape[-1]
    dq, dk = q.new_empty((B, H, T, D)), q.new_empty((B, H, T, D))
    dv = q.new_empty((B, H, T, Dv))
    if q.numel() == 0 or v.numel() == 0:
        return dq.zero_(), dk.zero_(), dv.zero_(), None if rpb is None else torch.zeros_like(rpb)
    grad, out = grad.contiguous(), out.contiguous()
    delta = torch.empty((B, H, T), dtype=lse.dtype, device=q.device)
    rows_per_program = 64
    _row_dot_kernel[(triton.cdiv(B * H * T, rows_per_program),)](
        grad, out, delta, B * H * T, Dv, BLOCK=rows_per_program, BLOCK_DV=_block(Dv), ACC=_acc(q.dtype))

    args = _attention_args(q, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed)
    inputs = (q, k, v, _bias(rpb, q), _mask_bytes(key_padding_mask, q), grad, lse, delta)
    grid = lambda meta: (B * H * triton.cdiv(T, meta["BLOCK_N"]),)  # noqa: E731
    _backward_dkdv[grid](*inputs, dk, dv, *_strides(q, k, v), **args)

    block_m = _dq_block(D)
    n_blocks = triton.cdiv(T, block_m)
    workspace_shape = (B * H * n_blocks, args["BIAS_SIZE"]) if rpb is not None else (1,)
    workspace = torch.zeros(workspace_shape, dtype=lse.dtype, device=q.device)
    _backward_dq[(B * H * n_blocks,)](*inputs, dq, workspace, *_strides(q, k, v), **args, BLOCK_M=block_m)
    drpb = None
    if rpb is not None:  # one reduction in a fixed order: deterministic
        drpb = workspace.view(B, H, n_blocks, -1).sum(dim=(0, 2)).to(rpb.dtype)
    return dq, dk, dv, drpb


def _probs_args(q, rows, rpb, left, right, shift) -> dict:
    window = left + right + 1
    return dict(H=q.shape[1], T=q.shape[2], D=q.shape[3], R=rows.shape[1], W=window, BIAS_OFF=_bias_offset(
        left, right, shift), ACC=_acc(q.dtype), BLOCK_D=_block(q.shape[3]), BLOCK_W=min(_block(window), 128))


def local_attention_probs_forward(q, k, rows, rpb, key_padding_mask, left, right, shift, scale):
    """rows [B, R] int64 -> probs [B, H, R, left + right + 1] in q.dtype."""
    B, H = q.shape[:2]
    probs = q.new_empty((B, H, rows.shape[1], left + right + 1))
    if probs.numel() == 0:
        return probs
    _probs_forward_kernel[(probs[..., 0].numel(),)](
        q, k, rows.contiguous(), _bias(rpb, q), _mask_bytes(key_padding_mask, q), probs, *_strides(q, k),
        LEFT=left, BIAS_SIZE=0 if rpb is None else rpb.shape[1], Scales=_scales(q, scale), HAS_BIAS=rpb is not None,
        HAS_MASK=key_padding_mask is not None, SHIFT=shift, **_probs_args(q, rows, rpb, left, right, shift),
    )
    return probs


def local_attention_probs_backward(grad, probs, q, k, rows, rpb, key_padding_mask, left, right, shift, scale):
    """-> (dq, dk, drpb or None); deterministic (fixed summation order, no atomics).

    ds = p * (g - <p, g>) goes to a [B, H, R, bias size] buffer indexed like the bias
    table (the size of the probabilities, not T x window), from which the per-position
    kernel reads what each row gives to its keys.
    """
    B, H, T, D = q.shape
    R, W = rows.shape[1], left + right + 1
    dq, dk = q.new_zeros((B, H, T, D)), q.new_zeros((B, H, T, D))  # contiguous, as the kernels write them
    if probs.numel() == 0 or D == 0:
        return dq, dk, None if rpb is None else torch.zeros_like(rpb)
    rows = rows.contiguous()
    bias_size = 2 * W - 1 if shift else W
    ds = torch.zeros((B, H, R, bias_size), dtype=_acc_dtype(q.dtype), device=q.device)
    dq_rows = torch.empty((B, H, R, D), dtype=ds.dtype, device=q.device)
    args = _probs_args(q, rows, rpb, left, right, shift)
    scales = _scales(q, scale)
    _probs_backward_rows_kernel[(B * H * R,)](
        grad.contiguous(), probs.contiguous(), k, rows, _mask_bytes(key_padding_mask, q), ds, dq_rows, *_strides(k),
        LEFT=left, BIAS_SIZE=bias_size, Scales=scales, HAS_MASK=key_padding_mask is not None, SHIFT=shift, **args,
    )
    block_t = 16 if triton_interpreted() else 64
    del args["W"], args["BLOCK_W"]
    _probs_backward_gather_kernel[(B * H * triton.cdiv(T, block_t),)](
        q, rows, ds, dq_rows, dq, dk, *_strides(q), BIAS_SIZE=bias_size, Scales=scales, BLOCK_T=block_t, **args,
    )
    drpb = None if rpb is None else ds.sum(dim=(0, 2)).to(rpb.dtype)
    return dq, dk, drpb
