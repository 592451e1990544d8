"""pytest-benchmark: ETAD in feature mode, RoI-align and soft-NMS compiled (``cpu``) against their PyTorch
definitions (``reference``).

:class:`fastlocal.bench.etad.ETADSuite`, the suite ``python -m fastlocal bench --ops etad`` runs: the
``anet-tsp`` detector (512-d features, T = 128, 10.3 M parameters) on a batch of 2 videos, one inference
forward on every candidate (8,256 per video) and one AdamW training step on 6% sampled proposals; and
the post-processing of one video (boundary masks, Gaussian soft-NMS of 8,256 proposals to 100, top-2
classes). Measured by ``conftest.py``'s harness (median of 3 calls after the warm-up, peak memory of
one call in a fresh process); the post-processing has no backward (skipped with the reason).

Run with ``pytest benchmarks/test_etad.py --benchmark-only -q``.
"""

from __future__ import annotations

from fastlocal.bench.etad import ETADSuite

SUITE = ETADSuite()


def test_etad(run_case, config, mode: str, method: str) -> None:
    run_case(SUITE, method, config, mode)
