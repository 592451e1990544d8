"""Session fixtures for the benchmark suites: the GEMM yardstick and a side-by-side summary table.

Run with ``pytest benchmarks/ --benchmark-only`` (``pytest`` alone collects only ``tests/``).
"""

from __future__ import annotations

import pytest

from fastlocal.bench.local_attention import Result, format_table, gemm_gflops

_RESULTS = pytest.StashKey[list[Result]]()
_GEMM = pytest.StashKey[float]()


@pytest.fixture(scope="session")
def gemm(request: pytest.FixtureRequest) -> float:
    """float32 ``torch.mm`` GFLOP/s on this machine, measured once per session."""
    request.config.stash[_GEMM] = gemm_gflops()
    return request.config.stash[_GEMM]


@pytest.fixture(scope="session")
def local_attention_results(request: pytest.FixtureRequest) -> list[Result]:
    """Rows the local_attention suite appends to; printed as one table at the end of the run."""
    return request.config.stash.setdefault(_RESULTS, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS, None)
    if results:
        gemm = config.stash.get(_GEMM, None)
        title = "local_attention: median ms, peak MB (fresh process), useful GFLOP/s"
        if gemm is not None:
            title += f"; torch.mm float32 2048^3: {gemm:.1f} GFLOP/s"
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(format_table(results, gemm))
