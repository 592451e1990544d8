"""``python -m fastlocal bench``: fastlocal against its peers, speed and peak memory side by side.

For each op's :class:`~fastlocal.bench.suite.Suite` (:data:`fastlocal.bench.ops.SUITES`:
the configurations and methods the pytest-benchmark suites run), every configuration,
mode and method in one process: the median time with its spread, the peak memory of one
call (CPU: a fresh process; CUDA: ``torch.cuda.max_memory_allocated``), the speed-up and
memory ratio against the best peers, and useful GFLOP/s against the ``torch.mm`` rate
measured in the same run. Methods that cannot run here, or that ``--quick`` leaves out,
are listed with the reason; methods that have nothing to run here at all (a GPU backend on a
torch without CUDA, a peer that is not installed) take one line per op.

Every call is warmed up by :func:`fastlocal.bench.suite.warm_up`'s rule before it is timed,
as in the pytest-benchmark suites. Writes ``bench.json`` (machine, command line, every
figure with its spread) and ``<op>_time.png`` and ``<op>_memory.png`` into ``out`` (the plots
need matplotlib, in the ``test`` and ``plot`` extras).
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import itertools
import json
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import fastlocal

from . import plots
from .memory import PeakMemory
from .ops import MODEL_SUITES
from .ops import SUITES as OP_SUITES
from .suite import Result, Suite, best_peers, gemm_gflops, rounds_for, timed_call, warm_up

SUITES = {**OP_SUITES, **MODEL_SUITES}  # every suite by name
OPS = tuple(OP_SUITES)  # the default run
CHOICES = tuple(SUITES)  # what --ops accepts: the default run and the opt-in model suites
# Seconds of timed rounds per measurement (at least 3 rounds): the full run matches the pytest suites.
BUDGET_S = {"full": 2.0, "quick": 0.5, "tiny": 0.02}
# Slow calls get this many timed rounds: --quick keeps two (its min-max still shows a spread);
# --tiny calls take milliseconds, so three cost nothing.
MIN_ROUNDS = {"full": 3, "quick": 2, "tiny": 3}
# Versions of the peers' packages, when installed (the figures depend on them).
PACKAGES = ("numpy", "triton", "natten", "flash-attn", "matplotlib")


def device_error(device: str) -> str | None:
    """Why the benchmark cannot run on ``device`` here, or None."""
    if device == "cpu" or torch.cuda.is_available():
        return None
    why = f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
    return f"--device cuda: CUDA is not available ({why})"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what :mod:`platform` knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures depend on: platform, CPU, core count, versions, built backends."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "fastlocal": fastlocal.__version__,
        "packages": {name: _version(name) for name in PACKAGES},
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "cuda": torch.version.cuda,
        "backends": fastlocal.available_backends(),
        "load_average": os.getloadavg(),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per step otherwise."""

    WIDTH = 24

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, text: str) -> None:
        """Count one case and show ``text`` (what runs now, or why it is skipped)."""
        self.done += 1
        filled = self.WIDTH * self.done // self.total
        line = (f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] [{self.done}/{self.total}] {text} "
                f"({time.perf_counter() - self.start:.0f} s)")
        if self.tty:
            columns = shutil.get_terminal_size().columns
            print(f"\r{line[:columns - 1]:{columns - 1}s}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


def _seconds(call: Callable[[], tuple[torch.Tensor, ...]], device: str) -> tuple[float, tuple[torch.Tensor, ...]]:
    """:func:`~fastlocal.bench.suite.timed_call` of ``call`` (CUDA events on ``cuda``)."""
    return timed_call(lambda _device_probe: call(), torch.empty(0, device=device))


def measure(suite: Suite, method: str, config: Any, mode: str, peak: PeakMemory, budget_s: float,
            min_rounds: int = 3) -> Result:
    """Warm one call up, time it for about ``budget_s`` (at least ``min_rounds``) and check its outputs are finite.

    The warm-up follows :func:`~fastlocal.bench.suite.warm_up`'s rule (at least three calls, until two
    in a row agree): its calls are not kept, and its last, steady call sizes the rounds. (Sized by a
    first call, which pays one-time work such as the ~1 s import of ``torch._dynamo`` by the run's
    first fastlocal op, a fast op would get the minimum of rounds, its median two noisy calls.)
    """
    device = suite.device(config)
    try:
        call = suite.build(method, config, mode)
        steady = warm_up(lambda: _seconds(call, device)[0])
        times = []
        for _ in range(rounds_for(steady, budget_s, min_rounds)):
            seconds, outputs = _seconds(call, device)
            times.append(seconds)
    except Exception as exc:  # reported in the table and the exit code; the other methods still run
        return Result(method, config, mode, peak=peak, error=f"{type(exc).__name__}: {exc}")
    if not all(torch.isfinite(t).all() for t in outputs):
        return Result(method, config, mode, peak=peak, error="non-finite values in the output or gradients")
    return Result.timed(method, config, mode, times, peak)


def absent_methods(ops: list[str], device: str) -> dict[str, dict[str, str]]:
    """By op, the methods with nothing to run in a ``device`` run here, and why (one line per op)."""
    return {op: {m: reason for m in SUITES[op].methods if (reason := SUITES[op].absent(m, device))} for op in ops}


def plan(ops: list[str], device: str, *, quick: bool, tiny: bool) -> list[tuple[Suite, Any, str, str]]:
    """Every (suite, config, mode, method) of the run, in the order they run (absent methods left out)."""
    cases = []
    absent = absent_methods(ops, device)
    for op in ops:
        suite = SUITES[op]
        configs = suite.configurations(device, quick=quick, tiny=tiny)
        methods = [m for m in suite.methods if m not in absent[op]]
        cases += [(suite, *case) for case in itertools.product(configs, suite.modes, methods)]
    return cases


def bench(ops: list[str], device: str, *, quick: bool, tiny: bool, budget_s: float) -> dict[str, list[Result]]:
    """Results of every case of :func:`plan`, by op; skipped ones carry the reason."""
    cases = plan(ops, device, quick=quick, tiny=tiny)
    results: dict[str, list[Result]] = {op: [] for op in ops}
    progress = Progress(len(cases))
    memory_measured = False
    for suite, config, mode, method in cases:
        label = f"{suite.op} {config.name} {method} {mode}"
        reason = suite.skip_reason(method, config, mode, quick=quick, tiny=tiny)
        if reason:
            progress.step(f"{label}: skipped")
            results[suite.op].append(Result(method, config, mode, skipped=reason))
            continue
        progress.step(label)
        if tiny and memory_measured:
            # A fresh process costs seconds (torch import); one shows the probe works.
            peak = PeakMemory(None, "--tiny measures the first call only")
        else:
            peak, memory_measured = suite.peak_memory(method, config, mode), True
        min_rounds = MIN_ROUNDS["tiny" if tiny else "quick" if quick else "full"]
        results[suite.op].append(measure(suite, method, config, mode, peak, budget_s, min_rounds))
    progress.close()
    return results


def write_plots(results: dict[str, list[Result]], out: Path) -> str:
    """Write every op's plots into ``out``; the line saying what was written (or why nothing was)."""
    if not plots.available():
        return "plots not written: matplotlib is not installed (pip install matplotlib)"
    paths = [path for op, op_results in results.items() for path in plots.plot(SUITES[op], op_results, out)]
    return "wrote " + ", ".join(str(p) for p in paths) if paths else "plots: no method ran, nothing to plot"


def report(results: dict[str, list[Result]], gemm: float, info: dict[str, Any], options: dict[str, Any],
           date: datetime.datetime, seconds: float, absent: dict[str, dict[str, str]] | None = None
           ) -> dict[str, Any]:
    """The ``bench.json`` document: command line, start date, machine, options, every row and, by op,
    the methods that had nothing to run here (``absent``, method -> reason)."""
    rows = []
    for op, op_results in results.items():
        suite = SUITES[op]
        peers = best_peers(op_results, suite.is_peer)
        for r in op_results:
            best = peers[r.config, r.mode]
            rows.append({
                "op": op,
                **r.to_dict(),
                "peer": suite.is_peer(r.method),
                "percent_of_gemm": r.percent_of(gemm),
                "fastest_peer": best.fastest and best.fastest.method,
                "speedup_vs_fastest_peer": best.speedup(r),
                "leanest_peer": best.leanest and best.leanest.method,
                "memory_ratio_vs_leanest_peer": best.memory_ratio(r),
            })
    return {
        "command": shlex.join(sys.orig_argv),
        "date": date.isoformat(timespec="seconds"),
        "seconds": seconds,
        "machine": {**info, "gemm_gflops": gemm},
        "options": options,
        "peers": {op: SUITES[op].peers for op in results},
        "absent": {op: (absent or {}).get(op, {}) for op in results},
        "results": rows,
    }


def run_bench(ops: list[str], *, quick: bool = False, device: str = "cpu", out: Path = Path("bench-results"),
              tiny: bool = False) -> int:
    """Run the benchmark, print the table, write ``out``; 0 when every method that ran succeeded.

    Returns 2 (after a message on stderr) when ``device`` cannot be benchmarked here and 1
    when a method failed (shown in the table).
    """
    error = device_error(device)
    if error:
        print(f"fastlocal bench: error: {error}", file=sys.stderr)
        return 2
    date, start = datetime.datetime.now(datetime.timezone.utc), time.perf_counter()
    level = "tiny" if tiny else "quick" if quick else "full"
    budget_s = BUDGET_S[level]
    print(f"measuring the torch.mm {'bfloat16' if device == 'cuda' else 'float32'} rate (the GFLOP/s yardstick)...",
          file=sys.stderr, flush=True)

    def yardstick() -> float:
        return gemm_gflops() if device == "cpu" else gemm_gflops(n=8192, device="cuda", dtype=torch.bfloat16)

    # Measured before and after the run; the higher is the machine's rate. (On the shared 2-core VM one
    # sample taken while another job held a core read 77-87 GFLOP/s against 140-180 without it.)
    gemm_samples = [yardstick()]
    results = bench(ops, device, quick=quick, tiny=tiny, budget_s=budget_s)
    gemm_samples.append(yardstick())
    gemm = max(gemm_samples)
    absent = absent_methods(ops, device)

    info = machine()
    processor = info["cpu"] if device == "cpu" else info["gpu"]
    print(f"fastlocal {info['fastlocal']}, torch {info['torch']}, Python {info['python']}, {processor}, "
          f"{info['cores']} cores ({info['torch_threads']} torch threads); torch.mm: {gemm:.0f} GFLOP/s "
          f"(before the run {gemm_samples[0]:.0f}, after {gemm_samples[1]:.0f})")
    for op, op_results in results.items():
        suite = SUITES[op]
        if not op_results:
            print(f"{op}: no {device} configurations")
            continue
        print(suite.table(op_results, gemm, absent[op]))
    out.mkdir(parents=True, exist_ok=True)
    options = {"ops": ops, "quick": quick, "tiny": tiny, "device": device, "budget_s": budget_s, "out": str(out)}
    seconds = time.perf_counter() - start
    document = report(results, gemm, {**info, "gemm_gflops_before_after": gemm_samples}, options, date, seconds,
                      absent)
    (out / "bench.json").write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out / 'bench.json'}")
    print(write_plots(results, out))
    failed = sum(r.status == "failed" for op_results in results.values() for r in op_results)
    print(f"bench: {time.perf_counter() - start:.0f} s" + (f", {failed} methods FAILED" if failed else ""))
    return 1 if failed else 0
