"""Banded local attention with relative position bias, in pure PyTorch.

This is the semantic definition of ``fastlocal.local_attention`` and
``fastlocal.local_attention_probs`` (docs/design.md, "Ops"); every other backend is tested
against it. It is also the fallback without a compiled backend, so it never builds a
T x T matrix: queries are processed in blocks, and a block of Q queries only meets the
slice of keys its windows cover (at most Q + window - 1), so memory is
O(T * (Q + window)) including what autograd saves.

Window geometry (``left``/``right`` already resolved, W = left + right + 1):
  clip:  query i sees keys j in [i - left, i + right] ∩ [0, T); bias index (j - i) + left.
  shift: query i sees keys j in [s(i), s(i) + W) ∩ [0, T) with
         s(i) = max(min(i - left, T - W), 0)  (NATTEN); bias index (j - i) + W - 1.
"""

from __future__ import annotations

import torch

from ._dtypes import acc_dtype
from .dropout import keep_mask


def window_start(i, length: int, left: int, right: int, edge: str):
    """First key of query i's window (an int or a tensor of them); negative for ``clip`` at the start."""
    if edge == "clip":
        return i - left
    last_start = length - (left + right + 1)
    if isinstance(i, int):
        return max(min(i - left, last_start), 0)
    return (i - left).clamp(max=last_start).clamp(min=0)


def bias_offset(left: int, right: int, edge: str) -> int:
    """Bias index of pair (i, j) is (j - i) + bias_offset."""
    return left if edge == "clip" else left + right


def _band(
    rows: torch.Tensor, keys: torch.Tensor, length: int, left: int, right: int, edge: str
) -> torch.Tensor:
    """[Q, K] bool: key ``keys[k]`` is inside query ``rows[q]``'s window."""
    start = window_start(rows, length, left, right, edge)[:, None]
    j = keys[None, :]
    return (j >= start) & (j < start + left + right + 1) & (j >= 0) & (j < length)


def _banded_mm(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, nonneg: bool = False) -> torch.Tensor:
    """out[..., i, n] = sum over j with valid[..., i, j] of a[..., i, j] * b[..., j, n].

    Entries outside ``valid`` are left out by selection, never multiplied by zero, so a
    NaN or inf in ``b`` at key j reaches exactly the rows whose band holds j. Inside the
    band it is the plain product: 0 * NaN = NaN, 0 * inf = NaN, p * inf = +-inf.
    """
    a = torch.where(valid, a, 0.0)
    finite = torch.isfinite(b)
    # Eager: the counting below only when b holds a NaN or inf (one check); traced by
    # torch.compile: always (no data-dependent branch, so no graph break).
    if not torch.compiler.is_compiling() and bool(finite.all()):
        return a @ b
    out = a @ torch.where(finite, b, 0.0)
    f = a.dtype
    pos_b, neg_b, nan_b = (b == float("inf")).to(f), (b == float("-inf")).to(f), torch.isnan(b).to(f)
    inf_b = pos_b + neg_b
    a_pos = (valid & (a > 0)).to(f)
    nan = valid.to(f).expand_as(a) @ nan_b + (valid & (a == 0)).to(f) @ inf_b
    pos, neg = a_pos @ pos_b, a_pos @ neg_b
    if not nonneg:  # (``nonneg``: a >= 0 or NaN, as probabilities are: no negative terms)
        a_neg = (valid & (a < 0)).to(f)
        pos, neg = pos + a_neg @ neg_b, neg + a_neg @ pos_b
    inf = torch.tensor(float("inf"), dtype=f, device=a.device)
    poison = torch.where(
        (nan > 0) | ((pos > 0) & (neg > 0)),
        torch.nan,
        torch.where(pos > 0, inf, torch.where(neg > 0, -inf, 0.0)),
    )
    return out + poison


class _BandScores(torch.autograd.Function):
    """Logits q [B,H,Q,D] . k [B,H,K,D] * scale + bias [H,Q,K] on the band ``valid``
    ([B,1,Q,K]), -inf outside it. A row whose logits are all -inf (padding, -inf bias, or
    q.k = -inf) is fully masked: it leaves the band of the backward, so its gradients are
    zero and no 0 * inf from its q or k reaches one."""

    @staticmethod
    def forward(q, k, bias, valid, scale):
        s = q @ k.transpose(-1, -2) * scale
        if bias is not None:
            s = s + bias
        return torch.where(valid, s, float("-inf"))

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, bias, valid, scale = inputs
        band = valid & ~(output == float("-inf")).all(-1, keepdim=True)
        ctx.save_for_backward(q, k, band)
        ctx.scale, ctx.has_bias = scale, bias is not None

    @staticmethod
    def backward(ctx, g):
        q, k, band = ctx.saved_tensors
        ds = torch.where(band, g, 0.0)
        dq = _banded_mm(ds, k, band) * ctx.scale
        dk = _banded_mm(ds.transpose(-1, -2), q, band.transpose(-1, -2)) * ctx.scale
        dbias = ds.sum(0) if ctx.has_bias else None
        return dq, dk, dbias, None, None


class _BandValues(torch.autograd.Function):
    """p [B,H,Q,K] @ v [B,H,K,Dv] over the band ``valid`` ([B,1,Q,K]) only."""

    @staticmethod
    def forward(p, v, valid):
        return _banded_mm(p, v, valid, nonneg=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g):
        p, v, valid = ctx.saved_tensors
        dp = torch.where(valid, g @ v.transpose(-1, -2), 0.0)
        dv = _banded_mm(p.transpose(-1, -2), g, valid.transpose(-1, -2), nonneg=True)
        return dp, dv, None


def _scores(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    keys: torch.Tensor,
    valid: torch.Tensor,
    rpb: torch.Tensor | None,
    offset: int,
    scale: float,
) -> torch.Tensor:
    """Logits q.k * scale + bias, -inf outside ``valid``. q [B,H,Q,D], k [B,H,K,D], valid [B,Q,K]."""
    bias = None
    if rpb is not None:
        rel = (keys[None, :] - rows[:, None] + offset).clamp(0, rpb.shape[1] - 1)  # clamped where invalid
        bias = rpb[:, rel]
    return _BandScores.apply(q, k, bias, valid[:, None], scale)


def _softmax(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax over the last axis, and the rows with no finite-or-NaN logit ([B,H,Q,1]).

    A row whose logits are all -inf (every key out of the window, padded or biased to
    -inf) gives exact zeros and zero gradients; a NaN or +inf logit makes its row NaN.
    """
    empty = (s == float("-inf")).all(-1, keepdim=True)
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1)
    return p.masked_fill(empty, 0.0), empty


def _block_size(window: int, length: int) -> int:
    # Q ~ window keeps the key slice (Q + window - 1) within 2x the band.
    return max(1, min(length, max(32, min(window, 512))))


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    left: int,
    right: int,
    edge: str = "clip",
    rpb: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """q [B,H,T,D], k [B,H,T,D], v [B,H,T,Dv] -> [B,H,T,Dv] (arguments already validated).

    Computes in float32 (float64 for float64 inputs) and returns ``q.dtype``. Dropout
    keeps entry (b, h, i, j) per :func:`fastlocal.reference.dropout.keep_mask` and
    rescales by ``1 / (1 - dropout_p)``.
    """
    B, H, T, D = q.shape
    acc = acc_dtype(q.dtype)
    scale = D**-0.5 if scale is None else scale
    qf, kf, vf = q.to(acc), k.to(acc), v.to(acc)
    bias = None if rpb is None else rpb.to(acc)
    pad = None if key_padding_mask is None else key_padding_mask.bool()
    offset = bias_offset(left, right, edge)
    block = _block_size(left + right + 1, T)
    # Windows start at most one key apart from row to row, so a block's keys fit in a run of
    # `span` keys; block n reads keys k0[n] .. k0[n] + span - 1, moved inward to stay in [0, T).
    span = min(block + left + right, T)
    k0 = window_start(torch.arange(0, T, block, device=q.device), T, left, right, edge).clamp(0, T - span)
    # Gather every block's keys and values with one op each (and split q once). Slicing the
    # inputs per block instead makes autograd allocate and add a full [B, H, T, D] gradient
    # per block, so the backward took O(T^2 / block) time (minutes at T = 100k).
    index = (k0[:, None] + torch.arange(span, device=q.device)).flatten()
    k_blocks = kf.index_select(2, index).unflatten(2, (-1, span)).unbind(2)
    v_blocks = vf.index_select(2, index).unflatten(2, (-1, span)).unbind(2)
    bh = torch.arange(B * H, device=q.device).view(B, H, 1, 1)
    outputs = []
    for n, q_block in enumerate(qf.split(block, dim=2)):
        i0 = n * block
        rows = torch.arange(i0, i0 + q_block.shape[2], device=q.device)
        keys = k0[n] + torch.arange(span, device=q.device)
        valid = _band(rows, keys, T, left, right, edge)[None].expand(B, -1, -1)
        if pad is not None:
            valid = valid & ~pad[:, None, keys]
        s = _scores(q_block, k_blocks[n], rows, keys, valid, bias, offset, scale)
        p, empty = _softmax(s)  # empty: fully masked rows (all logits -inf): zeros, no gradient
        band = valid[:, None] & ~empty  # [B, H, Q, K]: what each row reads
        if dropout_p > 0:
            keep = keep_mask(seed, bh, rows.view(1, 1, -1, 1), keys.view(1, 1, 1, -1), dropout_p)
            p = p * keep / (1.0 - dropout_p)
        outputs.append(_BandValues.apply(p, v_blocks[n], band))
    return torch.cat(outputs, dim=2).to(q.dtype)


def local_attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    left: int,
    right: int,
    edge: str = "clip",
    rpb: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention distribution of query ``rows`` ([R] or [B, R]) -> [B, H, R, left + right + 1].

    Entry m is the key ``window_start(i) + m``; zero where that key is outside the
    sequence or padded. Rows whose keys are all masked are all zero.
    """
    B, H, T, D = q.shape
    W = left + right + 1
    acc = acc_dtype(q.dtype)
    scale = D**-0.5 if scale is None else scale
    rows = rows.long().expand(B, -1) if rows.dim() == 1 else rows.long()
    R = rows.shape[1]
    keys = window_start(rows, T, left, right, edge)[..., None] + torch.arange(W, device=q.device)  # [B,R,W]
    valid = (keys >= 0) & (keys < T)
    safe = keys.clamp(0, T - 1)
    if key_padding_mask is not None:
        valid = valid & ~key_padding_mask.bool().gather(1, safe.view(B, -1)).view(B, R, W)
    q_rows = q.to(acc).gather(2, rows[:, None, :, None].expand(B, H, R, D))
    k_all = k.to(acc)
    with torch.no_grad():  # fully masked rows (every logit -inf) take no part, as in local_attention
        empty = (_probs_logits(q_rows, k_all, rows, keys, safe, valid[:, None], rpb, left, right, edge, scale)
                 == float("-inf")).all(-1, keepdim=True)
    band = valid[:, None] & ~empty  # [B, H, R, W]
    q_rows = torch.where(empty, 0.0, q_rows)
    s = _probs_logits(q_rows, k_all, rows, keys, safe, band, rpb, left, right, edge, scale)
    # Selection: a NaN row is NaN on its keys and 0 on entries outside the sequence or padded.
    return torch.where(band, _softmax(s)[0], 0.0).to(q.dtype)


def _probs_logits(q_rows, k, rows, keys, safe, band, rpb, left, right, edge, scale):
    """[B, H, R, W] logits of ``local_attention_probs``, -inf outside ``band``."""
    B, H, R, D = q_rows.shape
    W = keys.shape[-1]
    acc = q_rows.dtype
    k_win = k.gather(2, safe.view(B, 1, R * W, 1).expand(B, H, R * W, D)).view(B, H, R, W, D)
    # Selection, not a product: a NaN key outside the window or padded must not reach the
    # row through the backward's 0 * NaN.
    k_win = torch.where(band[..., None], k_win, 0.0)
    s = torch.einsum("bhrd,bhrwd->bhrw", q_rows, k_win) * scale
    if rpb is not None:
        rel = (keys - rows[..., None] + bias_offset(left, right, edge)).clamp(0, rpb.shape[1] - 1)
        s = s + rpb.to(acc)[:, rel].permute(1, 0, 2, 3)  # [H,B,R,W] -> [B,H,R,W]
    return s.masked_fill(~band, float("-inf"))
