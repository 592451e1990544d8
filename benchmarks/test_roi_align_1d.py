"""pytest-benchmark: roi_align_1d against the unfused PyTorch paths, speed and peak memory.

:class:`fastlocal.bench.roi_align_1d.RoiAlign`, the suite ``python -m fastlocal bench`` runs:
every configuration (ETAD's RoI layer, G-TAD's dense proposal map), every method (fastlocal
backends, the plain PyTorch gather) and both modes, measured by ``conftest.py``'s harness
(peak memory of one call, fresh process, in ``extra_info``); unavailable methods are
skipped with the reason.

Run with ``pytest benchmarks/test_roi_align_1d.py --benchmark-only -q``.
"""

from __future__ import annotations

from fastlocal.bench.roi_align_1d import RoiAlign

SUITE = RoiAlign()


def test_roi_align_1d(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)
