"""pytest-benchmark: one training step of a video clip encoder, full backprop against selective backprop.

For every method of :data:`fastlocal.bench.selective.METHODS` (full backprop, per-clip
checkpointing, ETAD's selective backprop at four ratios, TALLFormer's long memory) on
:data:`fastlocal.bench.selective.CONFIG`: the median time of one step (forward, backward,
AdamW) and the peak memory of one step measured in a fresh process, both also as a
fraction of full backprop's in ``extra_info``. The run ends with one table.

Run with ``pytest benchmarks/test_selective.py --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch

from fastlocal.bench.selective import (
    BASELINE,
    CONFIG,
    METHODS,
    ClipEncoder,
    Result,
    format_table,
    make_step,
    parameter_count,
    peak_memory,
)

ROUNDS = 3  # a step takes seconds on 2 cores: the median of 3


class _Summary:
    """Plugin printing the collected results as one table in the terminal summary."""

    def __init__(self) -> None:
        self.rows: dict[str, Result] = {}

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.rows:
            terminalreporter.write_sep("-", f"selective backprop, one training step, {CONFIG.name}")
            terminalreporter.write_line(format_table(list(self.rows.values())))


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> dict[str, Result]:
    """Results by method, printed as one table at the end of the run."""
    summary = _Summary()
    request.config.pluginmanager.register(summary)
    return summary.rows


@pytest.mark.parametrize("method", METHODS)
def test_selective_training_step(benchmark, method: str, results: dict[str, Result]) -> None:
    benchmark.group = f"selective training step {CONFIG.name}"
    peak = peak_memory(method, CONFIG)
    step = make_step(method, CONFIG.to_dict())
    loss = benchmark.pedantic(step, rounds=ROUNDS, iterations=1)

    seconds = benchmark.stats.stats.median if benchmark.stats is not None else None  # None: --benchmark-disable
    result = results[method] = Result(method, seconds, peak.mb)
    time_vs_full, peak_vs_full = result.versus(results.get(BASELINE))
    benchmark.extra_info.update(
        method=method,
        config=CONFIG.to_dict(),
        config_name=CONFIG.name,
        rounds=ROUNDS,
        parameters=parameter_count(ClipEncoder(CONFIG)),
        threads=torch.get_num_threads(),
        peak_mb=peak.mb,
        time_vs_full=time_vs_full,
        peak_vs_full=peak_vs_full,
    )
    if peak.mb is None:
        benchmark.extra_info["peak_mb_reason"] = peak.reason
    assert torch.isfinite(loss)
