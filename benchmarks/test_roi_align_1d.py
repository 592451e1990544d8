"""pytest-benchmark: roi_align_1d against the unfused PyTorch paths, speed and peak memory.

For every configuration in :data:`fastlocal.bench.roi_align_1d.CONFIGS` (ETAD's RoI layer,
G-TAD's dense proposal map), every method in ``METHODS`` (fastlocal backends, the plain
PyTorch gather) and both modes. Each test records in ``extra_info`` the peak memory of
one call measured in a fresh process; unavailable methods are skipped with the reason.

Run with ``pytest benchmarks/test_roi_align_1d.py --benchmark-only -q``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fastlocal.bench.roi_align_1d import CONFIGS, METHODS, MODES, Config, peak_memory, warm_up
from fastlocal.bench.suite import rounds_for

CASES = [
    pytest.param(config, mode, method, id=f"{config.label}-{mode}-{method}")
    for config, mode, method in itertools.product(CONFIGS, MODES, METHODS)
]


@pytest.mark.parametrize(("config", "mode", "method_name"), CASES)
def test_roi_align_1d(benchmark, config: Config, mode: str, method_name: str) -> None:
    method = METHODS[method_name]
    benchmark.group = f"roi_align_1d {config.name} {mode}"
    reason = method.unavailable(config, mode)
    if reason:
        pytest.skip(reason)

    peak = peak_memory(method_name, config, mode)
    x = method.make_inputs(config, mode)
    rounds = rounds_for(warm_up(method, x, mode))
    outputs = benchmark.pedantic(method.run, args=(x, mode), rounds=rounds, iterations=1)

    benchmark.extra_info.update(method=method_name, config=config.name, mode=mode, rounds=rounds,
                                num_rois=config.num_rois, threads=torch.get_num_threads(), peak_mb=peak.mb)
    if peak.mb is None:
        benchmark.extra_info["peak_mb_reason"] = peak.reason
    assert all(torch.isfinite(t).all() for t in outputs)
