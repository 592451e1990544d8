"""``python -m fastlocal bench`` end to end at a tiny size, once per op: exit code, the table with
every method (ran, or skipped with its reason), ``bench.json`` with finite figures; every op's
suite fits the protocol; a clean error for ``--device cuda`` without CUDA."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastlocal.bench import local_attention
from fastlocal.bench.ops import SUITES
from fastlocal.bench.run import OPS, skip_reason
from fastlocal.bench.suite import warm_up

MACHINE_FIELDS = {"platform", "cpu", "cores", "torch_threads", "python", "torch", "fastlocal", "packages", "gpu",
                  "backends", "load_average", "gemm_gflops"}


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fastlocal", "bench", *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module", params=OPS)
def tiny_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, subprocess.CompletedProcess[str], dict]:
    """``python -m fastlocal bench --quick --ops <op> --tiny`` for every op: the command never rots."""
    op, out = request.param, tmp_path_factory.mktemp("bench")
    proc = _bench("--quick", "--ops", op, "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return op, proc, json.loads((out / "bench.json").read_text())


def test_table_lists_every_method(tiny_run: tuple[str, subprocess.CompletedProcess[str], dict]) -> None:
    op, proc, report = tiny_run
    suite = SUITES[op]
    assert "Traceback" not in proc.stderr
    assert f"[1/{len(report['results'])}] {op} {suite.tiny_configs[0].name}" in proc.stderr  # progress on stderr
    for config in suite.tiny_configs:
        assert f"{op} {config.name}" in proc.stdout
    rows = [line.split("|")[0].strip() for line in proc.stdout.splitlines() if "|" in line]
    for name in suite.methods:
        assert rows.count(name) == len(suite.tiny_configs), name
    for r in report["results"]:
        if r["status"] == "skipped":
            assert r["reason"] and f"skipped: {r['reason'].splitlines()[0][:60]}" in proc.stdout
    assert "plots skipped" in proc.stdout or f"{op}_time.png" in proc.stdout


def test_json_has_every_figure(tiny_run: tuple[str, subprocess.CompletedProcess[str], dict]) -> None:
    op, _, report = tiny_run
    suite = SUITES[op]
    assert "fastlocal bench" in report["command"] and "--tiny" in report["command"]
    assert report["date"] and report["seconds"] > 0 and report["machine"].keys() >= MACHINE_FIELDS
    assert report["machine"]["gemm_gflops"] > 0 and report["machine"]["backends"]["reference"] == "available"
    assert report["peers"] == {op: suite.peers}
    results = report["results"]
    assert len(results) == len(suite.tiny_configs) * len(suite.modes) * len(suite.methods)
    assert {r["op"] for r in results} == {op}
    ran = [r for r in results if r["status"] == "ok"]
    assert any(r["peer"] for r in ran) and any(not r["peer"] for r in ran)  # fastlocal and a peer both ran
    assert all(r["status"] in ("ok", "skipped") and (r["status"] == "ok") == (r["reason"] is None) for r in results)
    for r in ran:
        ms = r["ms"]
        assert 0 < ms["min"] <= ms["median"] <= ms["max"] and math.isfinite(ms["max"]), r
        assert r["rounds"] >= 3 and r["fastest_peer"] and r["speedup_vs_fastest_peer"] > 0
        assert (r["gflops"] is None) == (r["useful_gflop"] is None) == (op != "local_attention"), r
        # --tiny measures one call in a fresh process; every other row says why it has no figure.
        assert (r["peak_mb"] is None) != (r["peak_mb_reason"] is None), r
    measured = [r["peak_mb"] for r in ran if r["peak_mb"] is not None]
    assert len(measured) == 1 and 0 <= measured[0] < 1000


def test_every_suite_fits_the_protocol() -> None:
    for op, suite in SUITES.items():
        assert suite.op == op and suite.configs and suite.quick_configs and suite.tiny_configs
        assert any(suite.is_peer(m) for m in suite.methods) and not all(suite.is_peer(m) for m in suite.methods)
        assert set(suite.modes) <= set(local_attention.MODES)
        for config in suite.configs + suite.quick_configs + suite.tiny_configs + suite.gpu_configs:
            assert config.name and json.dumps(config.to_dict())
        assert suite.configurations("cpu", quick=True, tiny=False) == suite.quick_configs
        assert suite.configurations("cuda", quick=False, tiny=False) == suite.gpu_configs


def test_quick_plan_shows_what_it_leaves_out() -> None:
    suite = SUITES["local_attention"]
    assert {c.T for c in suite.quick_configs} == {2048, 8192} and set(suite.quick_configs) <= set(suite.configs)
    assert set(suite.gpu_quick_configs) <= set(suite.gpu_configs) and suite.gpu_quick_configs
    large = max(suite.quick_configs, key=lambda c: c.T)
    assert "--quick" in skip_reason(suite, "sdpa_dense", large, "forward", quick=True, tiny=False)
    assert skip_reason(suite, "fastlocal[reference]", large, "forward", quick=True, tiny=False) is None
    assert skip_reason(suite, "sdpa_dense", large, "forward", quick=False, tiny=False) is None
    assert "--tiny" in skip_reason(suite, "naive+compile", large, "forward", quick=True, tiny=True)
    selective = SUITES["selective"]
    assert "--quick" in skip_reason(selective, "selective-0.3", selective.quick_configs[0], "forward_backward",
                                    quick=True, tiny=False)


@pytest.mark.parametrize(
    ("times", "calls"),
    [
        ([5.0, 1.0, 1.1, 9.0], 3),  # the second and third calls agree: stops at the third
        ([2.6, 0.8, 0.2, 0.18, 0.9], 4),  # still falling at the third call, steady at the fourth
        ([3.0, 2.0] + [1.0, 9.0] * 10, 10),  # never steady: stops at max_calls
    ],
)
def test_warm_up_calls_until_steady(times: list[float], calls: int) -> None:
    made: list[float] = []
    seconds = warm_up(lambda: made.append(times[len(made)]) or made[-1])
    assert len(made) == calls and seconds == times[calls - 1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    proc = _bench("--device", "cuda", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bench.json").exists()
