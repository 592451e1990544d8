"""Triton kernels of ``topk_std_attention`` (semantics: ``fastlocal/reference/topk_std.py``).

One program per (batch, head) problem; the whole ``[T, T]`` attention of a problem lives
in registers (VidTr's T is 9..33), so nothing of that size reaches memory.

Forward: scores ``(q k^T) * scale`` (as rank-1 updates, see the kernel), row softmax, the unbiased std of each row, each
ranked row's rank (how many ranked rows beat it: larger std, NaN above all, ties to the
lower index), the kept rows' output positions (a prefix count), and a one-hot ``[R, T]``
selection matrix whose product with the attention gathers the kept rows exactly. Then the
optional second softmax and ``out = A[kept] @ v``; the kept rows' log-sum-exp is saved.

Backward: the kept rows are recomputed from ``index`` and the log-sum-exp, then
``dv = A'^T dout``, ``dS = A * (dA - rowsum(A dA))`` (through the second softmax first
when there is one), ``dq = sel^T (dS k) * scale`` (zero on rows not kept) and
``dk = dS^T q * scale``. Products run in the accumulation type (float32, float64 for
float64) with ``input_precision="ieee"``, so the one-hot gathers are exact; they carry
NaN / inf separately (``_onehot_dot``), so a non-finite row reaches only its own output
row (forward) or ``dq`` row (backward), as in the reference.

Runs on CUDA tensors, and on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Register-resident problems: beyond these sizes the [T, T] tiles no longer fit a program.
MAX_T = 128
MAX_D = 256


@triton.jit
def _softmax_rows(x, tmask):
    """Softmax of each row over the valid columns (0 elsewhere, also in a NaN row)."""
    m = tl.max(tl.where(tmask[None, :], x, float("-inf")), 1)
    e = tl.where(tmask[None, :], tl.exp(x - m[:, None]), 0.0)
    return tl.where(tmask[None, :], e / tl.sum(e, 1)[:, None], 0.0)


@triton.jit
def _onehot_dot(sel, x, ACC: tl.constexpr):
    """``sel @ x`` for a 0/1 matrix ``sel`` with at most one 1 per column of the result's
    sources (a gather or scatter of rows of ``x``), exact, with non-finite values kept to
    the rows they are gathered into: a plain product would spread ``0 * NaN = NaN`` and
    ``0 * inf`` to every row. Finite part, then NaN / +inf / -inf marks, each exact."""
    w = sel.to(ACC)
    finite = tl.dot(w, tl.where(tl.abs(x) < float("inf"), x, 0.0), input_precision="ieee", out_dtype=ACC)
    nan = tl.dot(w, (x != x).to(ACC), input_precision="ieee", out_dtype=ACC)
    pinf = tl.dot(w, (x == float("inf")).to(ACC), input_precision="ieee", out_dtype=ACC)
    ninf = tl.dot(w, (x == float("-inf")).to(ACC), input_precision="ieee", out_dtype=ACC)
    y = tl.where(pinf > 0, float("inf"), finite)
    y = tl.where(ninf > 0, float("-inf"), y)
    return tl.where(nan > 0, float("nan"), y)


@triton.jit
def _forward_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, index_ptr, lse_ptr,
    sq_b, sq_h, sq_t, sq_d, sk_b, sk_h, sk_t, sk_d, sv_b, sv_h, sv_t, sv_d,
    H, T, D, DV, KEEP, scale,
    FIRST: tl.constexpr, SECOND: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr,
):
    ACC: tl.constexpr = lse_ptr.dtype.element_ty
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    t = tl.arange(0, BLOCK_T)
    e = tl.arange(0, BLOCK_DV)
    r = tl.arange(0, BLOCK_R)
    tmask = t < T
    v = tl.load(v_ptr + b * sv_b + h * sv_h + t[:, None] * sv_t + e[None, :] * sv_d,
                mask=tmask[:, None] & (e[None, :] < DV), other=0.0).to(ACC)

    # Scores as D rank-1 updates, not tl.dot: every entry is the same sequential sum, so
    # equal q rows give bitwise-equal rows and stds (a dot may round rows differently by
    # their place in its tiles, which would break the tie rule).
    s = tl.zeros((BLOCK_T, BLOCK_T), dtype=ACC)
    for c in range(0, D):
        qc = tl.load(q_ptr + b * sq_b + h * sq_h + t * sq_t + c * sq_d, mask=tmask, other=0.0).to(ACC)
        kc = tl.load(k_ptr + b * sk_b + h * sk_h + t * sk_t + c * sk_d, mask=tmask, other=0.0).to(ACC)
        s += qc[:, None] * kc[None, :]
    s = tl.where(tmask[None, :], s * scale, float("-inf"))
    m = tl.max(s, 1)
    p = tl.where(tmask[None, :], tl.exp(s - m[:, None]), 0.0)
    total = tl.sum(p, 1)
    a = tl.where(tmask[None, :], p / total[:, None], 0.0)  # padded columns 0, NaN rows too
    lse = m + tl.log(total)

    # Unbiased std of each row (0 for a single key).
    mean = tl.sum(a, 1) / T
    dev = tl.where(tmask[None, :], a - mean[:, None], 0.0)
    score = tl.sqrt(tl.sum(dev * dev, 1) / tl.maximum(T - 1, 1))
    score = tl.where(T > 1, score, 0.0)

    # rank[i] = ranked rows j that come before i: larger std, NaN first, ties to lower j.
    ranked = tmask & (t >= FIRST)
    si = score[:, None]
    sj = score[None, :]
    nan_i = si != si
    nan_j = sj != sj
    tie = ((sj == si) | (nan_j & nan_i)) & (t[None, :] < t[:, None])
    before = (nan_j & ~nan_i) | (~nan_j & ~nan_i & (sj > si)) | tie
    rank = tl.sum((before & ranked[None, :]).to(tl.int32), 1)
    kept = (ranked & (rank < KEEP)) | (tmask & (t < FIRST))
    position = tl.sum((kept[None, :] & (t[None, :] < t[:, None])).to(tl.int32), 1)
    sel = (position[None, :] == r[:, None]) & kept[None, :]  # [R, T] one-hot rows

    # One-hot gather: a NaN attention row reaches only its own pooled row.
    pooled = _onehot_dot(sel, a, ACC)
    if SECOND:
        pooled = _softmax_rows(pooled, tmask)
    out = tl.dot(pooled, v, input_precision="ieee", out_dtype=ACC)

    R = KEEP + FIRST
    rmask = r < R
    tl.store(out_ptr + (bh * R + r[:, None]) * DV + e[None, :], out.to(out_ptr.dtype.element_ty),
             mask=rmask[:, None] & (e[None, :] < DV))
    kept_index = tl.sum(tl.where(sel, t[None, :], 0), 1)
    tl.store(index_ptr + bh * KEEP + r - FIRST, kept_index.to(tl.int64), mask=rmask & (r >= FIRST))
    kept_lse = tl.sum(tl.where(sel, lse[None, :], 0.0), 1)
    tl.store(lse_ptr + bh * R + r, kept_lse, mask=rmask)


@triton.jit
def _backward_kernel(
    g_ptr, q_ptr, k_ptr, v_ptr, index_ptr, lse_ptr, dq_ptr, dk_ptr, dv_ptr,
    sg_b, sg_h, sg_t, sg_d, sq_b, sq_h, sq_t, sq_d, sk_b, sk_h, sk_t, sk_d, sv_b, sv_h, sv_t, sv_d,
    H, T, D, DV, KEEP, scale,
    FIRST: tl.constexpr, SECOND: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_R: tl.constexpr,
):
    ACC: tl.constexpr = lse_ptr.dtype.element_ty
    bh = tl.program_id(0)
    b = bh // H
    h = bh % H
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    r = tl.arange(0, BLOCK_R)
    R = KEEP + FIRST
    tmask = t < T
    rmask = r < R
    dmask = d < D
    emask = e < DV

    rows = tl.load(index_ptr + bh * KEEP + r - FIRST, mask=rmask & (r >= FIRST), other=0)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + rows[:, None] * sq_t + d[None, :] * sq_d,
                mask=rmask[:, None] & dmask[None, :], other=0.0).to(ACC)
    k = tl.load(k_ptr + b * sk_b + h * sk_h + t[:, None] * sk_t + d[None, :] * sk_d,
                mask=tmask[:, None] & dmask[None, :], other=0.0).to(ACC)
    v = tl.load(v_ptr + b * sv_b + h * sv_h + t[:, None] * sv_t + e[None, :] * sv_d,
                mask=tmask[:, None] & emask[None, :], other=0.0).to(ACC)
    g = tl.load(g_ptr + b * sg_b + h * sg_h + r[:, None] * sg_t + e[None, :] * sg_d,
                mask=rmask[:, None] & emask[None, :], other=0.0).to(ACC)
    lse = tl.load(lse_ptr + bh * R + r, mask=rmask, other=0.0)

    s = tl.dot(q, tl.trans(k), input_precision="ieee", out_dtype=ACC) * scale
    a = tl.where(tmask[None, :] & rmask[:, None], tl.exp(s - lse[:, None]), 0.0)
    # Padded rows (r >= R) stay 0: with a non-finite v, g v^T is NaN there too (0 * NaN).
    da = tl.where(rmask[:, None] & tmask[None, :], tl.dot(g, tl.trans(v), input_precision="ieee", out_dtype=ACC),
                  0.0)
    if SECOND:
        a2 = tl.where(rmask[:, None], _softmax_rows(a, tmask), 0.0)
        da = a2 * (da - tl.sum(a2 * da, 1)[:, None])
        used = a2
    else:
        used = a
    dv = tl.dot(tl.trans(used), g, input_precision="ieee", out_dtype=ACC)
    ds = a * (da - tl.sum(a * da, 1)[:, None])
    dq_kept = tl.dot(ds, k, input_precision="ieee", out_dtype=ACC) * scale
    dk = tl.dot(tl.trans(ds), q, input_precision="ieee", out_dtype=ACC) * scale
    sel = (rows[:, None] == t[None, :]) & rmask[:, None]  # [R, T] one-hot
    # One-hot scatter: rows not kept get exactly 0, whatever the kept rows hold.
    dq = _onehot_dot(tl.trans(sel), dq_kept, ACC)

    td = (bh * T + t[:, None]) * D + d[None, :]
    te = (bh * T + t[:, None]) * DV + e[None, :]
    tl.store(dq_ptr + td, dq.to(dq_ptr.dtype.element_ty), mask=tmask[:, None] & dmask[None, :])
    tl.store(dk_ptr + td, dk.to(dk_ptr.dtype.element_ty), mask=tmask[:, None] & dmask[None, :])
    tl.store(dv_ptr + te, dv.to(dv_ptr.dtype.element_ty), mask=tmask[:, None] & emask[None, :])


def _block(n: int) -> int:
    """Power-of-two tile extent >= n (at least 16, the smallest tl.dot operand)."""
    return max(16, triton.next_power_of_2(n))


def _blocks(q: torch.Tensor, v: torch.Tensor, rows: int) -> dict[str, int]:
    T, D, DV = q.shape[2], q.shape[3], v.shape[3]
    if T > MAX_T or D > MAX_D or DV > MAX_D:
        raise ValueError(
            f"the triton topk_std_attention kernel holds a whole [T, T] problem per program: it needs "
            f"T <= {MAX_T} and D, Dv <= {MAX_D}, got T={T}, D={D}, Dv={DV} (use backend='cuda' or 'cpu')"
        )
    return {"BLOCK_T": _block(T), "BLOCK_D": _block(D), "BLOCK_DV": _block(DV), "BLOCK_R": _block(rows)}


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def topk_std_attention_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int, exclude_first: bool, scale: float,
    second_softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k ``[B, H, T, D]``, v ``[B, H, T, Dv]`` -> (out, index ``[B, H, keep]``, lse ``[B, H, R]``)."""
    B, H, T, _ = q.shape
    rows = keep + int(exclude_first)
    out = q.new_empty((B, H, rows, v.shape[3]))
    index = q.new_empty((B, H, keep), dtype=torch.int64)
    lse = q.new_empty((B, H, rows), dtype=_acc(q.dtype))
    if B * H == 0:
        return out, index, lse
    _forward_kernel[(B * H,)](
        q, k, v, out, index, lse, *q.stride(), *k.stride(), *v.stride(),
        H, T, q.shape[3], v.shape[3], keep, scale,
        FIRST=int(exclude_first), SECOND=second_softmax, **_blocks(q, v, rows),
    )
    return out, index, lse


def topk_std_attention_backward(
    grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, lse: torch.Tensor,
    exclude_first: bool, scale: float, second_softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad ``[B, H, R, Dv]`` -> (dq, dk, dv), contiguous, in the dtype of q."""
    B, H, T, _ = q.shape
    keep = index.shape[2]
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    if B * H == 0:
        return dq, dk, dv
    _backward_kernel[(B * H,)](
        grad, q, k, v, index.contiguous(), lse.contiguous(), dq, dk, dv,
        *grad.stride(), *q.stride(), *k.stride(), *v.stride(),
        H, T, q.shape[3], v.shape[3], keep, scale,
        FIRST=int(exclude_first), SECOND=second_softmax, **_blocks(q, v, keep + int(exclude_first)),
    )
    return dq, dk, dv
