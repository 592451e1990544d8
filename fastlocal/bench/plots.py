"""Plots of ``python -m fastlocal bench`` results; needs matplotlib (``pip install 'fastlocal[plot]'``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .local_attention import MODE_TITLES, MODES, Result


def available() -> bool:
    """True when matplotlib is installed (plots are optional: the table and JSON never need it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _points(results: list[Result], method: str, mode: str, kind: str) -> list[tuple[int, float, float, float]]:
    """(T, value, below, above) of ``method``'s measured rows, sorted by T.

    ``kind`` "time": median ms and its distance to the fastest and slowest round;
    "memory": peak MB, left out when 0 (a log axis cannot show it).
    """
    points = []
    for r in results:
        if r.method != method or r.mode != mode:
            continue
        if kind == "time" and r.seconds is not None:
            low, high = (min(r.times), max(r.times)) if r.times else (r.seconds, r.seconds)
            points.append((r.config.T, r.seconds * 1e3, (r.seconds - low) * 1e3, (high - r.seconds) * 1e3))
        elif kind == "memory" and r.mb:
            points.append((r.config.T, r.mb, 0.0, 0.0))
    return sorted(points)


def plot(op: str, results: list[Result], out: Path) -> list[Path]:
    """Write ``<op>_time.png`` and ``<op>_memory.png`` into ``out`` and return their paths.

    Median ms (bars: fastest to slowest round) and peak MB against T, log-log, one line per
    method, forward and forward+backward in separate panels. Methods that did not run in a
    mode have no line there (the table says why). The configurations differ only in T.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    methods = list(dict.fromkeys(r.method for r in results))
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}  # one colour per method in every panel
    ts = sorted({r.config.T for r in results})
    first = results[0].config
    problem = f"B={first.B} H={first.H} D={first.D} window={first.window} {first.to_dict()['dtype']}"
    paths = []
    panels = {"time": "median ms (bars: min to max round)", "memory": "peak MB of one call (fresh process)"}
    for kind, ylabel in panels.items():
        figure = Figure(figsize=(12, 4.8), layout="constrained")
        figure.suptitle(f"{op}, {problem}")
        for ax, mode in zip(figure.subplots(1, len(MODES)), MODES, strict=True):
            for method in methods:
                points = _points(results, method, mode, kind)
                if points:
                    x, y, below, above = zip(*points, strict=True)
                    ax.errorbar(x, y, yerr=[below, above] if kind == "time" else None, marker="o", capsize=3,
                                color=colors[method], label=method)
            ax.set(xscale="log", yscale="log", xlabel="T (frames)", ylabel=ylabel, title=MODE_TITLES[mode])
            ax.set_xticks(ts, [str(t) for t in ts])
            ax.set_xticks([], minor=True)
            ax.grid(True, which="both", alpha=0.3)
        # One legend for both panels, beside them: inside, it would hide points.
        handles = {line.get_label(): line for ax in figure.axes for line in ax.containers}
        figure.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small")
        path = out / f"{op}_{kind}.png"
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths
