"""pytest-benchmark: fused topk_std_attention against the unfused PyTorch path, speed and peak memory.

For every configuration in :data:`fastlocal.bench.topk_std.CONFIGS` (VidTr's C-VidTr-S and
C-VidTr-L temporal attention), both modes and every backend: ``fastlocal[reference]`` is
the unfused path, ``cpu`` / ``triton`` / ``cuda`` the fused kernels. Each test records in
``extra_info`` the peak memory of one call measured in a fresh process (CPU backends);
unavailable backends are skipped with the reason.

Run with ``pytest benchmarks/test_topk_std.py --benchmark-only -q``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fastlocal.bench.suite import rounds_for
from fastlocal.bench.topk_std import (
    BACKENDS,
    CONFIGS,
    MODES,
    Config,
    make_inputs,
    method_name,
    peak_memory,
    timed_call,
    unavailable,
    warm_up,
)

CASES = [
    pytest.param(config, mode, backend, id=f"{config.name}-{mode}-{backend}")
    for config, mode, backend in itertools.product(CONFIGS, MODES, BACKENDS)
]


@pytest.mark.parametrize(("config", "mode", "backend"), CASES)
def test_topk_std_attention(benchmark, config: Config, mode: str, backend: str) -> None:
    benchmark.group = f"topk_std_attention {config.name} {mode}"
    reason = unavailable(backend)
    if reason:
        pytest.skip(reason)

    peak = peak_memory(backend, config, mode)
    x = make_inputs(config, backend, mode)
    rounds = rounds_for(warm_up(backend, x, mode))
    outputs = benchmark.pedantic(timed_call, args=(backend, x, mode), rounds=rounds, iterations=1)

    benchmark.extra_info.update(method=method_name(backend), config=config.name, mode=mode, rounds=rounds,
                                peak_mb=peak.mb, shape=config.to_dict())
    if peak.mb is None:
        benchmark.extra_info["peak_mb_reason"] = peak.reason
    assert all(torch.isfinite(t).all() for t in outputs if t.is_floating_point())
