"""VidTr's topK-std pooling of temporal attention, in pure PyTorch (the semantic definition).

Row i of the attention is scored by its unbiased standard deviation over the key
axis (0 when there is a single key). The ``keep`` highest-scoring rows are kept in
ascending index order; equal scores prefer the lower index. With
``exclude_first`` row 0 (the class token) is not ranked and is always kept first.
Scores and selection carry no gradient; the kept rows do.
"""

from __future__ import annotations

import torch

from ._dtypes import acc_dtype


def row_scores(attn: torch.Tensor) -> torch.Tensor:
    """Unbiased std of each row over the last axis, float32/float64, detached."""
    a = attn.detach()
    a = a.to(acc_dtype(a.dtype))
    if a.shape[-1] < 2:
        return torch.zeros(a.shape[:-1], dtype=a.dtype, device=a.device)
    return a.std(dim=-1, correction=1)


def select_rows(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` largest scores, ascending; ties prefer the lower index."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :keep]
    return order.sort(dim=-1).values


def topk_std_pool(
    attn: torch.Tensor, keep: int, exclude_first: bool = True, second_softmax: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """attn [..., T, N] -> (pooled [..., keep(+1), N], index [..., keep]).

    ``index`` holds row indices into ``attn`` (so they start at 1 with ``exclude_first``).
    """
    first = 1 if exclude_first else 0
    index = select_rows(row_scores(attn[..., first:, :]), keep) + first
    pooled = attn.gather(-2, index[..., None].expand(*index.shape, attn.shape[-1]))
    if exclude_first:
        pooled = torch.cat([attn[..., :1, :], pooled], dim=-2)
    if second_softmax:
        pooled = torch.softmax(pooled.to(acc_dtype(attn.dtype)), dim=-1).to(attn.dtype)
    return pooled, index


def topk_std_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    keep: int,
    exclude_first: bool = True,
    scale: float | None = None,
    second_softmax: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k [B,H,T,D], v [B,H,T,Dv] -> (out [B,H,keep(+1),Dv], index [B,H,keep]).

    ``out = pooled(softmax(q k^T * scale)) @ v``, computed in float32 (float64 for float64).
    The selection is made on the whole (detached) attention; the pooled rows are then
    recomputed from the kept queries only, so the rows not kept take no part in the
    gradient: their ``dq`` is exactly 0 and they add nothing to ``dk`` even when their
    attention row is NaN (a dense softmax backward would spread ``0 * NaN = NaN``).
    """
    acc = acc_dtype(q.dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qa, ka = q.to(acc), k.to(acc)
    first = 1 if exclude_first else 0
    with torch.no_grad():
        attn = torch.softmax((qa @ ka.transpose(-1, -2)) * scale, dim=-1)
        index = select_rows(row_scores(attn[..., first:, :]), keep) + first
    rows = torch.cat([torch.zeros_like(index[..., :1]), index], dim=-1) if exclude_first else index
    kept_q = qa.gather(-2, rows[..., None].expand(*rows.shape, qa.shape[-1]))
    pooled = torch.softmax((kept_q @ ka.transpose(-1, -2)) * scale, dim=-1)
    if second_softmax:
        pooled = torch.softmax(pooled, dim=-1)
    return (pooled @ v.to(acc)).to(q.dtype), index
