"""pytest-benchmark: C-VidTr-S end to end, the topK-std pooling fused (``cpu``) against unfused (``reference``).

:class:`fastlocal.bench.vidtr.VidTrSuite`, the suite ``python -m fastlocal bench --ops vidtr`` runs:
one inference view and one SGD training step of C-VidTr-S (8 frames, 224², batch 1, 400 classes,
float32, CPU), measured by ``conftest.py``'s harness (median of 3 calls after the warm-up, peak
memory of one call in a fresh process). ``extra_info`` adds:

- for C-VidTr-S, on each backend: the share of the call spent in the topK-std pooling (forward,
  and backward for a step), from ``torch.profiler`` (:func:`fastlocal.bench.vidtr.pooling_share`);
- for VidTr-S (no pooling layer, timed once on ``cpu``): its time over C-VidTr-S's on ``cpu`` next to
  the ratio of their multiply-adds (158.25 G / 64.60 G per view).

Run with ``pytest benchmarks/test_vidtr.py --benchmark-only -q`` (about 5 minutes on 2 idle cores).
"""

from __future__ import annotations

from fastlocal.bench.suite import Result
from fastlocal.bench.vidtr import C_VIDTR_S, VidTrSuite, mac_ratio, pooling_share

SUITE = VidTrSuite()
_COMPACT: dict[str, Result] = {}  # mode -> C-VidTr-S on the cpu backend, for VidTr-S's ratio


def test_vidtr(benchmark, run_case, config, mode: str, method: str) -> None:
    result = run_case(SUITE, method, config, mode)
    backend = SUITE.backends[method]
    if config == C_VIDTR_S:
        share = pooling_share(backend, config, mode)
        benchmark.extra_info.update(pooling_share=share["share"], pooling_forward_ms=share["pool_forward_ms"],
                                    pooling_backward_ms=share["pool_backward_ms"], profiled_call_ms=share["call_ms"])
        assert 0 < share["share"] < 1
        if backend == "cpu":
            _COMPACT[mode] = result
    compact = _COMPACT.get(mode)
    if config != C_VIDTR_S and compact is not None and compact.seconds and result.seconds:
        benchmark.extra_info.update(time_vs_c_vidtr_s=result.seconds / compact.seconds,
                                    macs_vs_c_vidtr_s=mac_ratio(config, C_VIDTR_S))
