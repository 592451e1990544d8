"""``topk_std_pool`` / ``topk_std_attention``: VidTr's topK-std pooling of temporal attention."""

from __future__ import annotations

import torch

from . import _validate as check
from ._dispatch import kernels, resolve_backend
from .reference import topk_std as reference

# Fused kernels of topk_std_attention; topk_std_pool (which starts from a given attention
# matrix, so there is nothing to fuse away) runs the reference on every device.
IMPLEMENTED = ("cuda", "triton", "cpu", "reference")
POOL_IMPLEMENTED = ("reference",)


def _check_keep(keep: object, rows: int, exclude_first: object) -> int:
    if not isinstance(exclude_first, bool):
        raise TypeError(f"exclude_first must be a bool, got {type(exclude_first).__name__}")
    ranked = rows - 1 if exclude_first else rows
    check.integer("keep", keep, minimum=1)
    if keep > ranked:
        raise ValueError(
            f"keep must be <= the number of ranked rows ({ranked} = T{' - 1 (exclude_first)' if exclude_first else ''})"
            f", got {keep}"
        )
    return keep


def topk_std_pool(
    attn: torch.Tensor,
    keep: int,
    *,
    exclude_first: bool = True,
    second_softmax: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` attention rows with the highest standard deviation.

    Args:
        attn: ``[..., T, N]`` attention probabilities (rows = queries).
        keep: rows to keep among the ranked ones (rows ``1..T-1`` with ``exclude_first``).
        exclude_first: row 0 is a class token: never ranked, always kept first.
        second_softmax: softmax the kept rows again (the released VidTr code does).
    Returns:
        ``pooled [..., keep (+1), N]`` and ``index [..., keep]`` (int64 row indices into
        ``attn``, ascending). Rows are scored by their unbiased std; ties keep the lower
        index. Gradients flow through the kept rows, not through the selection.
    """
    check.tensor("attn", attn, ndim=range(2, 9))
    _check_keep(keep, attn.shape[-2], exclude_first)
    if not isinstance(second_softmax, bool):
        raise TypeError(f"second_softmax must be a bool, got {type(second_softmax).__name__}")
    resolve_backend("topk_std_pool", attn.device, backend, POOL_IMPLEMENTED)
    return reference.topk_std_pool(attn, keep, exclude_first, second_softmax)


def topk_std_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: int,
    *,
    exclude_first: bool = True,
    scale: float | None = None,
    second_softmax: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal attention pooled to its ``keep`` most informative query rows (VidTr).

    Args:
        q, k: ``[B, H, T, D]``; v: ``[B, H, T, Dv]``. B folds batch x spatial positions.
        keep, exclude_first, second_softmax: as :func:`topk_std_pool`.
        scale: logit scale, default ``D ** -0.5``.
        backend: ``"cuda" | "triton" | "cpu" | "reference"`` or None (automatic).
    Returns:
        ``out [B, H, keep (+1), Dv]`` (= pooled rows of ``softmax(q k^T * scale)`` times v)
        in ``q.dtype`` and ``index [B, H, keep]``. The compiled backends compute the
        attention, its row stds, the selection and the output in one kernel per
        (batch, head) without writing the attention matrix to memory.

    Non-finite values are never turned into numbers and reach exactly the outputs that
    read them: a NaN / inf in row i of ``q`` makes attention row i NaN, which ranks above
    every finite std (kept; NaN rows by lower index), and only output row i and ``dq`` row i
    (and the ``dk`` / ``dv`` it feeds) are NaN; a NaN in ``k`` reaches every row, one in
    ``v`` its column of every output row. Rows not kept get exactly zero ``dq`` and add
    nothing to ``dk``, even when their attention row is NaN. Logits too large for the
    accumulation type overflow to inf; see docs/design.md for the backward's precision at
    |logit| beyond ~1e7 (float32).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check.tensor(name, t, ndim=4)
    check.same_dtype(q=q, k=k, v=v)
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape [B, H, T, Dv] with [B, H, T] = {tuple(q.shape[:3])}, "
                         f"got {tuple(v.shape)}")
    _check_keep(keep, q.shape[2], exclude_first)
    if not isinstance(second_softmax, bool):
        raise TypeError(f"second_softmax must be a bool, got {type(second_softmax).__name__}")
    scale = q.shape[-1] ** -0.5 if scale is None else check.real("scale", scale)
    device = check.same_device(q=q, k=k, v=v)
    name = resolve_backend("topk_std_attention", device, backend, IMPLEMENTED)
    if name == "reference":
        return reference.topk_std_attention(q, k, v, keep, exclude_first, scale, second_softmax)
    out, index, _ = _topk_std_attention(q, k, v, keep, exclude_first, scale, second_softmax, name)
    return out, index


# ---- torch.library registration of the compiled kernels ---------------------------------
# The forward also returns the kept rows' log-sum-exp [B, H, keep (+1)]: the backward
# recomputes those rows from it (and the saved index) instead of storing the attention.


@torch.library.custom_op("fastlocal::topk_std_attention", mutates_args=())
def _topk_std_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: int, exclude_first: bool, scale: float,
    second_softmax: bool, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kernels(backend, "topk_std").topk_std_attention_forward(q, k, v, keep, exclude_first, scale, second_softmax)


@_topk_std_attention.register_fake
def _(q, k, v, keep, exclude_first, scale, second_softmax, backend):
    B, H = q.shape[:2]
    rows = keep + int(exclude_first)
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return (q.new_empty((B, H, rows, v.shape[-1])), q.new_empty((B, H, keep), dtype=torch.int64),
            q.new_empty((B, H, rows), dtype=lse_dtype))


@torch.library.custom_op("fastlocal::topk_std_attention_backward", mutates_args=())
def _topk_std_attention_backward(
    grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor, lse: torch.Tensor,
    exclude_first: bool, scale: float, second_softmax: bool, backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kernels(backend, "topk_std").topk_std_attention_backward(
        grad, q, k, v, index, lse, exclude_first, scale, second_softmax
    )


@_topk_std_attention_backward.register_fake
def _(grad, q, k, v, index, lse, exclude_first, scale, second_softmax, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup(ctx, inputs, output):
    q, k, v, _keep, exclude_first, scale, second_softmax, backend = inputs
    _, index, lse = output
    ctx.save_for_backward(q, k, v, index, lse)
    ctx.args = (exclude_first, scale, second_softmax, backend)


def _grad(ctx, grad_out, _grad_index, _grad_lse):
    q, k, v, index, lse = ctx.saved_tensors
    dq, dk, dv = _topk_std_attention_backward(grad_out, q, k, v, index, lse, *ctx.args)
    return dq, dk, dv, None, None, None, None, None


_topk_std_attention.register_autograd(_grad, setup_context=_setup)
