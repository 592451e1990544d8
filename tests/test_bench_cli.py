"""``python -m fastlocal bench`` end to end at a tiny size, once per op: exit code, the table with
every method (ran, skipped with its reason, or named once per op when it has nothing to run
here), ``bench.json`` with finite figures, the plots; every op's suite fits the protocol; the
warm-up rule sizes the timed rounds; a clean error for ``--device cuda`` without CUDA."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fastlocal.bench import plots, run
from fastlocal.bench.memory import PeakMemory
from fastlocal.bench.ops import MODEL_SUITES, SUITES
from fastlocal.bench.run import OPS, absent_methods, measure
from fastlocal.bench.suite import MODES, Suite, torch_has_cuda, warm_up

MACHINE_FIELDS = {"platform", "cpu", "cores", "torch_threads", "python", "torch", "fastlocal", "packages", "gpu",
                  "backends", "load_average", "gemm_gflops"}


MODULES = {"local_attention": "local_attention", "roi_align_1d": "roi_align_1d", "topk_std_attention": "topk_std",
           "selective": "selective", "soft_nms_1d": "nms_1d", "nmw_1d": "nms_1d",
           **{name: name for name in MODEL_SUITES}}
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


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
    absent = report["absent"][op]
    assert "Traceback" not in proc.stderr
    assert f"[1/{len(report['results'])}] {op} {suite.tiny_configs[0].name}" in proc.stderr  # progress on stderr
    for config in suite.tiny_configs:
        assert f"{op} {config.name}" in proc.stdout
    rows = [line.split("|")[0].strip() for line in proc.stdout.splitlines() if "|" in line]
    for name in suite.methods:
        # A row per configuration, or (nothing to run here at all) named once, in the op's one line.
        assert rows.count(name) == (0 if name in absent else len(suite.tiny_configs)), name
    absent_lines = [line for line in proc.stdout.splitlines() if line.startswith("not run here: ")]
    assert len(absent_lines) == (1 if absent else 0)
    for name, reason in absent.items():
        assert name in absent_lines[0] and reason in absent_lines[0]
        assert name not in proc.stderr  # nor a progress step
    for r in report["results"]:
        if r["status"] == "skipped":
            assert r["reason"] and f"skipped: {r['reason'].splitlines()[0][:60]}" in proc.stdout


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plots_are_written(tiny_run: tuple[str, subprocess.CompletedProcess[str], dict]) -> None:
    op, proc, report = tiny_run
    out = Path(report["options"]["out"])
    for kind in ("time", "memory"):
        path = out / f"{op}_{kind}.png"
        assert str(path) in proc.stdout and path.read_bytes().startswith(b"\x89PNG")
    assert "plots skipped" not in proc.stdout and "not written" not in proc.stdout


def test_without_matplotlib_one_line_names_the_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(plots, "available", lambda: False)
    line = run.write_plots({}, tmp_path)
    assert "\n" not in line and "matplotlib is not installed" in line and "pip install matplotlib" in line


@pytest.mark.skipif(torch_has_cuda(), reason="checks a torch built without CUDA")
def test_gpu_backends_take_one_line_without_cuda() -> None:
    reason = f"not available (torch {torch.__version__} has no CUDA)"
    for op in ("local_attention", "topk_std_attention"):
        absent = absent_methods([op], "cpu")[op]
        assert absent["fastlocal[cuda]"] == absent["fastlocal[triton]"] == reason
        (line,) = [line for line in SUITES[op].table([], absent=absent).splitlines() if reason in line]
        assert line.startswith("not run here: ") and line.count(reason) == 1
        assert "fastlocal[cuda]" in line and "fastlocal[triton]" in line


def test_json_has_every_figure(tiny_run: tuple[str, subprocess.CompletedProcess[str], dict]) -> None:
    op, _, report = tiny_run
    suite = SUITES[op]
    assert "fastlocal bench" in report["command"] and "--tiny" in report["command"]
    assert report["date"] and report["seconds"] > 0 and report["machine"].keys() >= MACHINE_FIELDS
    assert report["machine"]["gemm_gflops"] == max(report["machine"]["gemm_gflops_before_after"]) > 0
    assert report["machine"]["backends"]["reference"] == "available"
    assert report["peers"] == {op: suite.peers}
    assert report["absent"] == absent_methods([op], "cpu")
    results = report["results"]
    ran_methods = [m for m in suite.methods if m not in report["absent"][op]]
    assert len(results) == len(suite.tiny_configs) * len(suite.modes) * len(ran_methods)
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
    for op, suite in {**SUITES, **MODEL_SUITES}.items():
        assert suite.op == op and suite.configs and suite.quick_configs and suite.tiny_configs
        assert type(suite).__module__ == f"fastlocal.bench.{MODULES[op]}"  # defined beside its configurations
        assert any(suite.is_peer(m) for m in suite.methods) and not all(suite.is_peer(m) for m in suite.methods)
        assert set(suite.modes) <= set(MODES)
        for config in suite.configs + suite.quick_configs + suite.tiny_configs + suite.gpu_configs:
            assert config.name and suite.config_type.from_dict(json.loads(json.dumps(config.to_dict()))) == config
        assert suite.configurations("cpu", quick=True, tiny=False) == suite.quick_configs
        assert suite.configurations("cuda", quick=False, tiny=False) == suite.gpu_configs


def test_quick_plan_shows_what_it_leaves_out() -> None:
    suite = SUITES["local_attention"]
    assert {c.T for c in suite.quick_configs} == {2048, 8192} and set(suite.quick_configs) <= set(suite.configs)
    assert set(suite.gpu_quick_configs) <= set(suite.gpu_configs) and suite.gpu_quick_configs
    large = max(suite.quick_configs, key=lambda c: c.T)
    assert "--quick" in suite.skip_reason("sdpa_dense", large, "forward", quick=True)
    assert suite.skip_reason("fastlocal[reference]", large, "forward", quick=True) is None
    assert suite.skip_reason("sdpa_dense", large, "forward") is None
    assert "--tiny" in suite.skip_reason("naive+compile", large, "forward", quick=True, tiny=True)
    selective = SUITES["selective"]
    assert "--quick" in selective.skip_reason("selective-0.3", selective.quick_configs[0], "forward_backward",
                                              quick=True)


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


class _SlowFirstCall(Suite):
    """A suite whose first call pays a one-time cost (as the first fastlocal op's import of torch._dynamo)."""

    op = "slow_first_call"
    methods = ("ours",)

    def is_peer(self, method: str) -> bool:
        return False

    def build(self, method: str, config: object, mode: str):
        calls = []

        def call() -> tuple[torch.Tensor, ...]:
            time.sleep(0.3 if not calls else 0.002)
            calls.append(None)
            return (torch.zeros(1),)

        return call


def test_rounds_are_sized_by_a_steady_call() -> None:
    # Sized by the first call (0.3 s), a 2 ms call would get the minimum of 2 rounds in a 0.5 s budget.
    r = measure(_SlowFirstCall(), "ours", SUITES["local_attention"].tiny_configs[0], "forward", PeakMemory(None),
                budget_s=0.5, min_rounds=2)
    assert r.status == "ok" and len(r.times) >= 10 and max(r.times) < 0.1, r


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    proc = _bench("--device", "cuda", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bench.json").exists()
