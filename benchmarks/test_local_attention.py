"""pytest-benchmark: local_attention against its peers, speed and peak memory side by side.

For every configuration in :data:`fastlocal.bench.local_attention.CONFIGS` (CPU) and
``GPU_CONFIGS`` (CUDA, skipped without a GPU), every method in ``METHODS`` (fastlocal
backends, naive PyTorch eager and compiled, compiled flex_attention, dense-mask SDPA,
NATTEN, flash-attn's sliding window) and both modes. CUDA calls are timed to completion
(the timed callable synchronises). Each test records in
``extra_info`` the peak memory of one call measured in a fresh process, the achieved
useful GFLOP/s and this machine's ``torch.mm`` GFLOP/s; unavailable methods are skipped
with the reason. The run ends with one table of all of them.

Run with ``pytest benchmarks/test_local_attention.py --benchmark-only -q`` (add
``-k cuda`` for the GPU suite only).
"""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from fastlocal.bench.local_attention import (
    CONFIGS,
    GPU_CONFIGS,
    METHODS,
    MODES,
    Config,
    Result,
    gemm_gflops,
    peak_memory,
    useful_gflop,
    warm_up,
)
from fastlocal.bench.suite import rounds_for

_NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CASES = [
    pytest.param(config, mode, method, id=f"{config.name}-{mode}-{method}",
                 marks=[_NO_GPU] if config.device == "cuda" else [])
    for config, mode, method in itertools.product(CONFIGS + GPU_CONFIGS, MODES, METHODS)
]


@functools.cache
def _cuda_bf16_gemm() -> float:
    """The GPU yardstick: bf16 ``torch.mm`` GFLOP/s, measured once."""
    return gemm_gflops(n=8192, device="cuda", dtype=torch.bfloat16)


def _synchronised(method, x, mode):
    outputs = method.run(x, mode)
    if x.q.is_cuda:
        torch.cuda.synchronize()
    return outputs


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
    outputs = benchmark.pedantic(_synchronised, args=(method, x, mode), rounds=rounds, iterations=1)

    seconds = benchmark.stats.stats.median if benchmark.stats is not None else None  # None: --benchmark-disable
    result = Result(method_name, config, mode, seconds, peak)
    local_attention_results.append(result)
    benchmark.extra_info.update(
        method=method_name, config=config.name, mode=mode, rounds=rounds,
        peak_mb=peak.mb, useful_gflop=useful_gflop(config, mode), gflops=result.gflops,
        gemm_gflops=gemm if config.device == "cpu" else _cuda_bf16_gemm(),
    )
    if peak.mb is None:
        benchmark.extra_info["peak_mb_reason"] = peak.reason
    assert all(torch.isfinite(t).all() for t in outputs)
