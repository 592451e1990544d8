"""Plots of ``python -m fastlocal bench`` results; need matplotlib (``pip install matplotlib``; test, plot extras)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from .suite import MODE_TITLES, Result, Suite

PANELS = {"time": "median ms (bars: min to max round)", "memory": "peak MB of one call"}


def available() -> bool:
    """True when matplotlib is installed (plots are optional: the table and JSON never need it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _value(r: Result, kind: str) -> tuple[float, float, float] | None:
    """(value, below, above) of a measured row: median ms and its distance to the fastest and slowest
    round, or peak MB (None when 0: a log axis cannot show it)."""
    if kind == "time" and r.seconds is not None:
        low, high = (min(r.times), max(r.times)) if r.times else (r.seconds, r.seconds)
        return r.seconds * 1e3, (r.seconds - low) * 1e3, (high - r.seconds) * 1e3
    if kind == "memory" and r.mb:
        return r.mb, 0.0, 0.0
    return None


def _lines(ax: Any, suite: Suite, results: list[Result], mode: str, kind: str, colors: dict[str, str]) -> None:
    """One line per method against the sequence length, log-log."""
    for method in colors:
        points = sorted((suite.size(r.config), *value) for r in results
                        if r.method == method and r.mode == mode and (value := _value(r, kind)) is not None)
        if points:
            x, y, below, above = zip(*points, strict=True)
            ax.errorbar(x, y, yerr=[below, above] if kind == "time" else None, marker="o", capsize=3,
                        color=colors[method], label=method)
    sizes = sorted({suite.size(r.config) for r in results})
    ax.set(xscale="log", yscale="log", xlabel="T (frames)")
    ax.set_xticks(sizes, [str(t) for t in sizes])
    ax.set_xticks([], minor=True)


def _bars(ax: Any, results: list[Result], mode: str, kind: str, colors: dict[str, str]) -> None:
    """Grouped bars, log y: one group per configuration, one bar per method that ran."""
    configs = list(dict.fromkeys(r.config for r in results))
    width = 0.8 / len(colors)
    for i, method in enumerate(colors):
        bars = [(c, value) for c, config in enumerate(configs) for r in results
                if r.config == config and r.method == method and r.mode == mode
                and (value := _value(r, kind)) is not None]
        if bars:
            x = [c + (i - (len(colors) - 1) / 2) * width for c, _ in bars]
            y, below, above = zip(*(value for _, value in bars), strict=True)
            ax.bar(x, y, width, yerr=[below, above] if kind == "time" else None, capsize=2,
                   color=colors[method], label=method)
    ax.set(yscale="log")
    ax.set_xticks(range(len(configs)), [config.name for config in configs], fontsize="small")


def plot(suite: Suite, results: list[Result], out: Path) -> list[Path]:
    """Write ``<op>_time.png`` and ``<op>_memory.png`` into ``out`` and return their paths.

    A suite that sweeps the sequence length (:meth:`Suite.size`) gets median ms (bars: fastest
    to slowest round) and peak MB against T, log-log, one line per method; one pair of figures
    per :meth:`Suite.series` when it has several (``<op>_<series>_<kind>.png``). Other suites
    get grouped bars per configuration. One panel per mode. Methods that did not run have no
    line or bar (the table says why).
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    methods = list(dict.fromkeys(r.method for r in results if r.status == "ok"))
    if not methods:
        return []
    colors = {method: f"C{i % 10}" for i, method in enumerate(methods)}  # one colour per method in every panel
    sweeps = suite.size(results[0].config) is not None
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(suite.series(r.config) if sweeps else "", []).append(r)
    paths = []
    for series, rows in groups.items():
        stem = suite.op if len(groups) == 1 else f"{suite.op}_{re.sub(r'[^A-Za-z0-9.=-]+', '_', series)}"
        for kind, ylabel in PANELS.items():
            figure = Figure(figsize=(12 if len(suite.modes) > 1 else 7, 4.8), layout="constrained")
            figure.suptitle(f"{suite.op}, {series}" if series else suite.op)
            axes = figure.subplots(1, len(suite.modes), squeeze=False)[0]
            for ax, mode in zip(axes, suite.modes, strict=True):
                if sweeps:
                    _lines(ax, suite, rows, mode, kind, colors)
                else:
                    _bars(ax, rows, mode, kind, colors)
                ax.set(ylabel=ylabel, title=MODE_TITLES[mode])
                ax.grid(True, which="both", alpha=0.3)
            # One legend for all panels, beside them: inside, it would hide points.
            handles = {artist.get_label(): artist for ax in figure.axes for artist in ax.containers}
            figure.legend(handles.values(), handles.keys(), loc="outside right center", fontsize="small")
            path = out / f"{stem}_{kind}.png"
            figure.savefig(path, dpi=120)
            paths.append(path)
    return paths
