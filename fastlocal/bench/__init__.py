"""Benchmark definitions shared by the pytest-benchmark suites and ``python -m fastlocal bench``.

- :mod:`fastlocal.bench.suite` — the :class:`~fastlocal.bench.suite.Suite` protocol every op's
  comparison exposes, the shared :class:`~fastlocal.bench.suite.Result` rows and the table
- :mod:`fastlocal.bench.ops` — every op's suite (``SUITES``), thin adapters over the modules below
- :mod:`fastlocal.bench.memory` — peak memory of one call, measured in a fresh process
- :mod:`fastlocal.bench.local_attention`, :mod:`~fastlocal.bench.roi_align_1d`,
  :mod:`~fastlocal.bench.topk_std`, :mod:`~fastlocal.bench.selective` — each op's configurations
  and competing methods; :mod:`~fastlocal.bench.tut` — one TUT training step (pytest-benchmark only)
- :mod:`fastlocal.bench.run`, :mod:`fastlocal.bench.plots` — the command, its JSON and plots
"""
