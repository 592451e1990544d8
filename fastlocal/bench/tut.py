"""One TUT training step: configurations shared by ``benchmarks/test_tut.py`` and the bench CLI.

A step is what :func:`fastlocal.models.tut.train.fit` does per batch: forward with the
boundary rows, the full loss (cross-entropy, smoothing, boundary-aware KL through
``local_attention_probs``), backward and an Adam update, on one video of T frames of
2048-D features, in float32 on the CPU, with every local attention on one fastlocal
backend. Labels are segments of 290 frames (a 50Salads video at 15 fps averages about
5,800 frames and 20 segments), so the boundary loss reads about 2 rows per 290 frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

import fastlocal

from .memory import PeakMemory, peak_memory_mb

SEGMENT = 290


@dataclass(frozen=True)
class StepConfig:
    """One benchmark case: the TUT ``preset`` trained on one video of ``T`` frames on ``backend``."""

    T: int
    backend: str
    preset: str = "salads50"

    @property
    def name(self) -> str:
        return f"{self.preset}-T{self.T}-{self.backend}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# A 50Salads video at 15 fps (about 6.5 minutes) and a 1.85-hour one (100,000 frames at 15 fps).
LENGTHS = (5_800, 100_000)
BACKENDS = ("cpu", "reference")
CONFIGS = tuple(StepConfig(T, backend) for T in LENGTHS for backend in BACKENDS)


def make_step(
    T: int, backend: str, preset: str = "salads50", seed: int = 0, warmup: bool = True
) -> Callable[[], float]:
    """Build the model, optimizer and one video's inputs; return a call running one training
    step (returns the loss). With ``warmup``, one step runs first (Adam state, thread pools),
    so a measurement sees the steady state."""
    from fastlocal.models.tut import TUT, TUTConfig, compute_loss

    torch.manual_seed(seed)
    config = TUTConfig.preset(preset)
    model = TUT(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.adam_betas,
                                 weight_decay=config.weight_decay)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(1, T, config.input_dim, generator=g)
    segments = torch.randint(0, config.num_classes, ((T + SEGMENT - 1) // SEGMENT,), generator=g)
    labels = segments.repeat_interleave(SEGMENT)[:T].unsqueeze(0)

    def step() -> float:
        with fastlocal.use_backend(backend):
            optimizer.zero_grad(set_to_none=True)
            loss, _ = compute_loss(model, features, labels)
            loss.total.backward()
            optimizer.step()
        return float(loss.total.detach())

    if warmup:
        step()
    return step


def step_memory(config: StepConfig, timeout: float = 1800.0) -> PeakMemory:
    """Peak extra resident memory of one step (after a warm-up step) in a fresh process."""
    spec = {"factory": "fastlocal.bench.tut:make_step", "kwargs": config.to_dict()}
    return peak_memory_mb(spec, timeout=timeout)
