"""pytest-benchmark: one TUT training step (50Salads preset) on the ``cpu`` vs ``reference`` backend.

A step is what TUT's training does per batch: forward with the boundary rows, the full loss
(cross-entropy, smoothing, boundary-aware KL through ``local_attention_probs``), backward and
an Adam update with the preset's training settings, on one video of T frames of 2048-D
features, in float32 on the CPU, with every local attention on one fastlocal backend.
Labels are segments of 290 frames (a 50Salads video at 15 fps averages about 5,800 frames
and 20 segments), so the boundary loss reads about 2 rows per 290 frames.

For every case (T = 5,800 and 100,000 frames, each backend): the median time of a step
after a warm-up step, and in ``extra_info`` the peak extra resident memory of one step
measured in a fresh process. T = 100,000 must fit in 24 GB on the ``cpu`` backend.

The model lives in ``fastlocal.models``, which the library's benchmark package does not
import: this benchmark is defined here, whole.

Run with ``pytest benchmarks/test_tut.py --benchmark-only -q`` (``-k T5800`` for the short cases only).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

import pytest
import torch

import fastlocal
from fastlocal.bench.memory import PeakMemory, peak_memory_mb

SEGMENT = 290
LIMIT_MB = 24 * 1024


@dataclass(frozen=True)
class StepConfig:
    """One benchmark case: the TUT ``preset`` trained on one video of ``T`` frames on ``backend``."""

    T: int
    backend: str
    preset: str = "salads50"

    @property
    def name(self) -> str:
        return f"{self.preset}-T{self.T}-{self.backend}"


# A 50Salads video at 15 fps (about 6.5 minutes) and a 1.85-hour one (100,000 frames at 15 fps).
LENGTHS = (5_800, 100_000)
BACKENDS = ("cpu", "reference")
CONFIGS = tuple(StepConfig(T, backend) for T in LENGTHS for backend in BACKENDS)


def make_step(T: int, backend: str, preset: str = "salads50", seed: int = 0, warmup: bool = True
              ) -> Callable[[], float]:
    """Build the model, optimizer and one video's inputs; return a call running one training
    step (returns the loss). With ``warmup``, one step runs first (Adam state, thread pools),
    so a measurement sees the steady state. Also the factory of the fresh memory process."""
    from fastlocal.models.tut import PRESETS, TUT
    from fastlocal.models.tut.losses import compute_loss

    torch.manual_seed(seed)
    config, train = PRESETS[preset].model, PRESETS[preset].train
    model = TUT(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=train.betas, weight_decay=train.weight_decay)
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
    spec = {"factory": f"{os.path.abspath(__file__)}:make_step", "kwargs": asdict(config)}
    return peak_memory_mb(spec, timeout=timeout)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_tut_training_step(benchmark, config: StepConfig) -> None:
    benchmark.group = f"TUT {config.preset} training step T={config.T}"
    peak = step_memory(config)
    step = make_step(config.T, config.backend, config.preset)  # includes one warm-up step
    rounds = 3 if config.T <= 10_000 else 1
    loss = benchmark.pedantic(step, rounds=rounds, iterations=1)
    benchmark.extra_info.update(
        config=asdict(config), rounds=rounds, peak_mb=peak.mb, peak_reason=peak.reason, loss=loss,
        threads=torch.get_num_threads(), load_average=os.getloadavg(),
    )
    assert peak.mb is not None, peak.reason
    if config.backend == "cpu":
        assert peak.mb < LIMIT_MB, f"one step at T={config.T} needs {peak.mb:.0f} MB (limit {LIMIT_MB} MB)"
