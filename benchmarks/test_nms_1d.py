"""pytest-benchmark: soft_nms_1d against the PyTorch reference loop and the numpy loop detectors ship.

:class:`fastlocal.bench.nms_1d.SoftNms`, the suite ``python -m fastlocal bench`` runs: ETAD's
post-processing (8,256 proposals per video, Gaussian sigma 0.35, top 100) on one and on 16
videos, every method, measured by ``conftest.py``'s harness (peak memory of one call, fresh
process, in ``extra_info``); unavailable methods are skipped with the reason.

Run with ``pytest benchmarks/test_nms_1d.py --benchmark-only -q``.
"""

from __future__ import annotations

from fastlocal.bench.nms_1d import SoftNms

SUITE = SoftNms()


def test_soft_nms_1d(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)
