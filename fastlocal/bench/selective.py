"""One training step of a video clip encoder: full backprop against selective backprop and long memory.

One definition shared by ``benchmarks/test_selective.py`` and ``python -m fastlocal bench``.
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

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..selective import LongMemory, SelectiveEncoder, selective_encode
from .memory import PeakMemory, peak_memory_mb

METHODS = (
    "full",
    "checkpoint",
    "selective-0.05",
    "selective-0.1",
    "selective-0.3",
    "selective-1.0",
    "tallformer-0.1",
)
BASELINE = "full"
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


def make_step(method: str, config: dict[str, Any] | None = None) -> Callable[[], torch.Tensor]:
    """Build the encoder, head, optimizer and one video's clips; warm up; return one training step.

    Args:
        method: one of :data:`METHODS`.
        config: :meth:`Config.to_dict` form (default :data:`CONFIG`), JSON-friendly for
            :func:`fastlocal.bench.memory.peak_memory_mb`.

    One step runs before returning (allocator, thread pool, optimizer state); for
    ``tallformer-*`` it also fills the memory (lazy initialisation: the offline pass).

    Returns:
        A zero-argument callable running forward + backward + ``AdamW.step`` and returning the loss.
    """
    cfg = CONFIG if config is None else Config.from_dict(config)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(0)
    encoder, head = ClipEncoder(cfg), nn.Linear(cfg.dim, cfg.classes)
    clips = torch.randn(cfg.clips, 3, cfg.frames, cfg.size, cfg.size)
    labels = torch.randint(cfg.classes, (cfg.clips,))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-4)
    features = _features(method, encoder, cfg)

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(features(clips)), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    step()
    return step


def peak_memory(method: str, config: Config = CONFIG, timeout: float = 900.0) -> PeakMemory:
    """Peak extra resident memory of one warm training step of ``method``, in a fresh process."""
    spec = {"factory": f"{__name__}:make_step", "kwargs": {"method": method, "config": config.to_dict()}}
    return peak_memory_mb(spec, timeout=timeout)


@dataclass
class Result:
    """One method's median step time (s) and peak memory (MB); None when not measured."""

    method: str
    seconds: float | None
    peak_mb: float | None

    def versus(self, baseline: Result | None) -> tuple[float | None, float | None]:
        """(time, peak memory) as fractions of ``baseline``'s."""

        def fraction(a: float | None, b: float | None) -> float | None:
            return None if a is None or not b else a / b

        if baseline is None:
            return None, None
        return fraction(self.seconds, baseline.seconds), fraction(self.peak_mb, baseline.peak_mb)


def format_table(results: list[Result]) -> str:
    """Markdown table: method, step time, peak MB and both as a percentage of full backprop."""
    baseline = next((r for r in results if r.method == BASELINE), None)

    def cell(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.0f}%"

    lines = ["| method | step s | peak MB | time vs full | peak vs full |", "|---|---:|---:|---:|---:|"]
    for r in results:
        time_ratio, peak_ratio = r.versus(baseline)
        lines.append(
            f"| {r.method} | {cell(r.seconds, '.2f')} | {cell(r.peak_mb, '.0f')} | "
            f"{percent(time_ratio)} | {percent(peak_ratio)} |"
        )
    return "\n".join(lines)
