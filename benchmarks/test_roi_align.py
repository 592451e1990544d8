"""pytest-benchmark: roi_align_1d forward + backward, every available backend side by side.

Run with ``pytest benchmarks/ --benchmark-only`` (not part of the default test run).
"""

from __future__ import annotations

import pytest
import torch

import fastlocal
from fastlocal.roi_align import IMPLEMENTED

AVAILABLE = [b for b in IMPLEMENTED if fastlocal.available_backends()[b] == "available"]


def _problem(n_rois: int, channels: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, channels, length, generator=g, requires_grad=True)
    start = torch.rand(n_rois, generator=g) * length
    rois = torch.stack([torch.randint(0, 4, (n_rois,), generator=g).float(), start,
                        start + torch.rand(n_rois, generator=g) * length / 4], 1)
    return x, rois


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("n_rois", [1000, 10000])
def test_roi_align_fwd_bwd(benchmark, backend: str, n_rois: int) -> None:
    x, rois = _problem(n_rois, channels=256, length=128)
    benchmark.extra_info.update(backend=backend, n_rois=n_rois, channels=256, length=128, output_size=16)

    def step() -> None:
        x.grad = None
        fastlocal.roi_align_1d(x, rois, 16, backend=backend).sum().backward()

    benchmark(step)
    assert x.grad is not None and torch.isfinite(x.grad).all()
