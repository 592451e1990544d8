"""The benchmark definitions in :mod:`fastlocal.bench` work: every method at a tiny size
agrees with the reference, and the fresh-process memory probe gives sane numbers and
reports failures as reasons. Compiled methods are ``slow`` (a cold Inductor cache costs
~8 s each)."""

from __future__ import annotations

import pytest
import torch

from fastlocal.bench.local_attention import CONFIGS, METHODS, Config, LocalAttention, useful_gflop
from fastlocal.bench.memory import run_spec
from fastlocal.bench.suite import MODES, Result

SUITE = LocalAttention()
TINY = Config(B=1, H=2, T=64, D=16, window=7)
COMPILED = ("naive+compile", "flex_attention")
EAGER = tuple(name for name in METHODS if name not in COMPILED)


def _check_against_reference(name: str, mode: str) -> None:
    method = METHODS[name]
    reason = SUITE.unavailable(name, TINY, mode)
    if reason:
        pytest.skip(f"{name}: {reason}")
    x = method.make_inputs(TINY, mode)
    got = method.run(x, mode)
    assert len(got) == (1 if mode == "forward" else 5 if name != "natten" else 4)
    assert got[0].shape == (TINY.B, TINY.H, TINY.T, TINY.D)
    assert all(torch.isfinite(t).all() for t in got)
    if name != "natten":  # NATTEN computes shifted windows without bias: a different function
        want = METHODS["fastlocal[reference]"].run(x, mode)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", EAGER)
def test_eager_method_matches_reference(name: str, mode: str) -> None:
    _check_against_reference(name, mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_method_matches_reference(name: str, mode: str) -> None:
    _check_against_reference(name, mode)


def test_unavailable_reasons() -> None:
    assert "GiB" in SUITE.unavailable("sdpa_dense", CONFIGS[-1], "forward")
    assert SUITE.unavailable("sdpa_dense", TINY, "forward_backward") is None
    assert useful_gflop(TINY, "forward_backward") == 3 * useful_gflop(TINY) == 3 * 4 * 2 * 64 * 7 * 16 / 1e9


def test_peak_memory_in_fresh_process() -> None:
    config = Config(B=1, H=4, T=2048, D=32, window=51)
    peak = SUITE.peak_memory("naive", config, "forward")
    # The output alone is B*H*T*D*4 bytes = 1 MiB; the naive windows are ~54 MiB.
    assert peak.mb is not None, peak.reason
    assert 1.0 <= peak.mb < 1000.0
    table = SUITE.table([Result("naive", config, "forward", 0.01, peak)], gemm=100.0)
    assert "naive" in table


def test_memory_child_reports_failure_as_reason() -> None:
    huge = Config(B=1, H=4, T=32768, D=32, window=51)
    spec = SUITE.memory_spec("sdpa_dense", huge, "forward")
    # In-process: the child's code path, without paying for a second torch import.
    result = run_spec(spec)
    assert "mb" not in result and "GiB" in result["reason"]
