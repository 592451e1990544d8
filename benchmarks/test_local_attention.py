"""pytest-benchmark: local_attention against its peers, speed and peak memory side by side.

:class:`fastlocal.bench.local_attention.LocalAttention`, the suite ``python -m fastlocal bench``
runs: every configuration of ``CONFIGS`` (CPU) and ``GPU_CONFIGS`` (CUDA, skipped without a
GPU), every method (fastlocal backends, naive PyTorch eager and compiled, compiled
flex_attention, dense-mask SDPA, NATTEN, flash-attn's sliding window) and both modes,
measured by ``conftest.py``'s harness: ``extra_info`` holds the peak memory of one call
(fresh process), the achieved useful GFLOP/s and this machine's ``torch.mm`` GFLOP/s;
unavailable methods are skipped with the reason. The run ends with one table.

Run with ``pytest benchmarks/test_local_attention.py --benchmark-only -q`` (add
``-k cuda`` for the GPU suite only).
"""

from __future__ import annotations

from fastlocal.bench.local_attention import LocalAttention

SUITE = LocalAttention()


def test_local_attention(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)
