"""pytest-benchmark: TALLFormer (Cheng and Bertasius, ECCV 2022), one end-to-end training step through full
backprop, gradient checkpointing and the long-term memory (the paper's Table 5a), and the temporal
consistency module with the down-sampling stages per ``local_attention`` backend.

:class:`fastlocal.bench.tallformer.TALLFormerSuite`, the suite ``python -m fastlocal bench --ops tallformer``
runs, measured by ``conftest.py``'s harness (median of 3 calls after the warm-up, peak memory of one call
in a fresh process):

- one SGD training step of the ``thumos-swin-t`` model (Video Swin-T, 2 frozen stages) on one window of
  160 frames (5 chunks of 32) at 112², float32, CPU: ``full`` (every chunk back-propagated), ``checkpoint``
  (the same with the backbone's blocks recomputed), ``memory-0.15`` and ``memory-0.4`` (checkpointing and
  the long-term memory: 1 and 2 of the 5 chunks encoded with gradient); ``extra_info`` adds time and peak
  memory over ``full``'s;
- the TCM (3 layers, L = 60) and the four down-sampling stages on 4 windows, ``fastlocal[cpu]`` against
  ``fastlocal[reference]``; the two agree (checked here).

Measured on the shared 2-core VM (load average 4-6; one warm step each, peak: extra resident memory of one
step in a fresh process, :meth:`~fastlocal.bench.suite.Suite.peak_memory`): full 31.3 s / 1,073 MB,
checkpoint 33.3 s / 536 MB, memory-0.15 16.0 s / 47 MB, memory-0.4 19.0 s / 111 MB. The whole run takes
several minutes here. Run with ``pytest benchmarks/test_tallformer.py --benchmark-only -q``.
"""

from __future__ import annotations

import torch

from fastlocal.bench.suite import Result
from fastlocal.bench.tallformer import TALLFormerSuite

SUITE = TALLFormerSuite()
_FULL: dict[object, Result] = {}  # config -> full backprop's result, for the ratios


def test_tallformer(benchmark, run_case, config, mode: str, method: str) -> None:
    result = run_case(SUITE, method, config, mode)
    if config.part == "temporal" and method == "fastlocal[cpu]":
        ours, peer = (SUITE.build(m, config, mode)() for m in ("fastlocal[cpu]", "fastlocal[reference]"))
        for a, b in zip(ours, peer, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    if config.part != "step":
        return
    if method == "full":
        _FULL[config] = result
    full = _FULL.get(config)
    if full is not None and full.seconds and result.seconds is not None:
        benchmark.extra_info["time_vs_full"] = result.seconds / full.seconds
    if full is not None and full.mb and result.mb is not None:
        benchmark.extra_info["peak_vs_full"] = result.mb / full.mb
