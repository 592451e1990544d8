"""The non-local block (Wang et al., "Non-local Neural Networks", CVPR 2018), embedded Gaussian, as the
GTA paper's "+NL" baseline (Table 1) inserts it into R2D-50."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastlocal import _validate as check

__all__ = ["NonLocalBlock"]


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block over all ``T x H x W`` positions of a clip.

    ``z = x + BN(W_z softmax(theta(x) phi(x)^T / sqrt(D)) g(x))``: 1x1 convolutions ``theta``, ``phi``,
    ``g`` (C -> D = C / ``reduction``, with biases), ``phi`` and ``g`` max-pooled ``spatial_pool`` x
    ``spatial_pool`` in space after the projection, ``out`` (D -> C, bias) and a BatchNorm whose scale
    starts at zero (the block starts as the identity), as Wang et al. and PySlowFast's ``Nonlocal``
    (which scales the logits by ``D ** -0.5``, as ``scaled_dot_product_attention`` does).
    Parameters ``2 C^2 + 4.5 C`` at ``reduction`` 2: five blocks in R2D-50 (after blocks 1, 3 of res3
    and 1, 3, 5 of res4) add 7,358,464 and 28.40 G multiply-adds at 8 x 224^2 (GTA Table 1: 61.1 G).

    Input and output ``[B * T, C, H, W]`` (frames folded into the batch, clip-major, as a 2-D ResNet
    over a clip) with T = ``frames``.
    """

    def __init__(self, channels: int, frames: int, *, reduction: int = 2, spatial_pool: int = 2) -> None:
        super().__init__()
        self.channels = check.integer("channels", channels, minimum=1)
        self.frames = check.integer("frames", frames, minimum=1)
        self.spatial_pool = check.integer("spatial_pool", spatial_pool, minimum=1)
        inner = channels // check.integer("reduction", reduction, minimum=1)
        if inner < 1:
            raise ValueError(f"channels // reduction must be >= 1, got {channels} // {reduction}")
        self.inner = inner
        self.theta = nn.Conv2d(channels, inner, 1)
        self.phi = nn.Conv2d(channels, inner, 1)
        self.g = nn.Conv2d(channels, inner, 1)
        self.out = nn.Conv2d(inner, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B * T, C, H, W]`` -> the same shape."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] % self.frames:
            raise ValueError(f"x must be [B * T, C, H, W] with C = {self.channels} and the batch a multiple of "
                             f"T = {self.frames}, got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        n, _, h, w = x.shape
        T, D, clips = self.frames, self.inner, n // self.frames
        k, v = self.phi(x), self.g(x)
        if self.spatial_pool > 1:
            k = F.max_pool2d(k, self.spatial_pool, ceil_mode=True)
            v = F.max_pool2d(v, self.spatial_pool, ceil_mode=True)

        def tokens(t: torch.Tensor) -> torch.Tensor:  # [B T, D, h, w] -> [B, 1, T h w, D]
            return t.reshape(clips, T, D, -1).permute(0, 1, 3, 2).reshape(clips, 1, -1, D)

        a = F.scaled_dot_product_attention(tokens(self.theta(x)), tokens(k), tokens(v))
        a = a.reshape(clips, T, h * w, D).permute(0, 1, 3, 2).reshape(n, D, h, w)
        return x + self.norm(self.out(a))
