"""One training step of a video clip encoder: full backprop against selective backprop and long memory.

One definition, :class:`Selective`, shared by ``benchmarks/test_selective.py`` and ``python -m fastlocal bench``.
The encoder is a ViT-style video transformer (:class:`ClipEncoder`: tubelet patch embedding,
pre-LN transformer blocks, mean-pooled clip feature); a step encodes the ``N`` clips of one
video, classifies every clip feature with a linear head (cross-entropy against fixed labels),
back-propagates and takes an AdamW step.

Methods (how the clip features are computed):
  ``full``            ``encoder(clips)``: every clip's activations kept for backward
  ``checkpoint``      ``torch.utils.checkpoint`` around each clip (non-reentrant)
  ``selective-<r>``   :func:`fastlocal.selective.selective_encode` at ratio r (ETAD)
  ``tallformer-<r>``  :class:`fastlocal.selective.SelectiveEncoder` with a RAM
                      :class:`~fastlocal.selective.LongMemory` initialised beforehand (TALLFormer)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..selective import LongMemory, SelectiveEncoder, selective_encode
from .suite import Suite, cross_entropy_step

METHODS = (
    "full",
    "checkpoint",
    "selective-0.05",
    "selective-0.1",
    "selective-0.3",
    "selective-1.0",
    "tallformer-0.1",
)
MEMORY_KEY = "video"


@dataclass(frozen=True)
class Config:
    """A video of ``clips`` clips ``[3, frames, size, size]`` and the encoder that reads them.

    ``tubelet`` is the patch embedding's (time, height, width) kernel and stride; ``depth``
    transformer blocks of width ``dim`` with ``heads`` heads and an MLP of ``4 * dim``.
    """

    clips: int = 32
    frames: int = 8
    size: int = 112
    tubelet: tuple[int, int, int] = (2, 16, 16)
    dim: int = 384
    depth: int = 12
    heads: int = 6
    classes: int = 20

    @property
    def tokens(self) -> int:
        t, h, w = self.tubelet
        return (self.frames // t) * (self.size // h) * (self.size // w)

    @property
    def name(self) -> str:
        return f"N{self.clips}-{self.frames}x{self.size}x{self.size}-d{self.dim}-L{self.depth}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**{**data, "tubelet": tuple(data["tubelet"])})


# ViT-S/16 width and depth on 8x112x112 clips (196 tokens): 22.0 M parameters, ~9 GFLOP per clip forward;
# what the benchmark runs (one full-backprop step of 32 clips: ~7.5 s on 2 CPU cores).
CONFIG = Config()


class ClipEncoder(nn.Module):
    """ViT-style video clip encoder: ``[n, 3, frames, size, size]`` clips -> ``[n, dim]`` features."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.embed = nn.Conv3d(3, config.dim, kernel_size=config.tubelet, stride=config.tubelet)
        self.position = nn.Parameter(torch.randn(1, config.tokens, config.dim) * 0.02)
        block = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            4 * config.dim,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(block, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(clips).flatten(2).transpose(1, 2) + self.position
        return self.norm(self.blocks(tokens)).mean(1)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ratio_of(method: str) -> float | None:
    """The sampling ratio in a method's name (``selective-0.1`` -> 0.1), None for the others."""
    _, _, ratio = method.partition("-")
    return float(ratio) if ratio else None


def _features(method: str, encoder: nn.Module, config: Config) -> Callable[[torch.Tensor], torch.Tensor]:
    """``clips -> [N, dim]`` features as ``method`` computes them (with what it builds beforehand)."""
    if method == "full":
        return encoder
    if method == "checkpoint":
        return lambda clips: torch.cat([checkpoint(encoder, clip[None], use_reentrant=False) for clip in clips])
    ratio = ratio_of(method)
    generator = torch.Generator().manual_seed(0)
    if method.startswith("selective-"):
        return lambda clips: selective_encode(encoder, clips, ratio, generator=generator)
    if method.startswith("tallformer-"):
        module = SelectiveEncoder(encoder, ratio, memory=LongMemory("ram"), generator=generator)
        return lambda clips: module(clips, key=MEMORY_KEY)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def make_step(method: str, config: Config = CONFIG, *, warmup: bool = True) -> Callable[[], torch.Tensor]:
    """Build the encoder, head, optimizer and one video's clips; return one training step.

    Args:
        method: one of :data:`METHODS`.
        config: the encoder and the video.
        warmup: run one step before returning (allocator, thread pool, optimizer state; for
            ``tallformer-*`` it also fills the memory: lazy initialisation, the offline pass).
            The benchmark harness warms up by its own rule and passes False.

    Returns:
        A zero-argument callable running forward + backward + ``AdamW.step`` and returning the loss.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(0)
    encoder, head = ClipEncoder(config), nn.Linear(config.dim, config.classes)
    clips = torch.randn(config.clips, 3, config.frames, config.size, config.size)
    labels = torch.randint(config.classes, (config.clips,))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-4)
    features = _features(method, encoder, config)

    step = cross_entropy_step(lambda: head(features(clips)), labels, optimizer)

    if warmup:
        step()
    return step


class Selective(Suite):
    """One training step of a clip encoder: full backprop and per-clip checkpointing against ETAD's
    selective backprop and TALLFormer's long memory."""

    op = "selective"
    config_type = Config
    configs = (CONFIG,)
    # 16 clips of 8x64x64 (64 tokens) through 2 blocks of the same width (one step of the suite's 32 clips
    # of 196 tokens through 12 blocks takes ~7.5 s on 2 cores, per method and round). Enough activations
    # that full backprop's peak is mostly theirs, as at full size: 42 MB against selective-0.1's 6 MB on
    # the 2-core VM. (8 clips of 8x32x32 made parameters and optimizer state most of the peak, and
    # selective-0.1 peaked higher than full backprop: 5.1 against 4.7 MB.)
    quick_configs = (dataclasses.replace(CONFIG, clips=16, size=64, depth=2),)
    tiny_configs = (Config(clips=4, frames=2, size=16, tubelet=(2, 8, 8), dim=16, depth=1, heads=2),)
    methods = METHODS
    modes = ("forward_backward",)
    peers = "full (backprop through every clip) and checkpoint (per-clip activation checkpointing)"
    note = ("selective: forward+backward is one training step (encode the clips, classify, backward, AdamW); "
            "peak MB is the whole step's, parameters and optimizer state included")
    rounds = 3  # pytest-benchmark rounds: a full-size step takes seconds on 2 cores, the median of 3
    memory_timeout_s = 900.0
    # --quick keeps one ratio of each mode: ETAD's and TALLFormer's 0.1.
    quick_methods = ("full", "checkpoint", "selective-0.1", "tallformer-0.1")

    def is_peer(self, method: str) -> bool:
        return method in ("full", "checkpoint")

    def quick_skip(self, method: str, config: Config) -> str | None:
        if method in self.quick_methods:
            return None
        return "--quick runs one sampling ratio (0.1); run without --quick for the others"

    def build(self, method: str, config: Config, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        step = make_step(method, config, warmup=False)
        return lambda: (step(),)
