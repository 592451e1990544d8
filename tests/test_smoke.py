"""``python -m fastlocal smoke``: the README's first command checks every built backend."""

from __future__ import annotations

import pytest

from fastlocal import smoke


def test_smoke_runs_the_compiled_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert smoke.run_smoke() == 0
    out = capsys.readouterr().out
    # the C++ kernels ran, not just the reference
    assert any(line.split()[:3] == ["roi_align_1d", "cpu", "cpu"] for line in out.splitlines()), out
    assert "all backends match the reference" in out
    # Triton on CPU tensors only runs interpreted (tests/conftest.py sets TRITON_INTERPRET=1):
    # the smoke names it as skipped instead of spending minutes in the interpreter.
    if smoke.triton_interpreted() and smoke.available_backends()["triton"] == "available":
        assert "skipped: TRITON_INTERPRET=1" in out


def test_smoke_fails_without_the_extension(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    missing = {"cuda": "n/a", "triton": "n/a", "cpu": "extension not built: no fastlocal._C", "reference": "available"}
    monkeypatch.setattr(smoke, "available_backends", lambda: missing)
    assert smoke.run_smoke() == 1
    assert "C++ extension is missing" in capsys.readouterr().out
