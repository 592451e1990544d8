"""One harness for every op's benchmark suite, the GEMM yardstick and a side-by-side table per op.

Each ``benchmarks/test_<op>.py`` names its op's :class:`~fastlocal.bench.suite.Suite` (``SUITE``,
the definition ``python -m fastlocal bench`` also runs) and takes ``config``, ``mode`` and
``method``: :func:`pytest_generate_tests` parametrises it over the suite's CPU and CUDA
configurations (CUDA ones skipped without a GPU), and the :func:`run_case` fixture measures
one case as the command does: the same skip reasons, the peak memory of one call, the same
warm-up rule (:func:`fastlocal.bench.suite.warm_up`), then pytest-benchmark's timed rounds.
The run ends with one table per op (median ms, peak MB, speed-up and memory against the
best peer, GFLOP/s against ``torch.mm``).

Run with ``pytest benchmarks/ --benchmark-only`` (``pytest`` alone collects only ``tests/``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import pytest
import torch

from fastlocal.bench.suite import Result, Suite, gemm_gflops, rounds_for

_RESULTS = pytest.StashKey[dict[str, tuple[Suite, list[Result]]]]()
_GEMM = pytest.StashKey[float]()
_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every (configuration, mode, method) of the test module's ``SUITE``, CPU and CUDA configurations."""
    suite: Suite | None = getattr(metafunc.module, "SUITE", None)
    if suite is None or not {"config", "mode", "method"} <= set(metafunc.fixturenames):
        return
    metafunc.parametrize(("config", "mode", "method"), [
        pytest.param(config, mode, method, id=f"{config.name}-{mode}-{method}",
                     marks=[_NO_GPU] if suite.device(config) == "cuda" else [])
        for config, mode, method in itertools.product(suite.configs + suite.gpu_configs, suite.modes, suite.methods)
    ])


@pytest.fixture(scope="session")
def gemm(request: pytest.FixtureRequest) -> float:
    """float32 ``torch.mm`` GFLOP/s on this machine, measured once per session."""
    request.config.stash[_GEMM] = gemm_gflops()
    return request.config.stash[_GEMM]


@functools.cache
def _cuda_bf16_gemm() -> float:
    """The GPU yardstick: bf16 ``torch.mm`` GFLOP/s, measured once."""
    return gemm_gflops(n=8192, device="cuda", dtype=torch.bfloat16)


@pytest.fixture
def run_case(benchmark, request: pytest.FixtureRequest) -> Callable[[Suite, str, object, str], Result]:
    """``run_case(suite, method, config, mode)``: skip with the reason, or measure one case.

    Records in ``extra_info`` the peak memory of one call (CPU: a fresh process), the rounds,
    useful GFLOP/s and the ``torch.mm`` rate where the configuration counts FLOP; checks the
    outputs are finite; returns the :class:`~fastlocal.bench.suite.Result` (also kept for the
    table at the end of the run).
    """

    def run(suite: Suite, method: str, config: object, mode: str) -> Result:
        benchmark.group = f"{suite.op} {config.name} {mode}"
        rows = request.config.stash.setdefault(_RESULTS, {}).setdefault(suite.op, (suite, []))[1]
        reason = suite.skip_reason(method, config, mode)
        if reason:
            rows.append(Result(method, config, mode, skipped=reason))
            pytest.skip(f"{method}: {reason}")

        peak = suite.peak_memory(method, config, mode)
        call = suite.call(method, config, mode)
        steady = suite.warm_up(call)  # compilation, lazy imports, fresh memory: out of the timings
        rounds = suite.rounds or rounds_for(steady)
        outputs = benchmark.pedantic(call, rounds=rounds, iterations=1)

        seconds = benchmark.stats.stats.median if benchmark.stats is not None else None  # None: --benchmark-disable
        result = Result(method, config, mode, seconds, peak)
        rows.append(result)
        gemm = None
        if result.useful_gflop is not None:
            gemm = request.getfixturevalue("gemm") if suite.device(config) == "cpu" else _cuda_bf16_gemm()
        benchmark.extra_info.update(
            method=method, config=config.name, shape=config.to_dict(), mode=mode, rounds=rounds,
            threads=torch.get_num_threads(), peak_mb=peak.mb, useful_gflop=result.useful_gflop,
            gflops=result.gflops, gemm_gflops=gemm,
        )
        if peak.mb is None:
            benchmark.extra_info["peak_mb_reason"] = peak.reason
        assert all(torch.isfinite(t).all() for t in outputs)
        return result

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    gemm = config.stash.get(_GEMM, None)
    for op, (suite, results) in config.stash.get(_RESULTS, {}).items():
        if not any(r.status == "ok" for r in results):
            continue
        title = f"{op}: median ms, peak MB (fresh process)"
        if gemm is not None:
            title += f"; torch.mm float32 2048^3: {gemm:.1f} GFLOP/s"
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(suite.table(results, gemm))
