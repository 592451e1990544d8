"""TALLFormer's temporal consistency module (TCM): full self-attention with a learned relative
position bias over one window's tokens, on :class:`fastlocal.nn.LocalAttention`.

The released module (``Transformer1DRelPos`` / ``EncoderLayer1D`` / ``WindowAttention1D`` in
``vedatad/models/modules/swin_1d.py``) is, per layer (pre-LN):
``x += DropPath(Attn(LN x)); x += DropPath(MLP(LN x))`` with a fused ``qkv`` projection
(bias on), a table ``[2L - 1, H]`` indexed by ``(i - j) + L - 1`` and no mask. Here the
attention is ``fastlocal.local_attention`` with ``window = 2L - 1`` (every pair of the L
tokens lies in the band, so it is exact full attention) and a table ``[H, 2L - 1]``
indexed by ``(j - i) + L - 1``: :func:`convert_released_tcm_state_dict` transposes and flips it.
The parameter count is the released one: 3,154,288 per layer at L = 60, dim 512.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal.nn import LocalAttention

from ..backbones.video_swin import DropPath
from ..tut.model import released_rpb_to_table
from .config import TALLFormerConfig

#: released TCM parameters at L = 60 (3 layers, dim 512, 16 heads, MLP x4); the spec's count
TCM_PARAMETERS_L60 = 9_462_864


class MLP(nn.Module):
    """``fc2(GELU(fc1(x)))`` on ``[..., dim]`` (no dropout, as released)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TCMLayer(nn.Module):
    """One pre-LN layer of the TCM on ``[B, T, dim]`` with ``T <= max_seq_len``."""

    def __init__(self, dim: int, heads: int, max_seq_len: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        # window 2L - 1 holds every offset j - i in [-(L - 1), L - 1]: full attention over <= L tokens.
        self.attn = LocalAttention(dim, heads, 2 * max_seq_len - 1, rpb=True, edge="clip")
        for proj in (self.attn.q_proj, self.attn.k_proj, self.attn.v_proj, self.attn.out_proj):
            proj.reset_parameters()  # released: nn.Linear's default init (no Xavier), bias on
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x))[0])
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TemporalConsistencyModule(nn.Module):
    """The TCM: ``config.tcm_layers`` pre-LN transformer layers over the ``L = max_seq_len``
    tokens of a window (released: 3 layers, dim 512, 16 heads, MLP x4 GELU, drop path 0.1
    in every layer, no dropout).

    ``forward(x [B, T, dim])`` -> ``[B, T, dim]`` for ``1 <= T <= L``; the released table
    cannot index a longer sequence, so a longer one is an error.
    """

    def __init__(self, config: TALLFormerConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.max_seq_len = config.max_seq_len
        self.layers = nn.ModuleList(
            TCMLayer(config.dim, config.tcm_heads, config.max_seq_len, config.tcm_mlp_ratio, config.tcm_drop_path)
            for _ in range(config.tcm_layers)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be [B, T, {self.dim}], got {shape}")
        if not 1 <= x.shape[1] <= self.max_seq_len:
            raise ValueError(f"x has {x.shape[1]} tokens; the TCM takes 1..{self.max_seq_len} "
                             f"(max_seq_len = window_frames // 8)")
        for layer in self.layers:
            x = layer(x)
        return x


# ---- released weights ------------------------------------------------------------------------

_RENAME = {"norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "attn.proj": "attn.out_proj"}


def table_to_released(table: torch.Tensor) -> torch.Tensor:
    """Our ``[H, 2L - 1]`` table indexed by ``(j - i) + L - 1`` -> the released
    ``relative_position_bias_table [2L - 1, H]`` indexed by ``(i - j) + L - 1``
    (the inverse of :func:`~fastlocal.models.tut.model.released_rpb_to_table`)."""
    return table.flip(-1).t().contiguous()


def convert_released_tcm_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Map the released ``Transformer1DRelPos`` weights onto :class:`TemporalConsistencyModule`.

    Args:
        state: a released state dict; only keys under ``prefix + "encoder.layers."`` are read
            (e.g. ``prefix="neck.1."`` for the whole released detector, whose second neck
            module is the TCM).
        prefix: where the TCM sits in ``state``.
    Returns:
        ``{"layers.<i>.<name>": tensor}``: ``attn.qkv`` ``[3C, C]`` split into
        ``attn.q_proj`` / ``k_proj`` / ``v_proj``, ``attn.proj`` -> ``attn.out_proj``, the bias
        table ``[2L - 1, H]`` -> ``attn.rpb.table [H, 2L - 1]`` with ``ours[h, m] =
        theirs[2L - 2 - m, h]``; the ``relative_position_index`` buffer is dropped.
    Raises:
        ValueError: naming a key under the prefix that is not part of the released TCM, or when
            there is no TCM key at all.
    """
    head = prefix + "encoder.layers."
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(head):
            continue
        index, _, name = key[len(head):].partition(".")
        if not index.isdigit():
            raise ValueError(f"unexpected key {key!r} in a released TCM state dict")
        layer = f"layers.{int(index)}"
        module, _, param = name.rpartition(".")
        if name == "attn.relative_position_bias_table":
            out[f"{layer}.attn.rpb.table"] = released_rpb_to_table(value)
        elif name == "attn.relative_position_index":
            continue  # a buffer the offsets of local_attention replace
        elif module == "attn.qkv" and param in ("weight", "bias"):
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True):
                out[f"{layer}.attn.{part}.{param}"] = chunk.contiguous()
        elif module in _RENAME and param in ("weight", "bias"):
            out[f"{layer}.{_RENAME[module]}.{param}"] = value
        else:
            raise ValueError(f"unexpected key {key!r} in a released TCM state dict")
    if not out:
        raise ValueError(f"no released TCM weights under {head!r} (keys like {head}0.attn.qkv.weight)")
    return out
