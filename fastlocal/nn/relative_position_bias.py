"""``RelativePositionBias``: a learned per-head bias table for :func:`fastlocal.local_attention`."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate as check
from ..local_attention import Window, resolve_window


class RelativePositionBias(nn.Module):
    """Learned relative position bias, one entry per (head, relative offset).

    The table has shape ``[num_heads, window]`` for ``edge="clip"`` and
    ``[num_heads, 2 * window - 1]`` for ``edge="shift"`` (``window = left + right + 1``);
    pair (i, j) gets ``table[h, (j - i) + offset]`` as in :func:`fastlocal.local_attention`.
    It is a module of its own so that several attention layers can share one table
    (TUT's scale-shared encoding): pass the same instance as ``rpb=`` to each
    :class:`~fastlocal.nn.LocalAttention`.

    Args:
        num_heads: number of attention heads H.
        window: odd window size; ``window_left`` / ``window_right`` override its halves.
        edge: ``"clip"`` or ``"shift"``, as the attention layer that reads the table.
    """

    def __init__(
        self,
        num_heads: int,
        window: int,
        *,
        window_left: int | None = None,
        window_right: int | None = None,
        edge: str = "clip",
    ) -> None:
        super().__init__()
        self.num_heads = check.integer("num_heads", num_heads, minimum=1)
        self.window = window
        self.geometry: Window = resolve_window(window, window_left, window_right, edge)
        self.table = nn.Parameter(torch.empty(num_heads, self.geometry.bias_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # trunc_normal(std=0.02) is the usual init of learned RPB tables (Swin, TALLFormer):
        # the bias starts near zero so early attention is driven by q.k alone. Cut at 2 std
        # (timm's default bounds a=-2, b=2 are absolute and would never cut at this std).
        nn.init.trunc_normal_(self.table, std=0.02, a=-0.04, b=0.04)

    def forward(self) -> torch.Tensor:
        """The ``[num_heads, bias_size]`` table itself (not a copy, so gradients reach it)."""
        return self.table

    def extra_repr(self) -> str:
        g = self.geometry
        text = f"num_heads={self.num_heads}, window={self.window}"
        if g.left != self.window // 2 or g.right != self.window // 2:
            text += f", window_left={g.left}, window_right={g.right}"
        return text + f", edge={g.edge!r}"
