"""pytest-benchmark: one training step of a video clip encoder, full backprop against selective backprop.

:class:`fastlocal.bench.selective.Selective`, the suite ``python -m fastlocal bench`` runs: full
backprop, per-clip checkpointing, ETAD's selective backprop at four ratios and TALLFormer's
long memory on :data:`fastlocal.bench.selective.CONFIG`, measured by ``conftest.py``'s
harness: the median of 3 steps (forward, backward, AdamW) and the peak memory of one step
in a fresh process; ``extra_info`` also holds both as a fraction of full backprop's. The
run ends with one table.

Run with ``pytest benchmarks/test_selective.py --benchmark-only``.
"""

from __future__ import annotations

from fastlocal.bench.selective import ClipEncoder, Selective, parameter_count
from fastlocal.bench.suite import Result

SUITE = Selective()
_FULL: dict[object, Result] = {}  # config -> full backprop's result, for the fractions


def test_selective_training_step(benchmark, run_case, config, mode: str, method: str) -> None:
    result = run_case(SUITE, method, config, mode)
    if method == "full":
        _FULL[config] = result
    full = _FULL.get(config)
    benchmark.extra_info["parameters"] = parameter_count(ClipEncoder(config))
    if full is not None and full.seconds and result.seconds is not None:
        benchmark.extra_info["time_vs_full"] = result.seconds / full.seconds
    if full is not None and full.mb and result.mb is not None:
        benchmark.extra_info["peak_vs_full"] = result.mb / full.mb
