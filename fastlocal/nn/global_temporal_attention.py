"""``GlobalTemporalAttention``: GTA (He et al., "GTA: Global Temporal Attention for Video Action
Understanding", BMVC 2021), spatial self-attention per frame followed by a learned, input-independent
temporal attention over pixels and regions."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as check

__all__ = ["GlobalTemporalAttention", "mix_groups"]

REGION_TRANSFORMS = ("input", "static")
REGION_NORMALIZE = ("pixels", "regions")
NORMS = ("none", "batch")


def mix_groups(attention: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Cross-channel multi-head GTA (Eq. 5-7): ``out[k] = sum_g M[g, k] @ V[g]``, heads concatenated.

    Args:
        attention: ``[G, G, T, T]``, ``attention[g, k]`` the T x T matrix of head k of group g (N_h = G).
        values: ``[S, T, D]`` (S samples, D = G * (D // G) channels, split into G groups of D // G).
    Returns:
        ``[S, T, D]``: channel slice k (``k * D // G ...``) of the output is head k summed over groups.
    """
    G, _, T, _ = attention.shape
    S, _, D = values.shape
    # one matmul: rows (head k, time t), columns (group g, time s) of a (G T) x (G T) matrix
    big = attention.permute(1, 2, 0, 3).reshape(G * T, G * T)
    grouped = values.reshape(S, T, G, D // G).transpose(1, 2).reshape(S, G * T, D // G)
    mixed = torch.matmul(big, grouped)  # [S, (k t), D/G]
    return mixed.reshape(S, G, T, D // G).transpose(1, 2).reshape(S, T, D)


class GlobalTemporalAttention(nn.Module):
    """A GTA block: ``Y = X^ + MH_G(X^) W_O^P + W_R^T MH_G(X~) W_O^R`` (Eq. 8) with ``X^`` the output
    of a spatial self-attention within each frame and ``X~ = W_R X^`` the regions.

    Input and output ``[B * T, C, H, W]``, the layout of a 2-D ResNet run over the frames of a clip
    (TSN): frames folded into the batch, clip-major (row ``b * T + t`` is frame t of clip b); a
    ``[B, C, T, H, W]`` input is accepted too and returned in that layout. T is fixed at
    construction (``frames``: the temporal matrices are T x T); H and W may be anything.

    Layers, with ``D = channels // reduction`` the inner width:

    1. Spatial self-attention per frame (Eq. 1-4, one residual): 1x1 convolutions ``theta``,
       ``phi``, ``g`` to D channels, ``phi`` and ``g`` max-pooled ``spatial_pool`` x
       ``spatial_pool`` after the projection (as the non-local block), ``spatial_heads`` heads of
       ``scaled_dot_product_attention`` (scale ``1 / sqrt(D / heads)``), 1x1 ``spatial_out`` back
       to C with a bias, optional norm, added to the input: ``X^``.
    2. Pixel GTA: ``pixel_value`` (1x1, C -> D), :func:`mix_groups` with ``pixel_attention``
       ``[G, G, T, T]`` along time at every pixel, giving ``[B T, D, H, W]``.
    3. Region GTA: ``region_value`` (1x1, C -> D), region maps ``W_R`` ``[B T, R, H W]``, regions
       ``X~ = W_R V`` ``[B T, R, D]``, :func:`mix_groups` with ``region_attention`` along time for
       each region, then back with the transpose ``W_R^T`` to ``[B T, D, H, W]``.
    4. ``out`` (1x1, 2 D -> C, bias): ``W_O^P`` and ``W_O^R`` stacked as one convolution over the
       two branches concatenated (their two biases would be one), optional norm, added to ``X^``.

    Both temporal matrices are parameters ``[G, N_h, T, T]`` with ``N_h = G`` (Eq. 7: the group sum
    keeps N_h x T x C/G, reshaped to T x C), Kaiming-normal initialised (fan-in G T: each output
    sums G groups over T frames), independent of the input. Frame order matters: permuting the
    frames changes the output, unlike dot-product temporal attention or temporal average pooling.

    Where the paper is silent (no code is released), the choices below are arguments; the defaults
    are what the published budget supports (31.2 M parameters and 50.2 GMAC for R2D-50 + 5 blocks at
    8 x 224^2, Table 1; ``shared/specs/vidtr_gta.md`` §3):

    - ``reduction`` 4: inner width D = C / 4 for the spatial attention and for each GTA branch.
      Then a block has 2 C^2 weights, the non-local block's count (Table 1: "31.2 M each").
    - Separate value projections for the two branches (with their output projections, C^2
      weights: those of the temporal non-local block GTA replaces), and biases only on the two
      output projections: ``phi``'s bias cancels in the softmax and ``g``'s passes through rows that sum
      to one into ``spatial_out``'s bias; the others are left out to stay within the budget.
    - ``spatial_pool`` 2: max-pooled keys/values, as the non-local block the paper compares with
      (the decoupled non-local block's 49.9 GMAC needs it); 1 disables pooling.
    - ``region_transform`` "input": ``W_R`` is predicted from the frame, logits of a bias-free
      1x1 ``region_logits`` (D -> R) on the region value, so every video gets its own regions
      (Fig. 4/6 show different regions per video; a bias per region cancels in the softmax).
      "static": the literal ``W_R`` in R^{T x R x HW}, a parameter for a fixed ``static_size``
      (H, W) and T (it would add 0.14 M parameters to R2D-50 + GTA at R = 8).
    - ``region_normalize`` "pixels": each region map is a softmax over the H W pixels of its frame
      (a region is a weighted mean of pixels, and ``W_R^T`` spreads it back with the same weights);
      "regions": a softmax over the R regions at each pixel (soft assignment; a region is then a
      weighted sum of pixels).
    - ``regions`` R = 8: not given (Fig. 4 shows two regions per video); it costs D R weights.

    With these defaults R2D-50 + 5 blocks has 31,261,934 parameters (the 2 C^2 weights put it at
    31,204,590; the temporal matrices, 2 G^2 T^2 = 8,192 per block, add 40,960, so any design at
    inner width C / 4 exceeds 31.24 M) and 50.14 G multiply-adds per 8 x 224^2 clip.
    - ``norm`` "none": no normalisation before the residuals ("optional", §3.1); "batch":
      BatchNorm2d after ``spatial_out`` and after ``out``, initialised to zero so the block starts
      as the identity (the non-local block's initialisation). "batch" adds 4 C parameters per
      block, 16,384 in R2D-50 + 5 blocks: 31.28 M, beyond Table 1's 31.2 M.

    SlowFast variants (GTA on a SlowFast slow pathway) are not part of this module's work.

    Args:
        channels: C, the feature width in and out.
        frames: T, frames per clip at this stage.
        groups: G (8, the paper's Table 4 best); N_h = G heads per group. D must divide by G.
        reduction: D = channels // reduction.
        regions: R.
        spatial_heads: heads of the spatial self-attention (D must divide by it).
        spatial_pool: max-pooling factor of the spatial keys and values (ceil mode, so any H, W).
        region_transform: "input" or "static" (above).
        region_normalize: "pixels" or "regions" (above).
        static_size: (H, W) of the inputs, required by and only allowed with "static".
        norm: "none" or "batch".
    """

    def __init__(
        self,
        channels: int,
        frames: int,
        *,
        groups: int = 8,
        reduction: int = 4,
        regions: int = 8,
        spatial_heads: int = 1,
        spatial_pool: int = 2,
        region_transform: Literal["input", "static"] = "input",
        region_normalize: Literal["pixels", "regions"] = "pixels",
        static_size: tuple[int, int] | None = None,
        norm: Literal["none", "batch"] = "none",
    ) -> None:
        super().__init__()
        self.channels = check.integer("channels", channels, minimum=1)
        self.frames = check.integer("frames", frames, minimum=1)
        self.groups = check.integer("groups", groups, minimum=1)
        self.reduction = check.integer("reduction", reduction, minimum=1)
        self.regions = check.integer("regions", regions, minimum=1)
        self.spatial_heads = check.integer("spatial_heads", spatial_heads, minimum=1)
        self.spatial_pool = check.integer("spatial_pool", spatial_pool, minimum=1)
        self.region_transform = check.choice("region_transform", region_transform, REGION_TRANSFORMS)
        self.region_normalize = check.choice("region_normalize", region_normalize, REGION_NORMALIZE)
        self.norm = check.choice("norm", norm, NORMS)
        inner = channels // reduction
        if inner < 1 or inner % groups or inner % spatial_heads:
            raise ValueError(f"the inner width channels // reduction = {channels} // {reduction} = {inner} must be "
                             f">= 1 and divisible by groups={groups} and spatial_heads={spatial_heads}")
        self.inner = inner
        if (region_transform == "static") != (static_size is not None):
            raise ValueError("static_size (H, W) is required with region_transform='static' and only allowed "
                             f"with it, got region_transform={region_transform!r}, static_size={static_size!r}")

        def conv(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 1, bias=bias)

        self.theta, self.phi, self.g = conv(channels, inner), conv(channels, inner), conv(channels, inner)
        self.spatial_out = conv(inner, channels, bias=True)
        self.pixel_value = conv(channels, inner)
        self.region_value = conv(channels, inner)
        self.static_size: tuple[int, int] | None = None
        if static_size is None:
            self.region_logits = conv(inner, regions)
        else:
            h, w = (check.integer("static_size", s, minimum=1) for s in static_size)
            self.static_size = (h, w)
            self.region_logits = nn.Parameter(torch.empty(frames, regions, h * w))
        self.pixel_attention = nn.Parameter(torch.empty(groups, groups, frames, frames))
        self.region_attention = nn.Parameter(torch.empty(groups, groups, frames, frames))
        self.out = conv(2 * inner, channels, bias=True)
        self.spatial_norm = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.out_norm = nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal temporal matrices (fan-in G T), the convolutions as ``nn.Conv2d`` does,
        a static ``W_R`` N(0, 1) and zero-initialised norms."""
        std = math.sqrt(2.0 / (self.groups * self.frames))
        for p in (self.pixel_attention, self.region_attention):
            nn.init.normal_(p, 0.0, std)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        if isinstance(self.region_logits, nn.Parameter):
            nn.init.normal_(self.region_logits)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, frames={self.frames}, groups={self.groups}, inner={self.inner}, "
                f"regions={self.regions}, region_transform={self.region_transform!r}, "
                f"region_normalize={self.region_normalize!r}, norm={self.norm!r}")

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Self-attention within each frame: ``[N, C, H, W]`` -> ``X^`` of the same shape."""
        n, _, h, w = x.shape
        heads, d = self.spatial_heads, self.inner // self.spatial_heads
        q = self.theta(x).reshape(n, heads, d, h * w).transpose(-1, -2)
        k, v = self.phi(x), self.g(x)
        if self.spatial_pool > 1:
            k = F.max_pool2d(k, self.spatial_pool, ceil_mode=True)
            v = F.max_pool2d(v, self.spatial_pool, ceil_mode=True)
        k = k.reshape(n, heads, d, -1).transpose(-1, -2)
        v = v.reshape(n, heads, d, -1).transpose(-1, -2)
        a = F.scaled_dot_product_attention(q, k, v)  # [n, heads, HW, d]
        a = a.transpose(-1, -2).reshape(n, self.inner, h, w)
        return x + self.spatial_norm(self.spatial_out(a))

    def _region_maps(self, v: torch.Tensor) -> torch.Tensor:
        """W_R for each frame: ``[B T, R, H W]`` from the region value ``[B T, D, H, W]``."""
        n, _, h, w = v.shape
        if isinstance(self.region_logits, nn.Parameter):
            if (h, w) != self.static_size:
                raise ValueError(f"region_transform='static' was built for {self.static_size[0]}x"
                                 f"{self.static_size[1]} inputs, got {h}x{w}")
            logits = self.region_logits.repeat(n // self.frames, 1, 1)
        else:
            logits = self.region_logits(v).reshape(n, self.regions, h * w)
        return logits.softmax(dim=-1 if self.region_normalize == "pixels" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B * T, C, H, W]`` -> ``[B * T, C, H, W]`` (or ``[B, C, T, H, W]`` -> the same)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        five = x.dim() == 5
        if five:
            b5, c5, t5, h5, w5 = x.shape
            if t5 != self.frames:
                raise ValueError(f"x [B, C, T, H, W] must have T = frames = {self.frames}, got shape {tuple(x.shape)}")
            x = x.transpose(1, 2).reshape(b5 * t5, c5, h5, w5)
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] % self.frames:
            raise ValueError(f"x must be [B * T, C, H, W] with C = {self.channels} and the batch a multiple of "
                             f"T = {self.frames} (or [B, C, T, H, W]), got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        T, D, R, clips = self.frames, self.inner, self.regions, n // self.frames
        xh = self._spatial(x)

        # pixel GTA: samples are (clip, pixel), time along T
        vp = self.pixel_value(xh).reshape(clips, T, D, h * w).permute(0, 3, 1, 2).reshape(clips * h * w, T, D)
        pixel = mix_groups(self.pixel_attention, vp)
        pixel = pixel.reshape(clips, h * w, T, D).permute(0, 2, 3, 1).reshape(n, D, h, w)

        # region GTA: X~ = W_R V per frame, GTA over (clip, region), back with W_R^T
        vr = self.region_value(xh)
        maps = self._region_maps(vr)  # [n, R, HW]
        tokens = torch.bmm(maps, vr.reshape(n, D, h * w).transpose(1, 2))  # [n, R, D]
        tokens = tokens.reshape(clips, T, R, D).transpose(1, 2).reshape(clips * R, T, D)
        tokens = mix_groups(self.region_attention, tokens).reshape(clips, R, T, D).transpose(1, 2)
        region = torch.bmm(maps.transpose(1, 2), tokens.reshape(n, R, D))  # [n, HW, D]
        region = region.transpose(1, 2).reshape(n, D, h, w)

        y = xh + self.out_norm(self.out(torch.cat([pixel, region], dim=1)))
        if five:
            y = y.reshape(b5, t5, c5, h5, w5).transpose(1, 2)
        return y
