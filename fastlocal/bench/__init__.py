"""Benchmark definitions shared by the pytest-benchmark suites and ``python -m fastlocal bench``.

- :mod:`fastlocal.bench.memory` — peak memory of one call, measured in a fresh process
- :mod:`fastlocal.bench.local_attention` — configurations and competing methods for
  banded attention with relative position bias
"""
