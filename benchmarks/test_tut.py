"""pytest-benchmark: one TUT training step (50Salads preset) on the ``cpu`` vs ``reference`` backend.

For every :data:`fastlocal.bench.tut.CONFIGS` case (T = 5,800 and 100,000 frames): the
median time of a step (forward, loss with the boundary rows, backward, Adam) after a
warm-up step, and in ``extra_info`` the peak extra resident memory of one step measured in
a fresh process. T = 100,000 must fit in 24 GB on the ``cpu`` backend.

Run with ``pytest benchmarks/test_tut.py --benchmark-only -q``
(``-k T5800`` for the short cases only).
"""

from __future__ import annotations

import os

import pytest
import torch

from fastlocal.bench.tut import CONFIGS, StepConfig, make_step, step_memory

LIMIT_MB = 24 * 1024


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_tut_training_step(benchmark, config: StepConfig) -> None:
    benchmark.group = f"TUT {config.preset} training step T={config.T}"
    peak = step_memory(config)
    step = make_step(config.T, config.backend, config.preset)  # includes one warm-up step
    rounds = 3 if config.T <= 10_000 else 1
    loss = benchmark.pedantic(step, rounds=rounds, iterations=1)
    benchmark.extra_info.update(
        config=config.to_dict(), rounds=rounds, peak_mb=peak.mb, peak_reason=peak.reason, loss=loss,
        threads=torch.get_num_threads(), load_average=os.getloadavg(),
    )
    assert peak.mb is not None, peak.reason
    if config.backend == "cpu":
        assert peak.mb < LIMIT_MB, f"one step at T={config.T} needs {peak.mb:.0f} MB (limit {LIMIT_MB} MB)"
