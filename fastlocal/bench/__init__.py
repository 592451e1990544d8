"""Benchmark definitions shared by the pytest-benchmark suites and ``python -m fastlocal bench``.

- :mod:`fastlocal.bench.suite` — what every op's comparison shares: the
  :class:`~fastlocal.bench.suite.Suite` protocol, the warm-up rule and timing helpers, the
  :class:`~fastlocal.bench.suite.Result` rows and the side-by-side table
- :mod:`fastlocal.bench.local_attention`, :mod:`~fastlocal.bench.roi_align_1d`,
  :mod:`~fastlocal.bench.topk_std`, :mod:`~fastlocal.bench.selective` — each op's configurations,
  competing methods and ``Suite`` subclass; :mod:`fastlocal.bench.ops` — the registry (``SUITES``)
- :mod:`fastlocal.bench.memory` — peak memory of one call, measured in a fresh process
- :mod:`fastlocal.bench.run`, :mod:`fastlocal.bench.plots` — the command, its JSON and plots

No model is imported here: the TUT training-step benchmark lives in ``benchmarks/test_tut.py``.
"""
