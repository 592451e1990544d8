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
float64) with ``input_precision="ieee"``, so the one-hot gathers are exact.

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
    """Softmax of each row over the valid columns (0 elsewhere)."""
    m = tl.max(tl.where(tmask[None, :], x, float("-inf")), 1)
    e = tl.where(tmask[None, :], tl.exp(x - m[:, None]), 0.0)
    return e / tl.sum(e, 1)[:, None]


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
    a = p / total[:, None]
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

    pooled = tl.dot(sel.to(ACC), a, input_precision="ieee", out_dtype=ACC)
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
    da = tl.dot(g, tl.trans(v), input_precision="ieee", out_dtype=ACC)
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
    sel = ((rows[:, None] == t[None, :]) & rmask[:, None]).to(ACC)  # [R, T] one-hot
    dq = tl.dot(tl.trans(sel), dq_kept, input_precision="ieee", out_dtype=ACC)

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
