"""``python -m fastlocal bench``: fastlocal against its peers, speed and peak memory side by side.

For each op with peers to compare (today ``local_attention``), every configuration,
mode and method of :mod:`fastlocal.bench.local_attention` (the definitions the
pytest-benchmark suite runs) in one process: the median time with its spread, the peak
memory of one call in a fresh process, the speed-up and memory ratio against the best
peers, and useful GFLOP/s against the ``torch.mm`` rate measured in the same run.
Methods that cannot run here, or that ``--quick`` leaves out, are listed with the reason.

Writes ``bench.json`` (machine, command line, every figure with its spread) and, when
matplotlib is installed, ``<op>_time.png`` and ``<op>_memory.png`` into ``out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

import fastlocal

from . import plots
from .local_attention import (
    CONFIGS,
    METHODS,
    MODES,
    OP,
    QUICK_CONFIGS,
    Config,
    Result,
    best_peers,
    format_table,
    gemm_gflops,
    peak_memory,
    quick_skip,
    rounds_for,
    time_rounds,
    warm_up,
)
from .memory import PeakMemory

# --tiny, for the CLI's own smoke test: the suite's problem at T = 64 and 128.
TINY_CONFIGS = tuple(dataclasses.replace(CONFIGS[0], T=T) for T in (64, 128))
# Seconds of timed rounds per measurement (at least 3 rounds): the full run matches the pytest suite.
BUDGET_S = {"full": 2.0, "quick": 0.5, "tiny": 0.02}


def device_error(device: str) -> str | None:
    """Why the benchmark cannot run on ``device`` here, or None."""
    if device == "cpu":
        return None
    if not torch.cuda.is_available():
        why = f"torch {torch.__version__} is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        return f"--device cuda: CUDA is not available ({why})"
    # The methods build CPU inputs and the memory probe reads host RSS; GPU runs need both first.
    return "--device cuda: only CPU benchmarks exist so far (local_attention has no GPU kernel yet)"


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
        "backends": fastlocal.available_backends(),
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def skip_reason(name: str, config: Config, mode: str, *, quick: bool, tiny: bool) -> str | None:
    """Why ``name`` does not run ``config`` in ``mode`` in this run (shown in the table), or None."""
    method = METHODS[name]
    if tiny and method.compiles:
        return "--tiny leaves out compiled methods (compiling takes longer than the whole tiny run)"
    return method.unavailable(config, mode) or (quick_skip(name, config) if quick else None)


def _timed(name: str, config: Config, mode: str, peak: PeakMemory, budget_s: float) -> Result:
    """Warm ``name`` up, time it for about ``budget_s`` and check its outputs are finite."""
    method = METHODS[name]
    try:
        x = method.make_inputs(config, mode)
        times, outputs = time_rounds(method, x, mode, rounds_for(warm_up(method, x, mode), budget_s))
    except Exception as exc:  # reported in the table and the exit code; the other methods still run
        return Result(name, config, mode, peak=peak, error=f"{type(exc).__name__}: {exc}")
    if not all(torch.isfinite(t).all() for t in outputs):
        return Result(name, config, mode, peak=peak, error="non-finite values in the output or gradients")
    return Result.timed(name, config, mode, times, peak)


def bench_local_attention(configs: tuple[Config, ...], *, quick: bool, tiny: bool, budget_s: float) -> list[Result]:
    """Every (config, mode, method), in that order; skipped ones carry the reason."""
    cases = list(itertools.product(configs, MODES, METHODS))
    results = []
    memory_measured = False
    for i, (config, mode, name) in enumerate(cases, 1):
        prefix = f"[{i}/{len(cases)}] {OP} T={config.T} {name} {mode}"
        reason = skip_reason(name, config, mode, quick=quick, tiny=tiny)
        if reason:
            _progress(f"{prefix}: skipped")
            results.append(Result(name, config, mode, skipped=reason))
            continue
        _progress(f"{prefix}...")
        if tiny and memory_measured:
            # A fresh process costs seconds (torch import); one shows the probe works.
            peak = PeakMemory(None, "--tiny measures the first call only")
        else:
            peak, memory_measured = peak_memory(name, config, mode), True
        results.append(_timed(name, config, mode, peak, budget_s))
    return results


# One entry per op with peers to compare; an op's function returns its rows.
BENCHES = {OP: bench_local_attention}
OPS = tuple(BENCHES)


def report(results: dict[str, list[Result]], gemm: float, info: dict[str, Any], options: dict[str, Any],
           date: datetime.datetime) -> dict[str, Any]:
    """The ``bench.json`` document: command line, start date, machine, options and every row."""
    rows = []
    for op, op_results in results.items():
        peers = best_peers(op_results)
        for r in op_results:
            best = peers[r.config, r.mode]
            rows.append({
                "op": op,
                **r.to_dict(),
                "percent_of_gemm": r.percent_of(gemm),
                "fastest_peer": best.fastest and best.fastest.method,
                "speedup_vs_fastest_peer": best.speedup(r),
                "leanest_peer": best.leanest and best.leanest.method,
                "memory_ratio_vs_leanest_peer": best.memory_ratio(r),
            })
    return {
        "command": shlex.join(sys.orig_argv),
        "date": date.isoformat(timespec="seconds"),
        "machine": {**info, "gemm_gflops": gemm},
        "options": options,
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
    configs = TINY_CONFIGS if tiny else QUICK_CONFIGS if quick else CONFIGS
    budget_s = BUDGET_S["tiny" if tiny else "quick" if quick else "full"]
    _progress("measuring the torch.mm float32 rate (the GFLOP/s yardstick)...")
    gemm = gemm_gflops()
    results = {op: BENCHES[op](configs, quick=quick, tiny=tiny, budget_s=budget_s) for op in ops}

    info = machine()
    print(f"fastlocal {info['fastlocal']}, torch {info['torch']}, Python {info['python']}, {info['cpu']}, "
          f"{info['cores']} cores ({info['torch_threads']} torch threads); torch.mm float32: {gemm:.0f} GFLOP/s")
    for op_results in results.values():
        print(format_table(op_results, gemm))
    out.mkdir(parents=True, exist_ok=True)
    options = {"ops": ops, "quick": quick, "tiny": tiny, "device": device, "budget_s": budget_s}
    document = report(results, gemm, info, options, date)
    (out / "bench.json").write_text(json.dumps(document, indent=1, allow_nan=False) + "\n")
    print(f"wrote {out / 'bench.json'}")
    if plots.available():
        for op, op_results in results.items():
            print("wrote " + ", ".join(str(p) for p in plots.plot(op, op_results, out)))
    else:
        print("plots skipped: matplotlib is not installed (pip install 'fastlocal[plot]')")
    failed = sum(r.status == "failed" for op_results in results.values() for r in op_results)
    print(f"bench: {time.perf_counter() - start:.0f} s" + (f", {failed} methods FAILED" if failed else ""))
    return 1 if failed else 0
