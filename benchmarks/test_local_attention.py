"""pytest-benchmark: local_attention against its peers, speed and peak memory side by side.

For every configuration in :data:`fastlocal.bench.local_attention.CONFIGS`, every method
in ``METHODS`` (fastlocal backends, naive PyTorch eager and compiled, compiled
flex_attention, dense-mask SDPA, NATTEN) and both modes. Each test records in
``extra_info`` the peak memory of one call measured in a fresh process, the achieved
useful GFLOP/s and this machine's ``torch.mm`` GFLOP/s; unavailable methods are skipped
with the reason. The run ends with one table of all of them.

Run with ``pytest benchmarks/test_local_attention.py --benchmark-only -q``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from fastlocal.bench.local_attention import (
    CONFIGS,
    METHODS,
    MODES,
    Config,
    Result,
    peak_memory,
    rounds_for,
    useful_gflop,
    warm_up,
)

CASES = [
    pytest.param(config, mode, method, id=f"T{config.T}-{mode}-{method}")
    for config, mode, method in itertools.product(CONFIGS, MODES, METHODS)
]


@pytest.mark.parametrize(("config", "mode", "method_name"), CASES)
def test_local_attention(
    benchmark, config: Config, mode: str, method_name: str, gemm: float, local_attention_results: list[Result]
) -> None:
    method = METHODS[method_name]
    benchmark.group = f"local_attention {config.name} {mode}"
    reason = method.unavailable(config, mode)
    if reason:
        local_attention_results.append(Result(method_name, config, mode, skipped=reason))
        pytest.skip(reason)

    peak = peak_memory(method_name, config, mode)
    x = method.make_inputs(config, mode)
    # Warm-up (compilation included) stays out of the timings; slow calls get 3 rounds.
    rounds = rounds_for(warm_up(method, x, mode))
    outputs = benchmark.pedantic(method.run, args=(x, mode), rounds=rounds, iterations=1)

    seconds = benchmark.stats.stats.median if benchmark.stats is not None else None  # None: --benchmark-disable
    result = Result(method_name, config, mode, seconds, peak)
    local_attention_results.append(result)
    benchmark.extra_info.update(
        method=method_name, config=config.name, mode=mode, rounds=rounds,
        peak_mb=peak.mb, useful_gflop=useful_gflop(config, mode), gflops=result.gflops, gemm_gflops=gemm,
    )
    if peak.mb is None:
        benchmark.extra_info["peak_mb_reason"] = peak.reason
    assert all(torch.isfinite(t).all() for t in outputs)
