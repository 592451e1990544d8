"""Peak memory of one call, measured in a fresh Python process (Linux only).

The parent names the call by a JSON spec ``{"factory": "package.module:function",
"kwargs": {...}}`` (or ``"/path/to/file.py:function"`` for a module outside any package,
such as a benchmark suite's helper). The child imports the factory and calls it with ``kwargs``; the
factory builds the inputs, warms the call up (compilation, thread pools) and returns
a zero-argument callable. The child then reads ``VmRSS``, resets the kernel's
high-water mark (``echo 5 > /proc/self/clear_refs``), runs the callable once and
reads ``VmHWM``; the peak is ``VmHWM - VmRSS`` before the call.

The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then serves every block of
64 KiB or more with ``mmap`` and returns it to the OS on free, so tensors freed by the
warm-up do not linger in the heap and hide (or inflate) the peak of the measured call.

Run as ``python -m fastlocal.bench.memory '<spec json>'``; the child prints one line
``fastlocal-peak-memory: {"mb": ...}`` or ``{"reason": ...}``.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

MMAP_THRESHOLD = 65536
_RESULT_PREFIX = "fastlocal-peak-memory: "


class PeakMemory(NamedTuple):
    """Extra resident memory of one call in MB (2**20 bytes), or None and the reason."""

    mb: float | None
    reason: str = ""


def peak_memory_mb(spec: dict[str, Any], *, timeout: float = 600.0) -> PeakMemory:
    """Measure the peak extra resident memory of the call named by ``spec`` in a fresh process.

    Args:
        spec: ``{"factory": "module:function", "kwargs": {...}}`` (JSON-serialisable);
            ``function(**kwargs)`` must build the inputs, warm up and return the call.
        timeout: seconds before the child is killed.
    Returns:
        :class:`PeakMemory`; ``mb`` is None (with the reason) off Linux, when the factory
        or the call raises, or when the child dies (killed for memory, timed out).
    """
    if not sys.platform.startswith("linux"):
        return PeakMemory(None, f"peak memory needs Linux /proc/self/clear_refs (this is {sys.platform})")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    command = [sys.executable, "-m", "fastlocal.bench.memory", json.dumps(spec)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return PeakMemory(None, f"measurement timed out after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            result = json.loads(line.removeprefix(_RESULT_PREFIX))
            return PeakMemory(result.get("mb"), result.get("reason", ""))
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return PeakMemory(None, f"measuring process killed by {name}{hint}")
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return PeakMemory(None, f"measuring process exited with code {proc.returncode}: {tail}")


def _status_kb(field: str) -> int:
    """A ``/proc/self/status`` field such as ``VmRSS`` in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure(call: Callable[[], object]) -> float:
    """Peak extra resident memory of ``call()`` in MB (this process must own nothing else in flight)."""
    gc.collect()
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current RSS
    call()
    return (_status_kb("VmHWM") - before) / 1024


def _import(module: str) -> ModuleType:
    """``package.module`` by name, or a ``.py`` file by path."""
    if not module.endswith(".py"):
        return importlib.import_module(module)
    loaded = importlib.util.spec_from_file_location(Path(module).stem, module)
    if loaded is None or loaded.loader is None:
        raise ImportError(f"cannot load {module}")
    result = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = result
    loaded.loader.exec_module(result)
    return result


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """What the child runs: build the call named by ``spec`` and measure it.

    Returns ``{"mb": float}``, or ``{"reason": "ExceptionType: message"}`` when the factory
    or the call raises, so a failing method is reported, not a crash.
    """
    try:
        module, _, name = spec["factory"].rpartition(":")
        factory = getattr(_import(module), name)
        return {"mb": _measure(factory(**spec.get("kwargs", {})))}
    except Exception as exc:  # reported to the parent as the reason
        return {"reason": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    print(_RESULT_PREFIX + json.dumps(run_spec(json.loads(sys.argv[1]))), flush=True)
