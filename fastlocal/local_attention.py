"""``local_attention`` / ``local_attention_probs``: banded attention with relative position bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _validate as check
from ._dispatch import resolve_backend
from .reference import local_attention as reference

IMPLEMENTED = ("reference",)
EDGES = ("clip", "shift")


@dataclass(frozen=True)
class Window:
    """A resolved window: query i sees offsets -left..right (see the reference module for edges)."""

    left: int
    right: int
    edge: str

    @property
    def size(self) -> int:
        return self.left + self.right + 1

    @property
    def bias_size(self) -> int:
        """Entries per head of the relative position bias table."""
        return self.size if self.edge == "clip" else 2 * self.size - 1


def resolve_window(window: int, window_left: int | None, window_right: int | None, edge: str) -> Window:
    """Validate the window arguments and return the resolved :class:`Window`."""
    check.integer("window", window, minimum=1)
    if window % 2 == 0:
        raise ValueError(f"window must be odd (a centred window), got {window}")
    check.choice("edge", edge, EDGES)
    left = window // 2 if window_left is None else check.integer("window_left", window_left, minimum=0)
    right = window // 2 if window_right is None else check.integer("window_right", window_right, minimum=0)
    if edge == "shift" and left != right:
        raise ValueError(f"edge='shift' requires a symmetric window, got window_left={left}, window_right={right}")
    return Window(left, right, edge)


def _check_qk(q: object, k: object) -> None:
    check.tensor("q", q, ndim=4)
    check.tensor("k", k, ndim=4)
    check.same_dtype(q=q, k=k)
    if k.shape[:2] != q.shape[:2] or k.shape[2] != q.shape[2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            f"k must have shape [B, H, T, D] = {tuple(q.shape)} like q (Tq == Tk), got {tuple(k.shape)}"
        )
    if q.shape[2] < 1:
        raise ValueError(f"q must have a sequence length T >= 1, got shape {tuple(q.shape)}")


def _check_common(
    q: torch.Tensor,
    win: Window,
    rpb: object,
    key_padding_mask: object,
    scale: object,
) -> float:
    B, H, T, D = q.shape
    if rpb is not None:
        check.tensor("rpb", rpb, ndim=2)
        if tuple(rpb.shape) != (H, win.bias_size):
            raise ValueError(
                f"rpb must have shape [H, {'window' if win.edge == 'clip' else '2*window-1'}] = "
                f"[{H}, {win.bias_size}] for edge={win.edge!r}, got {tuple(rpb.shape)}"
            )
    if key_padding_mask is not None:
        check.tensor("key_padding_mask", key_padding_mask, ndim=2, dtypes=(torch.bool,))
        if tuple(key_padding_mask.shape) != (B, T):
            raise ValueError(f"key_padding_mask must have shape [B, T] = [{B}, {T}], "
                             f"got {tuple(key_padding_mask.shape)}")
    if scale is None:
        return D**-0.5
    return check.real("scale", scale)


def local_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    rpb: torch.Tensor | None = None,
    *,
    window_left: int | None = None,
    window_right: int | None = None,
    edge: str = "clip",
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str | None = None,
) -> torch.Tensor:
    """Banded (local) attention with an optional per-head relative position bias.

    Query i attends keys j with ``-left <= j - i <= right`` (``left = right = window // 2``
    unless ``window_left`` / ``window_right`` are given; ``window_right=0`` is causal).

    Args:
        q: ``[B, H, T, D]``; k: ``[B, H, T, D]``; v: ``[B, H, T, Dv]`` (same dtype, device).
        window: odd window size >= 1. ``window >= 2T - 1`` is exact full attention.
        rpb: ``[H, left + right + 1]`` (``edge="clip"``) or ``[H, 2 * window - 1]``
            (``edge="shift"``); pair (i, j) adds ``rpb[h, (j - i) + offset]``.
        edge: ``"clip"`` cuts windows at the sequence ends (TUT); ``"shift"`` moves them
            inward so every query sees ``window`` keys when ``T >= window`` (NATTEN).
        key_padding_mask: ``[B, T]`` bool, True = padding, never attended. A query with
            no visible key outputs zeros.
        scale: logit scale, default ``D ** -0.5``.
        dropout_p: dropout on the attention probabilities, reproducible under
            ``torch.manual_seed`` and identical on every backend.
        backend: ``"cuda" | "triton" | "cpu" | "reference"`` or None (automatic).
    Returns:
        ``[B, H, T, Dv]`` in ``q.dtype``.
    """
    _check_qk(q, k)
    check.tensor("v", v, ndim=4)
    check.same_dtype(q=q, v=v)
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape [B, H, T, Dv] with [B, H, T] = {tuple(q.shape[:3])}, "
                         f"got {tuple(v.shape)}")
    win = resolve_window(window, window_left, window_right, edge)
    scale = _check_common(q, win, rpb, key_padding_mask, scale)
    dropout_p = check.real("dropout_p", dropout_p, low=0.0, high=1.0, high_open=True)
    device = check.same_device(q=q, k=k, v=v, rpb=rpb, key_padding_mask=key_padding_mask)
    if rpb is not None:
        check.same_dtype(q=q, rpb=rpb)
    resolve_backend("local_attention", device, backend, IMPLEMENTED)
    # The per-call dropout seed comes from torch's default generator (torch.manual_seed).
    seed = int(torch.randint(0, 2**31 - 1, ())) if dropout_p > 0 else 0
    return reference.local_attention(
        q, k, v, win.left, win.right, win.edge, rpb, key_padding_mask, scale, dropout_p, seed
    )


def local_attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    rows: torch.Tensor,
    window: int,
    rpb: torch.Tensor | None = None,
    *,
    window_left: int | None = None,
    window_right: int | None = None,
    edge: str = "clip",
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Softmax attention distribution of selected query rows, laid out by window offset.

    Args:
        rows: LongTensor ``[R]`` (same rows for every batch) or ``[B, R]``, values in ``[0, T)``.
        other arguments: as :func:`local_attention`.
    Returns:
        ``[B, H, R, left + right + 1]``: entry m is the key ``i - left + m`` (``clip``) or
        ``start(i) + m`` (``shift``), zero where that key is outside the sequence or
        padded. Differentiable w.r.t. q, k and rpb. Nothing of size T x window is built.
    """
    _check_qk(q, k)
    check.tensor("rows", rows, ndim=(1, 2), dtypes=check.INDEX_DTYPES)
    B, _, T, _ = q.shape
    if rows.dim() == 2 and rows.shape[0] != B:
        raise ValueError(f"rows must be [R] or [B, R] with B = {B}, got shape {tuple(rows.shape)}")
    win = resolve_window(window, window_left, window_right, edge)
    scale = _check_common(q, win, rpb, key_padding_mask, scale)
    device = check.same_device(q=q, k=k, rows=rows, rpb=rpb, key_padding_mask=key_padding_mask)
    if rpb is not None:
        check.same_dtype(q=q, rpb=rpb)
    if check.checking_values() and rows.numel() and (rows.min() < 0 or rows.max() >= T):
        raise ValueError(f"rows must be in [0, {T}), got values in [{rows.min().item()}, {rows.max().item()}]")
    resolve_backend("local_attention_probs", device, backend, IMPLEMENTED)
    return reference.local_attention_probs(q, k, rows, win.left, win.right, win.edge, rpb, key_padding_mask, scale)
