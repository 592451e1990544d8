"""pytest-benchmark: GTA (He et al., BMVC 2021) on R2D-50, and its block alone against a plain transcription.

:class:`fastlocal.bench.gta.GTASuite`, the suite ``python -m fastlocal bench --ops gta`` runs, measured by
``conftest.py``'s harness (median of 3 calls after the warm-up, peak memory of one call in a fresh process):

- one inference batch and one SGD training step of R2D-50 (the TSN baseline), R2D-50 + 5 non-local blocks and
  R2D-50 + 5 GTA blocks (8 frames, 224², batch 1, 174 classes, float32, CPU), side by side; ``extra_info``
  adds each model's time and multiply-adds over R2D-50's;
- r2d50-gta's block at res3 (``layer2.1``, 512 x 28²) and res4 (``layer3.1``, 1024 x 14²) on one clip's
  feature map: :class:`fastlocal.nn.GlobalTemporalAttention` against the Eq. 1-8 transcription
  (:mod:`fastlocal.reference.global_temporal_attention`); the two agree (checked here, float32).

Run with ``pytest benchmarks/test_gta.py --benchmark-only -q``.
"""

from __future__ import annotations

import torch

from fastlocal.bench.gta import R2D50, GTASuite
from fastlocal.bench.suite import Result

SUITE = GTASuite()
_BASELINE: dict[str, Result] = {}  # mode -> R2D-50's result, for the other models' ratios


def test_gta(benchmark, run_case, config, mode: str, method: str) -> None:
    result = run_case(SUITE, method, config, mode)
    if config.part == "module":
        ours, theirs = (SUITE.build(m, config, mode)() for m in SUITE.methods)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))
        return
    if config == R2D50:
        _BASELINE[mode] = result
    base = _BASELINE.get(mode)
    if base is not None and base.seconds and result.seconds:
        benchmark.extra_info.update(time_vs_r2d50=result.seconds / base.seconds,
                                    macs_vs_r2d50=config.gflop(mode) / R2D50.gflop(mode))
