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
    s = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
    if rpb is not None:
        rel = (keys[None, :] - rows[:, None] + offset).clamp(0, rpb.shape[1] - 1)  # clamped where invalid
        s = s + rpb[:, rel]
    return s.masked_fill(~valid[:, None], float("-inf"))


def _softmax(s: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis that gives exact zeros (and zero gradients) on empty rows."""
    empty = ~valid.any(-1, keepdim=True)[:, None]
    p = torch.softmax(s.masked_fill(empty, 0.0), dim=-1)
    return p.masked_fill(empty, 0.0)


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
        p = _softmax(s, valid)
        if dropout_p > 0:
            keep = keep_mask(seed, bh, rows.view(1, 1, -1, 1), keys.view(1, 1, 1, -1), dropout_p)
            p = p * keep / (1.0 - dropout_p)
        outputs.append(p @ v_blocks[n])
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
    k_win = k.to(acc).gather(2, safe.view(B, 1, R * W, 1).expand(B, H, R * W, D)).view(B, H, R, W, D)
    s = torch.einsum("bhrd,bhrwd->bhrw", q_rows, k_win) * scale
    if rpb is not None:
        rel = (keys - rows[..., None] + bias_offset(left, right, edge)).clamp(0, rpb.shape[1] - 1)
        s = s + rpb.to(acc)[:, rel].permute(1, 0, 2, 3)  # [H,B,R,W] -> [B,H,R,W]
    s = s.masked_fill(~valid[:, None], float("-inf"))
    return _softmax(s, valid).to(q.dtype)
