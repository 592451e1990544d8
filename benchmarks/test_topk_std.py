"""pytest-benchmark: fused topk_std_attention against the unfused PyTorch path, speed and peak memory.

:class:`fastlocal.bench.topk_std.TopkStd`, the suite ``python -m fastlocal bench`` runs: VidTr's
C-VidTr-S and C-VidTr-L temporal attention on the CPU (``cpu`` against ``reference``, the
unfused path) and on CUDA (``cuda`` / ``triton`` against ``reference``; skipped without a
GPU), both modes, measured by ``conftest.py``'s harness (peak memory of one call in
``extra_info``); unavailable backends are skipped with the reason.

Run with ``pytest benchmarks/test_topk_std.py --benchmark-only -q``.
"""

from __future__ import annotations

from fastlocal.bench.topk_std import TopkStd

SUITE = TopkStd()


def test_topk_std_attention(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)
