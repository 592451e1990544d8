""".ci/gpu, the prepared command for GPU sessions (README, "Kernel status").

Without a GPU (this machine, CI) it must stop at once with exit code 2 and one line on
stderr, before building or writing anything: that is run here on the real script in the
real checkout, with ``PYTHON`` pointing at a wrapper that logs every interpreter call and
``PATH`` holding logging stand-ins for pip, nvcc, nvidia-smi and friends.

Its step machinery (every step run and summarised, a failing step not stopping the next
ones, time limits, the exit code) is checked on a copy of the script in an empty
directory, with a stand-in ``python`` that claims a GPU and answers each step's command:
nothing real is built or run there.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu"
TOOLS = ("pip", "pip3", "nvcc", "nvidia-smi", "ninja", "pytest", "c++", "g++", "gcc", "cmake")

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="a GPU is visible: .ci/gpu would really build and run here"
)


def _write_executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _stand_ins(tmp_path: Path, python_line: str) -> tuple[dict[str, str], Path]:
    """Environment with logging stand-ins for TOOLS on PATH and PYTHON = a wrapper; and the log."""
    log = tmp_path / "calls.log"
    log.touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        _write_executable(bin_dir / tool, f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 0\n')
    python = _write_executable(bin_dir / "python-wrapper", f'#!/bin/sh\necho "python $*" >> "{log}"\n{python_line}\n')
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(python)}
    return env, log


def _build_products() -> dict[str, int]:
    """What a build of the checkout leaves (path -> mtime): it must not change."""
    found = {}
    for pattern in ("build", "*.egg-info", "fastlocal/_C*.so", "fastlocal/_C_cuda*"):
        for path in ROOT.glob(pattern):
            found[str(path)] = path.stat().st_mtime_ns
    return found


def test_script_is_an_executable_bash_script():
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not executable"
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_without_a_gpu_exits_2_before_building_anything(tmp_path):
    env, log = _stand_ins(tmp_path, f'exec "{sys.executable}" "$@"')
    out = tmp_path / "gpu-results"
    before = _build_products()
    started = time.monotonic()
    proc = subprocess.run([str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(".ci/gpu: no CUDA GPU visible: ")
    assert f"torch {torch.__version__} is built without CUDA" in lines[0]
    # One interpreter call (the probe, reading its script from stdin); no pip, nvcc, pytest, ...
    assert log.read_text().splitlines() == ["python -"]
    assert not out.exists()
    assert _build_products() == before


def test_without_torch_exits_2_and_says_why(tmp_path):
    """An interpreter that cannot import torch (here: Python without site-packages)."""
    env, log = _stand_ins(tmp_path, f'exec "{sys.executable}" -S "$@"')
    proc = subprocess.run([str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert re.fullmatch(r"\.ci/gpu: no CUDA GPU visible: cannot import torch \(.*\n", proc.stderr), proc.stderr
    assert log.read_text().splitlines() == ["python -"]
    assert not (tmp_path / "out").exists()


def test_usage(tmp_path):
    for args in ([], ["a", "b"], ["--out"]):
        proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 64, args
        assert proc.stderr.startswith("usage: .ci/gpu OUTDIR")
    proc = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: .ci/gpu OUTDIR")


# ---- the step machinery, on a copy of the script with a stand-in GPU ---------------------------------

# Answers each command .ci/gpu gives the interpreter; FAKE_RC_<STEP> sets a step's exit code and
# FAKE_SLEEP_PYTEST_GPU makes pytest -m gpu hang.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "python $*" >> "$FAKE_LOG"
case "$*" in
  -) script="$(cat)"
     if [[ "$script" == *get_device_capability* ]]; then echo "9.0 Fake H100"; else echo "fake versions"; fi ;;
  "-m pip "*) echo "pip install"; exit "${FAKE_RC_BUILD:-0}" ;;
  "-m fastlocal backends") echo "cuda       available" ;;
  "-c import xdist"|"-c import pytest_timeout") exit 1 ;;
  "-m pytest -m gpu "*) sleep "${FAKE_SLEEP_PYTEST_GPU:-0}"; echo "348 passed"; exit "${FAKE_RC_PYTEST_GPU:-0}" ;;
  "-m fastlocal bench "*) echo "bench"; exit "${FAKE_RC_BENCH_CLI:-0}" ;;
  "-m pytest benchmarks/ "*) echo "benchmarks"; exit "${FAKE_RC_BENCHMARKS:-0}" ;;
  *) echo "unexpected python call: $*" >&2; exit 99 ;;
esac
"""

STEPS = ("env", "build", "pytest_gpu", "bench_cli", "benchmarks")


def _run_simulated(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, Path, dict[str, str]]:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / ".ci" / "gpu")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("nvidia-smi", "nvcc", "c++"):
        _write_executable(bin_dir / tool, f'#!/bin/sh\necho "{tool} $*" >> "{log}"\necho "{tool} stand-in"\n')
    python = _write_executable(bin_dir / "python", FAKE_PYTHON)
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(python),
                "FAKE_LOG": str(log), "FASTLOCAL_BACKEND": "reference", **env}
    out = tmp_path / "results"
    proc = subprocess.run([str(repo / ".ci" / "gpu"), str(out)], env=full_env, capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    summary = {}
    for line in (out / "summary.txt").read_text().splitlines():
        name, rc, *_ = line.split()
        summary[name] = rc
    return proc, out, summary


def test_simulated_gpu_run_passes_every_step(tmp_path):
    proc, out, summary = _run_simulated(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert summary == {**dict.fromkeys(STEPS, "rc=0"), "total": "rc=0"}
    assert list(summary) == [*STEPS, "total"]
    lines = (out / "summary.txt").read_text().splitlines()
    assert all(re.search(r"seconds=\d+", line) for line in lines)
    env_txt = (out / "env.txt").read_text()
    assert "git commit: unknown" in env_txt and "nvidia-smi stand-in" in env_txt and "fake versions" in env_txt
    assert "unset for this run: FASTLOCAL_BACKEND=reference" in env_txt  # a requested backend is dropped
    assert "cuda       available" in env_txt  # the backends after the build
    for name in ("build.log", "pytest_gpu.log", "bench_cli.log", "benchmarks_cuda.log"):
        assert (out / name).is_file(), name
    assert not (out / ".cache").exists()  # caches and temporary files are removed
    calls = (tmp_path / "calls.log").read_text()
    assert "-m pip install --no-build-isolation --no-deps --no-index -v -e ." in calls
    assert re.search(r"-m pytest -m gpu .*--junitxml=\S*/results/pytest_gpu\.xml", calls)
    assert f"-m fastlocal bench --device cuda --quick --out {out}/bench" in calls
    assert re.search(r"-m pytest benchmarks/ --benchmark-only -k .*cuda.* --benchmark-json=\S*/benchmarks_cuda\.json",
                     calls)


def test_simulated_failing_step_does_not_stop_the_others(tmp_path):
    proc, _, summary = _run_simulated(tmp_path, FAKE_RC_BUILD="1", FAKE_RC_BENCH_CLI="3")
    assert proc.returncode == 1
    assert summary == {"env": "rc=0", "build": "rc=1", "pytest_gpu": "rc=0", "bench_cli": "rc=3",
                       "benchmarks": "rc=0", "total": "rc=1"}
    assert ".ci/gpu: build FAILED (exit code 1" in proc.stdout
    assert "-m fastlocal backends" not in (tmp_path / "calls.log").read_text()  # the build stopped at pip


def test_simulated_hanging_step_is_cut_at_the_budget(tmp_path):
    started = time.monotonic()
    proc, out, summary = _run_simulated(tmp_path, FASTLOCAL_GPU_BUDGET_S="17", FAKE_SLEEP_PYTEST_GPU="100")
    assert time.monotonic() - started < 45
    assert proc.returncode == 1
    assert summary["pytest_gpu"] == "rc=124"
    assert summary["bench_cli"] == summary["benchmarks"] == "rc=-"
    text = (out / "summary.txt").read_text()
    assert "timed out after" in text and "not started" in text
