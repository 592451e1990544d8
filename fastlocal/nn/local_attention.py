"""``LocalAttention``: a batch-first multi-head local attention layer (docs/design.md, "Ops")."""

from __future__ import annotations

import torch
from torch import nn

from .. import _validate as check
from ..local_attention import Window, local_attention, local_attention_probs, resolve_window
from .relative_position_bias import RelativePositionBias


class LocalAttention(nn.Module):
    """Multi-head banded attention with an optional learned relative position bias.

    Laid out like :class:`torch.nn.MultiheadAttention` with ``batch_first=True``: separate
    ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` linear layers, ``kdim`` / ``vdim``
    for cross-attention inputs, dropout on the attention probabilities. Query i attends
    keys j with ``-left <= j - i <= right`` (see :func:`fastlocal.local_attention`). The
    backend is chosen automatically per call; select one with :func:`fastlocal.use_backend`.

    Args:
        embed_dim: model width E (divisible by ``num_heads``).
        num_heads: number of heads H; each has ``E // H`` channels.
        window: odd window size; ``window_left`` / ``window_right`` give an asymmetric
            window (``window_right=0`` is causal).
        rpb: True for an own :class:`RelativePositionBias`, False / None for no bias, or a
            :class:`RelativePositionBias` instance to share (same heads, window and edge).
        edge: ``"clip"`` (TUT) or ``"shift"`` (NATTEN).
        dropout: dropout probability on the attention probabilities, in training only.
        bias: whether the projections have biases.
        kdim, vdim: feature sizes of ``key`` and ``value`` (default ``embed_dim``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        window: int,
        *,
        rpb: bool | RelativePositionBias | None = True,
        edge: str = "clip",
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        window_left: int | None = None,
        window_right: int | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = check.integer("embed_dim", embed_dim, minimum=1)
        self.num_heads = check.integer("num_heads", num_heads, minimum=1)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim must be divisible by num_heads, got embed_dim={embed_dim}, "
                             f"num_heads={num_heads}")
        self.head_dim = embed_dim // num_heads
        self.kdim = embed_dim if kdim is None else check.integer("kdim", kdim, minimum=1)
        self.vdim = embed_dim if vdim is None else check.integer("vdim", vdim, minimum=1)
        self.window = window
        self.geometry: Window = resolve_window(window, window_left, window_right, edge)
        self.dropout = check.real("dropout", dropout, low=0.0, high=1.0, high_open=True)

        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.rpb: RelativePositionBias | None = self._bias_module(rpb)
        self._reset_projections()

    def _bias_module(self, rpb: object) -> RelativePositionBias | None:
        g = self.geometry
        if rpb is None or rpb is False:
            return None
        if rpb is True:
            return RelativePositionBias(self.num_heads, self.window, window_left=g.left, window_right=g.right,
                                        edge=g.edge)
        if not isinstance(rpb, RelativePositionBias):
            raise TypeError(f"rpb must be a bool, None or a RelativePositionBias, got {type(rpb).__name__}")
        s = rpb.geometry
        if rpb.num_heads != self.num_heads or (s.left, s.right, s.edge) != (g.left, g.right, g.edge):
            raise ValueError(
                f"rpb must match this layer: num_heads={self.num_heads}, window_left={g.left}, "
                f"window_right={g.right}, edge={g.edge!r}; got num_heads={rpb.num_heads}, "
                f"window_left={s.left}, window_right={s.right}, edge={s.edge!r}"
            )
        return rpb

    def _reset_projections(self) -> None:
        # nn.MultiheadAttention's init (Xavier input projections, zero biases), so swapping
        # this layer in for it does not change how training starts.
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight)
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if proj.bias is not None:
                nn.init.zeros_(proj.bias)

    def _check_input(self, name: str, x: object, features: int, like: torch.Tensor | None) -> None:
        check.tensor(name, x, ndim=3)
        if x.shape[-1] != features:
            raise ValueError(f"{name} must have {features} features in its last dimension, got shape {tuple(x.shape)}")
        if like is not None and x.shape[:2] != like.shape[:2]:
            raise ValueError(f"{name} must have shape [B, T, {features}] with [B, T] = {tuple(like.shape[:2])} "
                             f"like query, got {tuple(x.shape)}")

    @staticmethod
    def _check_dtype(name: str, x: torch.Tensor, proj: nn.Linear) -> None:
        """``x`` must have the dtype of the projection it goes through, unless autocast casts both."""
        weight = proj.weight
        if x.dtype == weight.dtype:
            return
        if torch.is_autocast_enabled(x.device.type) and torch.float64 not in (x.dtype, weight.dtype):
            return  # autocast runs the projections in its own dtype (it leaves float64 alone)
        raise TypeError(
            f"{name} has dtype {x.dtype} but this LocalAttention's parameters have dtype {weight.dtype}: "
            f"cast the input ({name}.to({weight.dtype})) or the module (.to({x.dtype}), e.g. .double() for "
            "float64 inputs)"
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend ``query`` to ``key`` / ``value`` within the window.

        Args:
            query: ``[B, T, embed_dim]``.
            key: ``[B, T, kdim]``, default ``query`` (self-attention).
            value: ``[B, T, vdim]``, default ``key``.
            key_padding_mask: ``[B, T]`` bool, True = padding (never attended); a query
                with no visible key outputs ``out_proj`` of zeros.
            need_weights_rows: LongTensor ``[R]`` or ``[B, R]`` of query rows whose attention
                probabilities to return (e.g. boundary frames for TUT's loss).
        Returns:
            ``(out [B, T, embed_dim], probs)``: ``probs`` is ``[B, H, R, left + right + 1]``
            laid out by window offset as :func:`fastlocal.local_attention_probs` (before
            dropout), or None when ``need_weights_rows`` is None.
        """
        key = query if key is None else key
        value = key if value is None else value
        self._check_input("query", query, self.embed_dim, None)
        self._check_input("key", key, self.kdim, query)
        self._check_input("value", value, self.vdim, query)
        for name, x, proj in (("query", query, self.q_proj), ("key", key, self.k_proj), ("value", value, self.v_proj)):
            self._check_dtype(name, x, proj)
        B, T, _ = query.shape
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        # The table follows the activations' dtype, so autocast (fp16 activations, fp32 table) works.
        table = None if self.rpb is None else self.rpb().to(q.dtype)
        g = self.geometry
        window_args = {"window_left": g.left, "window_right": g.right, "edge": g.edge,
                       "key_padding_mask": key_padding_mask}
        out = local_attention(q, k, v, self.window, table, dropout_p=self.dropout if self.training else 0.0,
                              **window_args)
        out = self.out_proj(out.transpose(1, 2).reshape(B, T, self.embed_dim))
        if need_weights_rows is None:
            return out, None
        return out, local_attention_probs(q, k, need_weights_rows, self.window, table, **window_args)

    def extra_repr(self) -> str:
        g = self.geometry
        text = f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, window={self.window}"
        if g.left != self.window // 2 or g.right != self.window // 2:
            text += f", window_left={g.left}, window_right={g.right}"
        text += f", edge={g.edge!r}, dropout={self.dropout}"
        if (self.kdim, self.vdim) != (self.embed_dim, self.embed_dim):
            text += f", kdim={self.kdim}, vdim={self.vdim}"
        return text
