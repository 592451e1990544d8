"""One end-to-end ETAD-style training step: full backprop against checkpointing and encoder gradient sampling.

One definition, :class:`EncoderSampling`, used by ``benchmarks/test_encoder_sampling.py``. The
paper's Table 3 compares, for an R(2+1)D trained end to end on a video's snippets, pre-extracted
features, EGS at 100 %, 30 % and 10 %; here the peers are what a user would otherwise run. A step
encodes the ``snippets`` snippets of ``batch`` videos with a small R(2+1)D in ETAD's setting
(:func:`fastlocal.models.backbones.r2plus1d_18`'s architecture at reduced widths and input;
early stages frozen, BatchNorm in eval mode; see :data:`CONFIG`), runs a small temporal head on
``[B, C, T]`` (standing in for the detector, so the encoder dominates), back-propagates, and
takes one AdamW step over the two learning-rate groups
(:func:`fastlocal.models.backbones.parameter_groups`).

Methods (how the snippet features are computed; all encode 4 snippets per backbone call, ETAD's chunk):
  ``full``        the backbone with autograd on every chunk: every snippet's activations kept for backward
  ``checkpoint``  ``torch.utils.checkpoint`` (non-reentrant) around each chunk
  ``egs-<r>``     :class:`fastlocal.models.backbones.SnippetEncoder` at ratio r (ETAD's released counts:
                  ``4 * int(T * r / 4 + 0.99)`` snippets per video re-encoded in backward)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..models.backbones import R2Plus1D, R2Plus1DConfig, SnippetEncoder, parameter_groups
from ..models.backbones.snippets import CHUNK_SIZE
from .selective import parameter_count, ratio_of
from .suite import Suite, cross_entropy_step

METHODS = ("full", "checkpoint", "egs-0.1", "egs-0.3")


@dataclass(frozen=True)
class Config:
    """``batch`` videos of ``snippets`` snippets ``[3, frames, size, size]``, an R(2+1)D with ``layers`` blocks
    of ``widths`` channels (stem ``stem_width``), the first ``frozen_stages`` stages frozen, and a head of
    ``head_width`` channels over ``classes`` snippet classes."""

    snippets: int = 64
    batch: int = 1
    frames: int = 8
    size: int = 32
    layers: tuple[int, int, int, int] = (1, 1, 1, 1)
    widths: tuple[int, int, int, int] = (4, 16, 32, 64)
    stem_width: int = 3
    frozen_stages: int = 1
    head_width: int = 64
    classes: int = 10

    @property
    def name(self) -> str:
        return (f"B{self.batch}xT{self.snippets}-{self.frames}x{self.size}x{self.size}"
                f"-w{self.widths[-1]}-L{''.join(map(str, self.layers))}")

    def backbone(self) -> R2Plus1DConfig:
        return R2Plus1DConfig(layers=self.layers, widths=self.widths, stem_width=self.stem_width,
                              frozen_stages=self.frozen_stages, norm_eval=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**{**data, "layers": tuple(data["layers"]), "widths": tuple(data["widths"])})


# 64 snippets of 8x32x32 through an R(2+1)D of widths 4-16-32-64, one block per stage (EGS re-encodes 8 snippets
# at 0.1 and 20 at 0.3): one full-backprop step took 0.12 s on the 2-core VM, the whole pytest-benchmark run 39 s
# (32 snippets of 8x56x56 at widths 16-128 took 8-17 s a step on the loaded VM). Stem and layer1 frozen, not
# ETAD's stem to layer2: at 32x32 the released split leaves almost no activations to the trainable stages, which
# layer3-4 hold at ETAD's 112x112 (4x32x32 frames, widths 8-64, frozen_stages=2: full backprop peaked at 1.4 MB
# and EGS-0.1 at 1.6 MB, both noise; with frozen_stages=1 here full backprop peaks at 15 MB, EGS-0.1 at 2.4 MB).
CONFIG = Config()


class Head(nn.Module):
    """Temporal head on ``[B, C, T]`` features -> ``[B, classes, T]`` logits (stands in for the detector)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(config.widths[-1], config.head_width, 3, padding=1), nn.ReLU(),
                                 nn.Conv1d(config.head_width, config.classes, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def _features(method: str, backbone: R2Plus1D) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[B, T, 3, L, H, W] -> [B, C, T]`` as ``method`` computes them."""
    ratio = ratio_of(method)
    if method.startswith("egs-"):
        return SnippetEncoder(backbone, ratio, generator=torch.Generator().manual_seed(0))
    if method not in ("full", "checkpoint"):
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    def encode(chunk: torch.Tensor) -> torch.Tensor:
        if method == "checkpoint":
            return checkpoint(backbone, chunk, use_reentrant=False)
        return backbone(chunk)

    return lambda snippets: torch.stack([torch.cat([encode(c) for c in video.split(CHUNK_SIZE)])
                                         for video in snippets]).transpose(1, 2)


def make_step(method: str, config: Config = CONFIG, *, warmup: bool = True) -> Callable[[], torch.Tensor]:
    """Build the backbone, head, optimizer and the videos' snippets; return one training step.

    Args:
        method: one of :data:`METHODS`.
        config: the videos and the networks.
        warmup: run one step before returning (allocator, thread pool, optimizer state). The
            benchmark harness warms up by its own rule and passes False.
    Returns:
        A zero-argument callable running forward + backward + ``AdamW.step`` and returning the loss.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(0)
    backbone, head = R2Plus1D(config.backbone()), Head(config)
    snippets = torch.randn(config.batch, config.snippets, 3, config.frames, config.size, config.size)
    labels = torch.randint(config.classes, (config.batch, config.snippets))
    features = _features(method, backbone)
    # ETAD's released learning rates and weight decay; BN affine parameters frozen (parameter_groups' default)
    optimizer = torch.optim.AdamW(parameter_groups(head, backbone, detector_lr=5e-4, backbone_lr=5e-7),
                                  weight_decay=1e-4)

    step = cross_entropy_step(lambda: head(features(snippets)), labels, optimizer)

    if warmup:
        step()
    return step


class EncoderSampling(Suite):
    """One end-to-end training step of an R(2+1)D snippet encoder and a temporal head: full backprop and
    per-chunk checkpointing against ETAD's encoder gradient sampling at 10 % and 30 %."""

    op = "encoder_sampling"
    config_type = Config
    configs = (CONFIG,)
    quick_configs = (CONFIG,)
    tiny_configs = (Config(snippets=8, frames=4, size=16, widths=(4, 8, 8, 8), stem_width=3, head_width=8),)
    methods = METHODS
    modes = ("forward_backward",)
    peers = "full (backprop through every snippet) and checkpoint (per-chunk activation checkpointing)"
    note = ("encoder_sampling: forward+backward is one training step (encode the snippets, head, backward, AdamW); "
            "peak MB is the whole step's, parameters and optimizer state included")
    rounds = 3

    def is_peer(self, method: str) -> bool:
        return method in ("full", "checkpoint")

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        step = make_step(method, config, warmup=False)
        return lambda: (step(),)


def backbone_parameters(config: Config) -> int:
    """Parameters of the benchmark's backbone (for the benchmark's ``extra_info``)."""
    return parameter_count(R2Plus1D(config.backbone()))


__all__ = ["CONFIG", "METHODS", "Config", "EncoderSampling", "backbone_parameters", "make_step"]
