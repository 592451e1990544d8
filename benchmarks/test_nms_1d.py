"""pytest-benchmark: soft_nms_1d against the PyTorch reference loop and the numpy loop detectors ship;
nmw_1d's C++ kernel against its reference.

:class:`fastlocal.bench.nms_1d.SoftNms`, the suite ``python -m fastlocal bench`` runs: ETAD's
post-processing (8,256 proposals per video, Gaussian sigma 0.35, top 100) on one and on 16
videos, every method, measured by ``conftest.py``'s harness (peak memory of one call, fresh
process, in ``extra_info``); unavailable methods are skipped with the reason.

:class:`fastlocal.bench.nms_1d.Nmw`: TALLFormer's THUMOS-14 post-processing
(``multiclass_nmw_1d`` of 1,000 detections x 20 classes, score > 0.005, IoU 0.5, top 1,200),
``cpu`` against ``reference``. The harness parametrises ``SUITE`` only, so this test names its
own parameters.

Run with ``pytest benchmarks/test_nms_1d.py --benchmark-only -q``.
"""

from __future__ import annotations

import pytest

from fastlocal.bench.nms_1d import Nmw, SoftNms

SUITE = SoftNms()
NMW = Nmw()


def test_soft_nms_1d(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)


@pytest.mark.parametrize("nmw_method", NMW.methods)
@pytest.mark.parametrize("nmw_config", NMW.configs, ids=lambda c: c.name)
def test_nmw_1d(run_case, nmw_config, nmw_method: str) -> None:
    run_case(NMW, nmw_method, nmw_config, "forward")
