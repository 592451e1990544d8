"""``python -m fastlocal bench`` end to end at a tiny size: exit code, the table with every
method (ran, or skipped with its reason), ``bench.json`` with finite figures, and a clean
error for ``--device cuda`` without CUDA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlocal.bench.local_attention import CONFIGS, METHODS, MODES, QUICK_CONFIGS
from fastlocal.bench.run import TINY_CONFIGS, skip_reason

MACHINE_FIELDS = {"platform", "cpu", "cores", "torch_threads", "python", "torch", "fastlocal", "backends",
                  "gemm_gflops"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastlocal", "bench", *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench")
    proc = _bench("--quick", "--ops", "local_attention", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads((out / "bench.json").read_text())


def test_table_lists_every_method(tiny_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    proc, report = tiny_run
    assert "Traceback" not in proc.stderr
    assert f"[1/{len(report['results'])}] local_attention T=64" in proc.stderr  # progress on stderr
    for config in TINY_CONFIGS:
        assert f"local_attention {config.name}" in proc.stdout
    rows = [line.split("|")[0].strip() for line in proc.stdout.splitlines() if "|" in line]
    for name in METHODS:
        assert rows.count(name) == len(TINY_CONFIGS), name
    for r in report["results"]:
        if r["status"] == "skipped":
            assert r["reason"] and f"skipped: {r['reason'].splitlines()[0][:60]}" in proc.stdout
    assert "plots skipped" in proc.stdout or "local_attention_time.png" in proc.stdout


def test_json_has_every_figure(tiny_run: tuple[subprocess.CompletedProcess[str], dict]) -> None:
    _, report = tiny_run
    assert "fastlocal bench" in report["command"] and "--tiny" in report["command"]
    assert report["date"] and report["machine"].keys() >= MACHINE_FIELDS
    assert report["machine"]["gemm_gflops"] > 0 and report["machine"]["backends"]["reference"] == "available"
    results = report["results"]
    assert len(results) == len(TINY_CONFIGS) * len(MODES) * len(METHODS)
    ran = [r for r in results if r["status"] == "ok"]
    assert {r["method"] for r in ran} >= {"fastlocal[reference]", "naive"}
    assert all(r["status"] in ("ok", "skipped") and (r["status"] == "ok") == (r["reason"] is None) for r in results)
    for r in ran:
        ms = r["ms"]
        assert 0 < ms["min"] <= ms["median"] <= ms["max"] and math.isfinite(ms["max"]), r
        assert r["rounds"] >= 3 and r["gflops"] > 0 and r["percent_of_gemm"] > 0
        assert r["fastest_peer"] and r["speedup_vs_fastest_peer"] > 0
        # --tiny measures one call in a fresh process; every other row says why it has no figure.
        assert (r["peak_mb"] is None) != (r["peak_mb_reason"] is None), r
    measured = [r["peak_mb"] for r in ran if r["peak_mb"] is not None]
    assert len(measured) == 1 and 0 <= measured[0] < 1000


def test_quick_plan_shows_what_it_leaves_out() -> None:
    assert {c.T for c in QUICK_CONFIGS} == {2048, 8192} and set(QUICK_CONFIGS) <= set(CONFIGS)
    large = max(QUICK_CONFIGS, key=lambda c: c.T)
    assert "--quick" in skip_reason("sdpa_dense", large, "forward", quick=True, tiny=False)
    assert skip_reason("fastlocal[reference]", large, "forward", quick=True, tiny=False) is None
    assert skip_reason("sdpa_dense", large, "forward", quick=False, tiny=False) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    proc = _bench("--device", "cuda", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bench.json").exists()
