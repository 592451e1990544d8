"""The GTA video classifier: a 2-D ResNet-50 over the frames of a clip with GTA (or non-local) blocks
inserted, temporal average consensus and a linear classifier."""

from __future__ import annotations

import os

import torch
from torch import nn

from fastlocal.nn import GlobalTemporalAttention

from ..backbones.resnet import ResNet2D, load_resnet
from .config import GTAConfig
from .non_local import NonLocalBlock

__all__ = ["GTA", "TemporalMaxPool", "load_imagenet"]


class TemporalMaxPool(nn.Module):
    """Max over ``factor`` consecutive frames (PySlowFast C2D's ``pool1`` [factor, 1, 1]):
    ``[B * T, C, H, W]`` -> ``[B * T / factor, C, H, W]``."""

    def __init__(self, frames: int, factor: int) -> None:
        super().__init__()
        self.frames, self.factor = frames, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        clips = n // self.frames
        x = x.reshape(clips, self.frames // self.factor, self.factor, c, h, w).amax(dim=2)
        return x.reshape(clips * (self.frames // self.factor), c, h, w)


class GTA(nn.Module):
    """R2D-50 + GTA: ``video [B, 3, T, H, W]`` -> logits ``[B, num_classes]``.

    The T frames run through :class:`~fastlocal.models.backbones.ResNet2D` (``backbone``, torchvision's
    ``resnet50`` layout: an ImageNet checkpoint loads with :func:`load_imagenet`) as a batch of B T
    images; after each of ``config.positions`` the feature map ``[B T', C, H', W']`` goes through a
    :class:`~fastlocal.nn.GlobalTemporalAttention` (or :class:`NonLocalBlock`) held in ``blocks`` under
    the position's name with "." replaced by "_" (``blocks.layer2_1``...). The spatially pooled frame
    features are averaged over time (TSN's average consensus; the same logits as averaging the frame
    scores, the classifier being linear), then dropout and ``fc``. C2D (``time_pool`` 2) max-pools
    pairs of frames after res2. SlowFast variants are not part of this work.

    Measured (``FlopCounterMode``, one 8 x 224^2 clip): ``r2d50-gta`` 31,261,934 parameters and 50.14 G
    multiply-adds (paper Table 1: 31.2 M, 50.2 GFLOPs); ``r2d50`` 23,864,558 and 32.70 G (23.9 M, 32.7);
    ``r2d50-nl`` 31,223,022 and 61.10 G (31.2 M, 61.1).
    """

    def __init__(self, config: GTAConfig | None = None) -> None:
        super().__init__()
        config = GTAConfig() if config is None else config
        if not isinstance(config, GTAConfig):
            raise TypeError(f"config must be a GTAConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = ResNet2D(config.backbone)
        self.blocks = nn.ModuleDict()
        if config.block != "none":
            for position in config.positions:
                self.blocks[position.replace(".", "_")] = self._block(position)
        self.time_pool = TemporalMaxPool(config.frames, config.time_pool) if config.time_pool > 1 else None
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(self.backbone.out_channels, config.num_classes)

    def _block(self, position: str) -> nn.Module:
        c = self.config
        channels, frames = c.stage_channels(position), c.stage_frames(position)
        if c.block == "nonlocal":
            return NonLocalBlock(channels, frames, reduction=c.inner_reduction, spatial_pool=c.spatial_pool)
        return GlobalTemporalAttention(
            channels, frames, groups=c.groups, reduction=c.inner_reduction, regions=c.regions,
            spatial_heads=c.spatial_heads, spatial_pool=c.spatial_pool, region_transform=c.region_transform,
            region_normalize=c.region_normalize, norm=c.norm,
            static_size=c.stage_size(position) if c.region_transform == "static" else None)

    def temporal_blocks(self) -> dict[str, nn.Module]:
        """The inserted blocks by position (``"layer2.1"`` -> module), in forward order."""
        return {name.replace("_", "."): block for name, block in self.blocks.items()}

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes]`` of ``video`` ``[B, 3, T, H, W]`` (T = ``config.frames``, normalised frames)."""
        if not isinstance(video, torch.Tensor):
            raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] != self.config.frames:
            raise ValueError(f"video must be [B, 3, T = {self.config.frames}, H, W], got shape {tuple(video.shape)}")
        if not video.is_floating_point():
            raise TypeError(f"video must be floating point (normalised frames), got {video.dtype}")
        b, _, t, h, w = video.shape
        images = video.transpose(1, 2).reshape(b * t, 3, h, w)
        after = {"layer1": self.time_pool} if self.time_pool is not None else None
        features = self.backbone(images, inserts=self.temporal_blocks(), after_stage=after)
        features = features.reshape(b, -1, features.shape[-1]).mean(dim=1)  # average consensus over frames
        return self.fc(self.dropout(features))


def load_imagenet(model: GTA, path: str | os.PathLike, *, prefix: str = "") -> None:
    """Load a local torchvision ``resnet50`` ImageNet checkpoint into ``model.backbone``, strictly (its ``fc``
    is dropped; the GTA blocks and the classifier keep their initialisation). See
    :func:`~fastlocal.models.backbones.load_resnet`."""
    if not isinstance(model, GTA):
        raise TypeError(f"model must be a GTA, got {type(model).__name__}")
    load_resnet(model.backbone, path, prefix=prefix)
