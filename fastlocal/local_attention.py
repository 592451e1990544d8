"""``local_attention`` / ``local_attention_probs``: banded attention with relative position bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import _validate as check
from ._dispatch import kernels, resolve_backend
from .reference import local_attention as reference

IMPLEMENTED = ("cuda", "triton", "cpu", "reference")
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

    def clamped(self, T: int) -> Window:
        """The same band over T frames with ``left, right <= T - 1``: a window wider than the sequence
        is full attention (or the clipped band), and no kernel ever sees an offset beyond T. Only
        valid without a bias table, whose layout depends on the unclamped window."""
        return Window(min(self.left, T - 1), min(self.right, T - 1), self.edge)


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

    Non-finite values (every backend, forward and backward, and ``local_attention_probs``):
    a NaN or inf reaches exactly the outputs and gradients whose band reads it; a key
    outside a query's window or padded never touches it. Inside the band the result is
    ``softmax(logits) @ v`` as PyTorch computes it: a NaN logit (NaN in ``q[i]``, ``k[j]`` or
    the bias entry), a +inf logit or an overflow makes row i NaN, and NaN/inf in ``v[j]``
    reaches every query whose band holds the unpadded key j, even at probability 0 (a -inf
    bias: 0 * NaN = NaN). A row whose logits are all -inf (padding, -inf bias) is zeros
    with zero gradients. A NaN is never turned into a number (docs/design.md).
    """
    _check_qk(q, k)
    check.tensor("v", v, ndim=4)
    check.same_dtype(q=q, v=v)
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape [B, H, T, Dv] with [B, H, T] = {tuple(q.shape[:3])}, "
                         f"got {tuple(v.shape)}")
    win = resolve_window(window, window_left, window_right, edge)
    scale = _check_common(q, win, rpb, key_padding_mask, scale)
    if rpb is None:  # with a table, its shape (checked above) bounds the window
        win = win.clamped(q.shape[2])
    dropout_p = check.real("dropout_p", dropout_p, low=0.0, high=1.0, high_open=True)
    device = check.same_device(q=q, k=k, v=v, rpb=rpb, key_padding_mask=key_padding_mask)
    if rpb is not None:
        check.same_dtype(q=q, rpb=rpb)
    name = resolve_backend("local_attention", device, backend, IMPLEMENTED)
    # The per-call dropout seed comes from torch's default generator (torch.manual_seed).
    seed = int(torch.randint(0, 2**31 - 1, ())) if dropout_p > 0 else 0
    if name == "reference":
        return reference.local_attention(
            q, k, v, win.left, win.right, win.edge, rpb, key_padding_mask, scale, dropout_p, seed
        )
    out, _ = _local_attention(
        q, k, v, rpb, key_padding_mask, win.left, win.right, win.edge == "shift", scale, dropout_p, seed, name
    )
    return out


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
    # the output is laid out by window offset, so the window sets its width: refuse what cannot exist
    check.fits_in_memory(f"window={win.size}", (B, q.shape[1], rows.shape[-1], win.size), q.dtype, device,
                         "an output [B, H, R, window_left + window_right + 1]")
    if rpb is not None:
        check.same_dtype(q=q, rpb=rpb)
    if check.checking_values():  # under torch.compile, _local_attention_probs checks them when it runs
        _check_rows(rows, T)
    name = resolve_backend("local_attention_probs", device, backend, IMPLEMENTED)
    if name == "reference":
        return reference.local_attention_probs(q, k, rows, win.left, win.right, win.edge, rpb, key_padding_mask, scale)
    rows = rows.long().expand(B, -1) if rows.dim() == 1 else rows.long()
    return _local_attention_probs(q, k, rows, rpb, key_padding_mask, win.left, win.right, win.edge == "shift", scale,
                                  name)


def _check_rows(rows: torch.Tensor, T: int) -> None:
    if rows.numel() and (rows.min() < 0 or rows.max() >= T):
        raise ValueError(f"rows must be in [0, {T}), got values in [{rows.min().item()}, {rows.max().item()}]")


# ---- torch.library registration of the compiled kernels ---------------------------------
# The forward returns the per-row log-sum-exp beside the output: the backward recomputes
# the probabilities from it instead of storing anything of size T x window.


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _or_empty(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Custom ops cannot return None: an absent gradient travels as an empty tensor."""
    return like.new_empty(0) if t is None else t


@torch.library.custom_op("fastlocal::local_attention", mutates_args=())
def _local_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None, left: int, right: int, shift: bool, scale: float, dropout_p: float,
    seed: int, backend: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    return kernels(backend, "local_attention").local_attention_forward(
        q, k, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed
    )


@_local_attention.register_fake
def _(q, k, v, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed, backend):
    B, H, T, _ = q.shape
    return q.new_empty((B, H, T, v.shape[-1])), q.new_empty((B, H, T), dtype=_acc_dtype(q))


@torch.library.custom_op("fastlocal::local_attention_backward", mutates_args=())
def _local_attention_backward(
    grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
    rpb: torch.Tensor | None, key_padding_mask: torch.Tensor | None, left: int, right: int, shift: bool,
    scale: float, dropout_p: float, seed: int, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv, drpb = kernels(backend, "local_attention").local_attention_backward(
        grad, q, k, v, out, lse, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed
    )
    return dq, dk, dv, _or_empty(drpb, q)


@_local_attention_backward.register_fake
def _(grad, q, k, v, out, lse, rpb, key_padding_mask, left, right, shift, scale, dropout_p, seed, backend):
    drpb = q.new_empty(0) if rpb is None else torch.empty_like(rpb)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), drpb


def _local_attention_setup(ctx, inputs, output):
    q, k, v, rpb, mask, *args = inputs
    ctx.save_for_backward(q, k, v, rpb, mask, *output)
    ctx.args = args


def _local_attention_grad(ctx, grad_out, _grad_lse):
    q, k, v, rpb, mask, out, lse = ctx.saved_tensors
    dq, dk, dv, drpb = _local_attention_backward(grad_out, q, k, v, out, lse, rpb, mask, *ctx.args)
    return dq, dk, dv, (drpb if rpb is not None else None), None, None, None, None, None, None, None, None


_local_attention.register_autograd(_local_attention_grad, setup_context=_local_attention_setup)


@torch.library.custom_op("fastlocal::local_attention_probs", mutates_args=())
def _local_attention_probs(
    q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor, rpb: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None, left: int, right: int, shift: bool, scale: float, backend: str,
) -> torch.Tensor:
    _check_rows(rows, q.shape[2])  # the eager check, also run when the op is called from a compiled graph
    return kernels(backend, "local_attention").local_attention_probs_forward(
        q, k, rows, rpb, key_padding_mask, left, right, shift, scale
    )


@_local_attention_probs.register_fake
def _(q, k, rows, rpb, key_padding_mask, left, right, shift, scale, backend):
    B, H = q.shape[:2]
    return q.new_empty((B, H, rows.shape[1], left + right + 1))


@torch.library.custom_op("fastlocal::local_attention_probs_backward", mutates_args=())
def _local_attention_probs_backward(
    grad: torch.Tensor, probs: torch.Tensor, q: torch.Tensor, k: torch.Tensor, rows: torch.Tensor,
    rpb: torch.Tensor | None, key_padding_mask: torch.Tensor | None, left: int, right: int, shift: bool,
    scale: float, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, drpb = kernels(backend, "local_attention").local_attention_probs_backward(
        grad, probs, q, k, rows, rpb, key_padding_mask, left, right, shift, scale
    )
    return dq, dk, _or_empty(drpb, q)


@_local_attention_probs_backward.register_fake
def _(grad, probs, q, k, rows, rpb, key_padding_mask, left, right, shift, scale, backend):
    drpb = q.new_empty(0) if rpb is None else torch.empty_like(rpb)
    return torch.empty_like(q), torch.empty_like(k), drpb


def _probs_setup(ctx, inputs, output):
    q, k, rows, rpb, mask, *args = inputs
    ctx.save_for_backward(q, k, rows, rpb, mask, output)
    ctx.args = args


def _probs_grad(ctx, grad):
    q, k, rows, rpb, mask, probs = ctx.saved_tensors
    dq, dk, drpb = _local_attention_probs_backward(grad, probs, q, k, rows, rpb, mask, *ctx.args)
    return dq, dk, None, (drpb if rpb is not None else None), None, None, None, None, None, None


_local_attention_probs.register_autograd(_probs_grad, setup_context=_probs_setup)
