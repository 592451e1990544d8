"""Video Swin Transformer (Liu et al., 2022) in torchvision's ``swin3d`` state-dict layout.

One module tree, torchvision's ``SwinTransformer3d`` (``torchvision/models/video/swin_transformer.py``),
so every key is torchvision's and a local torchvision checkpoint loads strictly with
:func:`load_video_swin`:

- ``patch_embed.proj`` (Conv3d, kernel = stride = ``patch_size``), ``patch_embed.norm``;
- ``features.{2i}.{j}``: block j of stage i (``norm1``, ``attn.qkv``, ``attn.proj``,
  ``attn.relative_position_bias_table`` ``[(2Wd-1)(2Wh-1)(2Ww-1), heads]``, the
  ``attn.relative_position_index`` buffer ``[Wd*Wh*Ww, Wd*Wh*Ww]``, ``norm2``, ``mlp.0``, ``mlp.3``);
- ``features.{2i+1}``: patch merging after stage i (``norm`` over 4C, ``reduction`` 4C -> 2C, no bias);
- ``norm``; ``head`` only when ``num_classes`` is set (feature mode has none).

The Video Swin checkpoints of the original repository and of TALLFormer (mmaction layout,
``layers.{i}.blocks.{j}...``) load too, with ``layout="mmaction"`` (:func:`mmaction_to_torchvision`).

Presets: :func:`swin3d_t` (embed 96, depths 2-2-6-2, heads 3-6-12-24), :func:`swin3d_s` (96,
2-2-18-2, 3-6-12-24), :func:`swin3d_b` (128, 2-2-18-2, 4-8-16-32); all patch (2,4,4), window
(8,7,7). Output channels ``8 * embed_dim``: 768 (T, S), 1024 (B). TALLFormer's backbone is
``swin3d_b(drop_path=0.2, frozen_stages=2, gradient_checkpointing=True)``.

Behaviour, as torchvision and the released code (``vedatad/models/backbones/vswin.py``):
inputs not divisible by the patch, feature maps not divisible by the window and odd sizes at
patch merging are zero-padded at the end; along an axis where the feature map is no larger
than the window, the window shrinks to the map and that axis is not shifted; shifted windows
mask pairs of tokens that the cyclic shift brought together with -100 (not -inf), padded
tokens are not masked; drop path ("stochastic depth", per sample) rises linearly from 0 at the
first block to ``drop_path`` at the last. One deliberate difference: where a window shrinks
in height or width, the relative position bias is looked up at the true offsets of the
smaller window; torchvision and mmaction take the top-left ``N x N`` block of the full
window's index, which is right only when the time axis alone shrinks (e.g. 112x112 inputs
at the last stage, a 4x4 map). At 224x224 with 32 frames no window shrinks, so the two agree.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..configs import check_positive_ints, replace
from ..weights import load_strict, read_state_dict, strip_prefix

__all__ = [
    "DropPath",
    "VideoSwin",
    "VideoSwinConfig",
    "load_video_swin",
    "mmaction_to_torchvision",
    "parameter_count",
    "shifted_window_attention_mask",
    "swin3d_b",
    "swin3d_s",
    "swin3d_t",
]

MASK_VALUE = -100.0  # torchvision's and mmaction's value for masked pairs (softmax weight ~e-44, not exactly 0)
LAYOUTS = ("torchvision", "mmaction")
Size3 = tuple[int, int, int]


def _triple(obj: object, name: str) -> Size3:
    value = getattr(obj, name)
    if isinstance(value, list):
        value = tuple(value)
    if (not isinstance(value, tuple) or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
        raise ValueError(f"{type(obj).__name__}.{name} must be 3 ints >= 1 (time, height, width), got {value!r}")
    return value


@dataclass(frozen=True)
class VideoSwinConfig:
    """A Video Swin Transformer (defaults: torchvision's ``swin3d_t`` without its head).

    ``embed_dim``: channels after the patch embedding (stage i has ``embed_dim * 2**i``);
    ``depths``, ``num_heads``: blocks and heads per stage; ``patch_size``, ``window_size``:
    (time, height, width); ``mlp_ratio``: MLP hidden width / channels; ``dropout``,
    ``attention_dropout``: dropout after the patch embedding, attention projection and MLP, and
    on the attention weights; ``drop_path``: stochastic depth of the last block (torchvision's
    ``stochastic_depth_prob``: 0.1; TALLFormer 0.2); ``num_classes``: size of the ``head``
    classifier, ``None`` for none (feature mode); ``frozen_stages``: -1 (none), 0 (the patch
    embedding) or k >= 1 (the patch embedding, stages 1..k and the patch merging after each),
    as the released ``_freeze_stages``; ``gradient_checkpointing``: recompute each block of the
    trainable stages in the backward pass instead of storing its activations.
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    patch_size: Size3 = (2, 4, 4)
    window_size: Size3 = (8, 7, 7)
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.1
    num_classes: int | None = None
    frozen_stages: int = -1
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        check_positive_ints(self, ("embed_dim",))
        for name in ("depths", "num_heads"):
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, list) else value  # from_dict gives lists
            if (not isinstance(value, tuple) or not value
                    or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)):
                raise ValueError(f"VideoSwinConfig.{name} must be a non-empty tuple of ints >= 1, got {value!r}")
            object.__setattr__(self, name, value)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"VideoSwinConfig.depths {self.depths} and num_heads {self.num_heads} "
                             "must have one entry per stage")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"VideoSwinConfig: stage {i + 1} has {self.embed_dim * 2**i} channels, "
                                 f"not divisible by num_heads[{i}] = {heads}")
        for name in ("patch_size", "window_size"):
            object.__setattr__(self, name, _triple(self, name))
        ratio = self.mlp_ratio
        if (isinstance(ratio, bool) or not isinstance(ratio, int | float) or not math.isfinite(ratio)
                or self.embed_dim * ratio < 1):
            raise ValueError(f"VideoSwinConfig.mlp_ratio must be finite with embed_dim * mlp_ratio >= 1, got {ratio!r}")
        for name in ("dropout", "attention_dropout", "drop_path"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
                raise ValueError(f"VideoSwinConfig.{name} must be a probability in [0, 1), got {value!r}")
        if self.num_classes is not None:
            check_positive_ints(self, ("num_classes",))
        frozen = self.frozen_stages
        if isinstance(frozen, bool) or not isinstance(frozen, int) or not -1 <= frozen <= len(self.depths):
            raise ValueError(f"VideoSwinConfig.frozen_stages must be an int in [-1, {len(self.depths)}], "
                             f"got {frozen!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ValueError(f"VideoSwinConfig.gradient_checkpointing must be a bool, "
                             f"got {self.gradient_checkpointing!r}")

    @property
    def out_channels(self) -> int:
        """Channels of the last stage: ``embed_dim * 2**(stages - 1)``."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)


SWIN3D_T = VideoSwinConfig()
SWIN3D_S = VideoSwinConfig(depths=(2, 2, 18, 2))
SWIN3D_B = VideoSwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))


class DropPath(nn.Module):
    """Stochastic depth per sample (torchvision's ``StochasticDepth(p, "row")``, timm's ``DropPath``):
    in training, each sample's residual branch ``[B, ...]`` is zeroed with probability ``p`` and
    the kept ones scaled by ``1 / (1 - p)``; the identity in eval mode or at ``p = 0``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _effective_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Along an axis no longer than the window, the window is the whole axis and is not shifted."""
    win = tuple(s if s <= w else w for s, w in zip(size, window, strict=True))
    sh = tuple(0 if s <= w else h for s, w, h in zip(size, window, shift, strict=True))
    return win, sh  # type: ignore[return-value]


def _partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """``[B, D, H, W, C]`` (each divisible by the window) -> ``[B, nW, Wd*Wh*Ww, C]``, windows and
    tokens in row-major (d, h, w) order."""
    b, d, h, w, c = x.shape
    wd, wh, ww = window
    x = x.view(b, d // wd, wd, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wd * wh * ww, c)


@functools.lru_cache(maxsize=64)
def _window_order(size: Size3, padded: Size3, window: Size3, shift: Size3,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token permutations of shifted-window attention on a map of ``size`` zero-padded to ``padded``.

    ``gather`` ``[nW*N]``: for each window slot (windows and tokens row-major), the flat index in
    the padded map of the token the cyclic shift by ``-shift`` puts there. ``scatter`` ``[D*H*W]``:
    for each position of the unpadded map (row-major), its window slot. One ``index_select`` each
    does the roll, the partition, their inverses and the crop (several copies in torchvision's code).
    """
    with torch.device("cpu"):
        positions = torch.arange(padded[0] * padded[1] * padded[2]).view(padded)
        rolled = torch.roll(positions, shifts=tuple(-s for s in shift), dims=(0, 1, 2))
        gather = _partition(rolled[None, ..., None], window).flatten()
        slot = torch.empty_like(gather)
        slot[gather] = torch.arange(gather.numel())
        scatter = slot[positions[: size[0], : size[1], : size[2]].flatten()]
    return gather.to(device), scatter.to(device)


def shifted_window_attention_mask(padded: Size3, window: Size3, shift: Size3,
                                  device: torch.device | str | None = None) -> torch.Tensor:
    """Additive mask ``[nW, N, N]`` (N = Wd*Wh*Ww) of the shifted windows of a ``padded`` map.

    After the cyclic shift by ``-shift``, each axis splits into three regions: positions before
    the last window, the last window's part that was there before the shift, and the ``shift``
    positions that wrapped around. Two tokens of one window attend to each other (0) only if
    they lie in the same region along every axis; otherwise ``-100``.
    """
    labels = torch.zeros(padded, dtype=torch.long, device=device)
    for axis, (size, win, sh) in enumerate(zip(padded, window, shift, strict=True)):
        pos = torch.arange(size, device=device)
        region = (pos >= size - win).long() + (pos >= size - sh).long() if sh else torch.zeros_like(pos)
        labels = labels * 3 + region.view([-1 if a == axis else 1 for a in range(3)])
    labels = _partition(labels[None, ..., None], window)[0, ..., 0]  # [nW, N]
    differs = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(differs.shape, device=device).masked_fill_(differs, MASK_VALUE)


@functools.lru_cache(maxsize=8)
def _relative_position_index_cached(window: Size3) -> torch.Tensor:
    """``[N, N]`` int64: row of offset (dd, dh, dw) between tokens i and j of a window (row-major (d, h, w)
    order) in the bias table, each offset shifted to start at 0, the table in row-major order."""
    wd, wh, ww = window
    with torch.device("cpu"):  # also under torch.device("meta"), whose ops would import torch._refs (seconds)
        coords = torch.stack(torch.meshgrid(*(torch.arange(n) for n in window), indexing="ij")).flatten(1)
        offset = coords[:, :, None] - coords[:, None, :] + torch.tensor([wd - 1, wh - 1, ww - 1])[:, None, None]
        return (offset[0] * (2 * wh - 1) + offset[1]) * (2 * ww - 1) + offset[2]


def _relative_position_index(window: Size3) -> torch.Tensor:
    """A fresh copy of the (cached: every block of a model shares its window) index of ``window``."""
    return _relative_position_index_cached(window).clone()


class ShiftedWindowAttention3d(nn.Module):
    """Multi-head self-attention within (shifted) 3-D windows, with a learned relative position bias.

    ``[B, D, H, W, C]`` -> ``[B, D, H, W, C]``. Keys ``qkv``, ``proj``, ``relative_position_bias_table``
    and the ``relative_position_index`` buffer, as torchvision's ``ShiftedWindowAttention3d``.
    """

    def __init__(self, dim: int, window_size: Size3, shift_size: Size3, num_heads: int,
                 attention_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        self.dropout = dropout
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        wd, wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wd - 1) * (2 * wh - 1) * (2 * ww - 1),
                                                                     num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = _relative_position_index(window_size).to(self.relative_position_bias_table.device)
        self.register_buffer("relative_position_index", index)  # persistent: torchvision's checkpoints hold it

    def relative_position_bias(self, window: Size3) -> torch.Tensor:
        """Bias ``[heads, N, N]`` between the tokens of a ``window`` (<= the configured one) in row-major order."""
        index = self.relative_position_index
        if window != self.window_size:
            _, wh, ww = self.window_size
            grid = torch.meshgrid(*(torch.arange(n, device=index.device) for n in window), indexing="ij")
            kept = ((grid[0] * wh + grid[1]) * ww + grid[2]).flatten()  # the tokens' places in the full window
            index = index[kept][:, kept]
        return self.relative_position_bias_table[index].permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        window, shift = _effective_window((d, h, w), self.window_size, self.shift_size)
        pad = [(-n) % k for n, k in zip((d, h, w), window, strict=True)]
        if any(pad):
            x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        padded = (d + pad[0], h + pad[1], w + pad[2])
        gather, scatter = _window_order((d, h, w), padded, window, shift, x.device)
        n = window[0] * window[1] * window[2]
        windows = x.reshape(b, -1, c).index_select(1, gather).view(b, -1, n, c)  # [B, nW, N, C], shifted
        heads = self.num_heads
        q, k, v = self.qkv(windows).view(b, -1, n, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5).unbind(0)
        attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)  # [B, nW, heads, N, N]
        attn = attn + self.relative_position_bias(window)
        if any(shift):  # in place: the sum is not saved for backward, and a bias+mask tensor would cost nW*heads*N*N
            attn += shifted_window_attention_mask(padded, window, shift, x.device)[:, None].to(attn.dtype)
        attn = F.dropout(attn.softmax(dim=-1), self.attention_dropout, self.training)
        out = (attn @ v).transpose(2, 3).reshape(b, -1, c)
        out = F.dropout(self.proj(out), self.dropout, self.training)
        return out.index_select(1, scatter).view(b, d, h, w, c)

    def extra_repr(self) -> str:
        return f"window_size={self.window_size}, shift_size={self.shift_size}, num_heads={self.num_heads}"


class SwinBlock3d(nn.Module):
    """Pre-norm block: ``x + DropPath(Attn(LN x))``, then ``x + DropPath(MLP(LN x))``; ``[B, D, H, W, C]``.
    ``mlp`` is torchvision's ``MLP``: Linear, GELU, Dropout, Linear, Dropout (keys ``mlp.0``, ``mlp.3``)."""

    def __init__(self, dim: int, num_heads: int, shift_size: Size3, drop_path: float,
                 config: VideoSwinConfig) -> None:
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ShiftedWindowAttention3d(dim, config.window_size, shift_size, num_heads,
                                             config.attention_dropout, config.dropout)
        self.stochastic_depth = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(config.dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.stochastic_depth(self.attn(self.norm1(x)))
        return x + self.stochastic_depth(self.mlp(self.norm2(x)))


class SwinStage(nn.Sequential):
    """The blocks of one stage (keys ``0``, ``1``...), optionally each under gradient checkpointing."""

    def __init__(self, *blocks: SwinBlock3d) -> None:
        super().__init__(*blocks)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Recompute only where a backward pass will come: frozen stages (no grad anywhere) store nothing anyway.
        recompute = self.gradient_checkpointing and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        for block in self:
            # the default preserve_rng_state replays the same drop-path draws in the recomputation
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return x


class PatchMerging(nn.Module):
    """2x2 spatial merging (time kept): ``[B, D, H, W, C]`` -> ``[B, D, ceil(H/2), ceil(W/2), 2C]``,
    odd H or W zero-padded; concatenation order (0,0), (1,0), (0,1), (1,1) of (h, w) as torchvision."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:4]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class PatchEmbed3d(nn.Module):
    """Non-overlapping patches: ``[B, 3, T, H, W]`` -> ``[B, T/pt, H/ph, W/pw, C]`` (sizes rounded up,
    the input zero-padded at the end), then LayerNorm."""

    def __init__(self, patch_size: Size3, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = [(-n) % p for n, p in zip(x.shape[2:], self.patch_size, strict=True)]
        x = self.proj(F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0])))
        return self.norm(x.permute(0, 2, 3, 4, 1))


class VideoSwin(nn.Module):
    """Video Swin Transformer: clips ``[B, 3, T, H, W]`` -> features or class logits.

    :meth:`forward_features` gives the normalised last-stage map ``[B, T', H', W', C]`` with
    ``T' = ceil(T / pt)``, ``H' = ceil(H / ph / 2**(stages-1))`` (each merging rounds up), ``C =``
    :attr:`out_channels`. :meth:`forward` gives ``[B, num_classes]`` logits (space-time average,
    ``head``) when the config has ``num_classes``, else the spatially averaged features ``[B, T', C]``
    (TALLFormer's ``do_pooling``). Weights are initialised as torchvision's (truncated-normal
    std 0.02 linear layers and bias table, zero biases). Frozen parameters get ``requires_grad=False``
    and their modules stay in eval mode in ``train()`` (no drop path there), as released.
    """

    def __init__(self, config: VideoSwinConfig | None = None) -> None:
        super().__init__()
        config = SWIN3D_T if config is None else config
        if not isinstance(config, VideoSwinConfig):
            raise TypeError(f"config must be a VideoSwinConfig, got {type(config).__name__}")
        self.config = config
        self.patch_embed = PatchEmbed3d(config.patch_size, config.embed_dim)
        self.pos_drop = nn.Dropout(config.dropout)
        total = sum(config.depths)
        layers: list[nn.Module] = []
        block_id = 0
        for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
            dim = config.embed_dim * 2**i
            blocks = []
            for j in range(depth):
                shift = (0, 0, 0) if j % 2 == 0 else tuple(w // 2 for w in config.window_size)
                rate = config.drop_path * block_id / (total - 1) if total > 1 else 0.0  # linear, 0 at the first
                blocks.append(SwinBlock3d(dim, heads, shift, rate, config))
                block_id += 1
            layers.append(SwinStage(*blocks))
            if i < len(config.depths) - 1:
                layers.append(PatchMerging(dim))
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(config.out_channels)
        self.head = None if config.num_classes is None else nn.Linear(config.out_channels, config.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.set_gradient_checkpointing(config.gradient_checkpointing)
        for module in self.frozen_modules():
            module.requires_grad_(False)
        self.train()

    @property
    def out_channels(self) -> int:
        """C, the channels of the features: ``8 * embed_dim`` with 4 stages (768 for T and S, 1024 for B)."""
        return self.config.out_channels

    @property
    def stages(self) -> list[SwinStage]:
        """The stages' block sequences (``features.0``, ``features.2``...)."""
        return [m for m in self.features if isinstance(m, SwinStage)]

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Turn the per-block recomputation of every stage on or off (frozen stages never recompute)."""
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
        for stage in self.stages:
            stage.gradient_checkpointing = enabled

    def frozen_modules(self) -> list[nn.Module]:
        """``patch_embed`` and, for k = ``frozen_stages`` >= 1, ``features.0 .. features.{2k-1}``
        (stages 1..k and the merging after each); empty when ``frozen_stages`` is -1."""
        k = self.config.frozen_stages
        return [] if k < 0 else [self.patch_embed, self.pos_drop, *self.features[: 2 * k]]

    def train(self, mode: bool = True) -> VideoSwin:
        """``nn.Module.train``, then the frozen modules back to eval mode."""
        super().train(mode)
        if mode:
            for module in self.frozen_modules():
                module.eval()
        return self

    def forward_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Normalised last-stage features of ``clips`` ``[B, 3, T, H, W]``: ``[B, T', H', W', C]``."""
        if not isinstance(clips, torch.Tensor):
            raise TypeError(f"clips must be a torch.Tensor, got {type(clips).__name__}")
        if clips.dim() != 5 or clips.shape[1] != 3:
            raise ValueError(f"clips must be [batch, 3, frames, height, width], got shape {tuple(clips.shape)}")
        if not clips.is_floating_point():
            raise TypeError(f"clips must be floating point (normalised frames), got {clips.dtype}")
        return self.norm(self.features(self.pos_drop(self.patch_embed(clips))))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """``[B, num_classes]`` logits with a head, else features averaged over space ``[B, T', C]``."""
        x = self.forward_features(clips)
        if self.head is not None:
            return self.head(x.mean(dim=(1, 2, 3)))
        return x.mean(dim=(2, 3))


def swin3d_t(**changes: object) -> VideoSwin:
    """torchvision's ``swin3d_t`` (embed 96, depths 2-2-6-2, heads 3-6-12-24); ``changes`` are
    :class:`VideoSwinConfig` fields (``num_classes=400`` gives torchvision's full model)."""
    return VideoSwin(replace(SWIN3D_T, **changes))


def swin3d_s(**changes: object) -> VideoSwin:
    """torchvision's ``swin3d_s`` (embed 96, depths 2-2-18-2, heads 3-6-12-24); see :func:`swin3d_t`."""
    return VideoSwin(replace(SWIN3D_S, **changes))


def swin3d_b(**changes: object) -> VideoSwin:
    """torchvision's ``swin3d_b`` (embed 128, depths 2-2-18-2, heads 4-8-16-32); see :func:`swin3d_t`.
    TALLFormer: ``swin3d_b(drop_path=0.2, frozen_stages=2, gradient_checkpointing=True)``."""
    return VideoSwin(replace(SWIN3D_B, **changes))


def mmaction_to_torchvision(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of an mmaction-layout Video Swin state dict (the original Video Swin
    repository's ``Recognizer3D`` with ``SwinTransformer3D``, TALLFormer's backbone) to torchvision's:
    a leading ``backbone.`` is removed, ``layers.{i}.blocks.{j}.`` -> ``features.{2i}.{j}.``,
    ``layers.{i}.downsample.`` -> ``features.{2i+1}.``, ``mlp.fc1``/``mlp.fc2`` -> ``mlp.0``/``mlp.3``,
    ``cls_head.fc_cls.`` -> ``head.``. The released blocks' ``dummy_tensor`` buffers (a
    checkpointing device of theirs) are dropped; other keys keep their names."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(".dummy_tensor"):
            continue
        key = key.removeprefix("backbone.")
        parts = key.split(".")
        if parts[0] == "layers" and len(parts) > 3 and parts[1].isdigit():
            stage = int(parts[1])
            if parts[2] == "blocks":
                rest = ".".join(parts[4:]).replace("mlp.fc1.", "mlp.0.").replace("mlp.fc2.", "mlp.3.")
                key = f"features.{2 * stage}.{parts[3]}.{rest}"
            elif parts[2] == "downsample":
                key = f"features.{2 * stage + 1}." + ".".join(parts[3:])
        elif key.startswith("cls_head.fc_cls."):
            key = "head." + key.removeprefix("cls_head.fc_cls.")
        out[key] = value
    return out


def load_video_swin(model: VideoSwin, path: str | os.PathLike, *, prefix: str = "",
                    layout: Literal["torchvision", "mmaction"] = "torchvision") -> None:
    """Load a local Video Swin checkpoint into ``model``, strictly.

    The file is read by :func:`fastlocal.models.weights.read_state_dict` (a state dict or a
    checkpoint's ``"model"`` entry; never code: an mmcv checkpoint, ``{"meta": ..., "state_dict":
    ...}``, must be re-saved as its ``"state_dict"`` alone). Keys are kept only under ``prefix``, which
    is removed (e.g. ``"module."`` of a DDP save); with ``layout="mmaction"`` they are renamed by
    :func:`mmaction_to_torchvision` (which removes ``backbone.`` itself, so the original Video Swin
    checkpoints load with their ``cls_head``). A model without a head ignores the file's ``head.``
    keys; a model with one needs them. Every other key must match the model's by name and shape, the
    ``relative_position_index`` buffers included.

    Raises:
        FileNotFoundError: no such file. ValueError (naming the file): unreadable, no key under
        ``prefix``, or missing / unexpected / mis-shaped keys.
    """
    if not isinstance(model, VideoSwin):
        raise TypeError(f"model must be a VideoSwin, got {type(model).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    where = os.fspath(path)
    state = strip_prefix(read_state_dict(path), prefix, where)
    if layout == "mmaction":
        state = mmaction_to_torchvision(state)
    if model.head is None:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    load_strict(model, state, where, f"Video Swin ({model.config}, {layout} layout)")


def parameter_count(config: VideoSwinConfig) -> int:
    """Parameters of the model ``config`` describes, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VideoSwin(config).parameters())
