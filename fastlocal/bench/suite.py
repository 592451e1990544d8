"""What every op's comparison shares: the :class:`Suite` protocol, timing, the rows and the table.

An op's comparison is a :class:`Suite` subclass defined in ``fastlocal/bench/<op>.py``: its
configurations (the pytest-benchmark suite's, the smaller ``--quick`` members, tiny ones for
the CLI's smoke test, GPU ones), its methods (fastlocal backends, the reference, the peers a
user would otherwise run), and, for one (method, configuration, mode), why it cannot run, a
ready-to-time call, and the peak memory of one call. Both ``python -m fastlocal bench``
(:mod:`fastlocal.bench.run`) and the pytest-benchmark suites (``benchmarks/test_<op>.py``)
loop over a suite without knowing the op, warm each call up by the one rule of
:func:`warm_up`, and turn every measurement into a :class:`Result`; :func:`format_table`
lays them side by side with the speed-up and memory ratio against the best peer.

A configuration is any hashable object with a ``name``, a JSON-serialisable ``to_dict()``
and a ``from_dict`` class method (the fresh process that measures memory rebuilds it); one
that also defines ``gflop(mode)`` (nominal GFLOP of one call) gets achieved GFLOP/s in the
table.
"""

from __future__ import annotations

import dataclasses
import importlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch

from .memory import PeakMemory, peak_memory_mb

MODES = ("forward", "forward_backward")
MODE_TITLES = {"forward": "forward", "forward_backward": "forward+backward"}
GPU_BACKENDS = ("cuda", "triton")


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"`` (configurations' names and JSON)."""
    return str(dtype).removeprefix("torch.")


def torch_has_cuda() -> bool:
    """True when this torch build can run CUDA (or ROCm) code at all, GPU present or not."""
    return torch.version.cuda is not None or getattr(torch.version, "hip", None) is not None


class DtypeConfig:
    """Base of a dataclass configuration with a ``dtype`` field: its JSON round trip (dtype by name)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (dtype by name), the inverse of :meth:`from_dict`."""
        return {**dataclasses.asdict(self), "dtype": dtype_name(self.dtype)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        return cls(**{**data, "dtype": getattr(torch, data["dtype"])})


def backend_method(backend: str) -> str:
    """A fastlocal backend's method name in the tables: ``"fastlocal[cpu]"``."""
    return f"fastlocal[{backend}]"


def classifier_call(model: torch.nn.Module, video: torch.Tensor, mode: str, num_classes: int, train: Any,
                    generator: torch.Generator) -> Callable[[], tuple[torch.Tensor, ...]]:
    """A video classifier's benchmark call: ``forward`` = one inference of ``video`` without autograd;
    ``forward_backward`` = one training step (cross-entropy on random labels, backward, SGD with
    ``train``'s lr, momentum and weight decay: the recipe VidTr and GTA train with)."""
    if mode == "forward":
        model.eval()

        def infer() -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                return (model(video),)

        return infer
    labels = torch.randint(num_classes, (video.shape[0],), generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                                weight_decay=train.weight_decay)
    model.train()
    step = cross_entropy_step(lambda: model(video), labels, optimizer)
    return lambda: (step(),)


def cross_entropy_step(logits: Callable[[], torch.Tensor], labels: torch.Tensor,
                       optimizer: torch.optim.Optimizer) -> Callable[[], torch.Tensor]:
    """One training step as a call: ``cross_entropy(logits(), labels)``, backward, ``optimizer.step()``;
    returns the detached loss."""

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(logits(), labels)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def backend_absent(op_module: str, backend: str, device: str) -> str | None:
    """Why the fastlocal ``backend`` of ``fastlocal.<op_module>`` has nothing to run in a ``device`` run, or None.

    A reason that holds for every configuration of the run (no kernel, a torch without CUDA,
    a backend for the other device), reported once per op instead of once per row.
    """
    import fastlocal

    implemented = importlib.import_module(f"fastlocal.{op_module}").IMPLEMENTED
    if backend not in implemented:
        return f"no {backend!r} kernel (implemented: {', '.join(implemented)})"
    if backend in GPU_BACKENDS and not torch_has_cuda():
        return f"not available (torch {torch.__version__} has no CUDA)"
    status = fastlocal.available_backends()[backend]
    if status != "available":
        return f"not available ({status})"
    if backend in GPU_BACKENDS and device == "cpu":
        return "runs on CUDA tensors: python -m fastlocal bench --device cuda"
    if backend == "cpu" and device != "cpu":
        return "runs on CPU tensors: python -m fastlocal bench --device cpu"
    return None


def failure(call: Callable[[], object]) -> str | None:
    """Run ``call``: the exception it raises as ``"Type: message"``, or None."""
    try:
        call()
    except Exception as exc:  # the refusal is the reason reported, not a failure
        return f"{type(exc).__name__}: {exc}"
    return None


def timed_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds of ``fn(*args, **kwargs)`` and its result; CUDA work is timed with CUDA events.

    The device is read from the first tensor argument.
    """
    if next((a.is_cuda for a in args if isinstance(a, torch.Tensor)), False):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = fn(*args, **kwargs)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    start_s = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start_s, result


def gemm_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Achieved ``torch.mm`` GFLOP/s on ``[n, n] @ [n, n]`` (median of ``repeats``).

    The yardstick for useful GFLOP/s rates: what this machine's BLAS (or GPU) reaches.
    """
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    out = torch.empty(n, n, dtype=dtype, device=device)
    torch.mm(a, b, out=out)  # warm-up: thread pool and BLAS initialisation
    times = [timed_call(torch.mm, a, b, out=out)[0] for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


def warm_up(timed: Callable[[], float], min_calls: int = 3, max_calls: int = 10, tolerance: float = 1.25) -> float:
    """Call ``timed`` (which returns its own seconds) until it is steady; the last call's seconds.

    The first calls pay for one-time work a training loop pays once, not per step:
    compilation, thread pools, lazy imports (the first call of any fastlocal op imports
    ``torch._dynamo``, 1-1.5 s on the 2-core VM) and the first touch of fresh memory (on that
    VM, memory the process has not touched for a few seconds comes back slowly: the first
    calls that write a 650 MB RoI map take 5-15x a steady one). So: at least ``min_calls``
    calls, then more until the last two are within ``tolerance`` of each other (at most
    ``max_calls``). The seconds returned size the timed rounds (:func:`rounds_for`): a first
    call's would leave a fast op with the minimum of rounds.
    """
    times: list[float] = []
    while len(times) < max_calls:
        times.append(timed())
        if len(times) >= min_calls and max(times[-2:]) <= tolerance * min(times[-2:]):
            break
    return times[-1]


def wall_clock(call: Callable[[], object]) -> Callable[[], float]:
    """``call`` as a zero-argument callable returning its wall-clock seconds (for :func:`warm_up`)."""

    def timed() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    return timed


def rounds_for(seconds_per_call: float, budget_s: float = 2.0, min_rounds: int = 3, max_rounds: int = 100) -> int:
    """Timed rounds that fit ``budget_s``, at least ``min_rounds`` (slow calls get exactly that)."""
    return max(min_rounds, min(max_rounds, int(budget_s / max(seconds_per_call, 1e-9))))


def _synchronised(call: Callable[[], tuple[torch.Tensor, ...]]) -> Callable[[], tuple[torch.Tensor, ...]]:
    """``call``, returning only when the GPU has finished its work (what a wall-clock timer must wrap)."""

    def run() -> tuple[torch.Tensor, ...]:
        outputs = call()
        torch.cuda.synchronize()
        return outputs

    return run


class Suite:
    """One op's comparison. Subclasses set the class attributes and define :meth:`is_peer` and :meth:`build`."""

    op: str
    config_type: type  # the configurations' class (``from_dict`` rebuilds one in the memory process)
    configs: tuple[Any, ...]  # the pytest-benchmark suite's CPU configurations
    quick_configs: tuple[Any, ...]  # --quick: smaller members of the same family
    tiny_configs: tuple[Any, ...]  # --tiny: the CLI's smoke test, seconds for the whole op
    gpu_configs: tuple[Any, ...] = ()  # --device cuda, and the pytest suite's CUDA cases
    gpu_quick_configs: tuple[Any, ...] = ()  # --device cuda --quick (and --tiny)
    methods: tuple[str, ...]
    modes: tuple[str, ...] = MODES
    peers: str  # which methods are the peers, for the table's footer
    note: str = ""  # what the figures mean, when not obvious (shown under the table)
    rounds: int | None = None  # fixed timed rounds (None: as many as fit the time budget)
    # warm-up calls (at least, at most): whole-model steps take seconds, two warm calls (the second
    # steady) are enough there
    warm_calls: tuple[int, int] = (3, 10)
    memory_timeout_s: float = 600.0

    def configurations(self, device: str, *, quick: bool, tiny: bool) -> tuple[Any, ...]:
        """The configurations a run on ``device`` covers."""
        if device == "cuda":
            return self.gpu_quick_configs if quick or tiny else self.gpu_configs
        return self.tiny_configs if tiny else self.quick_configs if quick else self.configs

    def is_peer(self, method: str) -> bool:
        """True for the methods fastlocal is compared with."""
        raise NotImplementedError

    def absent(self, method: str, device: str) -> str | None:
        """Why ``method`` has nothing to run on any ``device`` configuration here (a backend this torch
        cannot run, a package not installed), or None. Reported once per op, not per row."""
        return None

    def unavailable(self, method: str, config: Any, mode: str) -> str | None:
        """Why ``method`` cannot run ``config`` in ``mode`` here (:meth:`absent` included), or None."""
        return self.absent(method, self.device(config))

    def quick_skip(self, method: str, config: Any) -> str | None:
        """Why ``--quick`` leaves ``method`` out at ``config``, or None."""
        return None

    def compiles(self, method: str) -> bool:
        """True when ``method``'s first call compiles (compiling takes longer than a whole --tiny run)."""
        return False

    def skip_reason(self, method: str, config: Any, mode: str, *, quick: bool = False, tiny: bool = False
                    ) -> str | None:
        """Why ``method`` does not run ``config`` in ``mode`` in this run (reported with the results), or None."""
        if tiny and self.compiles(method):
            return "--tiny leaves out compiled methods (compiling takes longer than the whole tiny run)"
        return self.unavailable(method, config, mode) or (self.quick_skip(method, config) if quick else None)

    def device(self, config: Any) -> str:
        """``"cpu"`` or ``"cuda"``: where ``config`` runs."""
        return getattr(config, "device", "cpu")

    def build(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        """Build the inputs (and what a user builds once per shape); return one call of ``method`` in
        ``mode``, which returns every tensor it produced. Not warmed up: :meth:`call` users do that."""
        raise NotImplementedError

    def call(self, method: str, config: Any, mode: str) -> Callable[[], tuple[torch.Tensor, ...]]:
        """:meth:`build`, returning only when the device has finished (CUDA calls synchronise)."""
        call = self.build(method, config, mode)
        return _synchronised(call) if self.device(config) == "cuda" else call

    def warm_up(self, call: Callable[[], object]) -> float:
        """Warm ``call`` up by :func:`warm_up`'s rule; a steady call's seconds."""
        return warm_up(wall_clock(call), min_calls=self.warm_calls[0], max_calls=self.warm_calls[1])

    def peak_memory(self, method: str, config: Any, mode: str) -> PeakMemory:
        """Peak extra memory of one warm call: on the CPU the resident memory of a fresh process
        (:func:`~fastlocal.bench.memory.peak_memory_mb`), on CUDA ``torch.cuda.max_memory_allocated``
        above what was allocated before the call (exact, so measured in this process)."""
        if self.device(config) == "cpu":
            return peak_memory_mb(self.memory_spec(method, config, mode), timeout=self.memory_timeout_s)
        try:
            call = memory_call(self, method, config, mode)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            call()
            return PeakMemory((torch.cuda.max_memory_allocated() - before) / 2**20)
        except Exception as exc:  # reported in the table, like a failed CPU measurement
            return PeakMemory(None, f"{type(exc).__name__}: {exc}")

    def memory_spec(self, method: str, config: Any, mode: str) -> dict[str, Any]:
        """The :func:`~fastlocal.bench.memory.peak_memory_mb` spec naming one call of this suite."""
        cls = type(self)
        return {"factory": f"{__name__}:memory_factory",
                "kwargs": {"suite": f"{cls.__module__}:{cls.__qualname__}", "method": method,
                           "config": config.to_dict(), "mode": mode}}

    def table(self, results: list[Result], gemm: float | None = None, absent: dict[str, str] | None = None) -> str:
        """:func:`format_table` of this suite's ``results``."""
        return format_table(results, gemm, op=self.op, is_peer=self.is_peer, peers=self.peers, note=self.note,
                            absent=absent)

    def size(self, config: Any) -> int | None:
        """The sequence length the plots put on their x axis, or None when the suite sweeps no length."""
        return None

    def series(self, config: Any) -> str:
        """What ``config`` fixes besides :meth:`size` (configs of one series are plotted as lines)."""
        return config.name


def memory_call(suite: Suite, method: str, config: Any, mode: str) -> Callable[[], object]:
    """One call of ``suite``'s ``method`` on ``config``, warmed up by one call (compilation, lazy imports,
    first-call allocations stay out of the peak); raises when the method cannot run."""
    reason = suite.unavailable(method, config, mode)
    if reason:
        raise RuntimeError(f"{method} unavailable: {reason}")
    call = suite.call(method, config, mode)
    call()
    return call


def memory_factory(suite: str, method: str, config: dict[str, Any], mode: str) -> Callable[[], object]:
    """:func:`memory_call` from :meth:`Suite.memory_spec`'s JSON: what the memory process runs."""
    module, _, name = suite.partition(":")
    instance: Suite = getattr(importlib.import_module(module), name)()
    return memory_call(instance, method, instance.config_type.from_dict(config), mode)


@dataclass
class Result:
    """One measurement of the side-by-side table; ``seconds`` / ``peak`` None when not measured.

    ``seconds`` is the median; ``times`` holds every timed round when the caller kept them
    (:meth:`timed`; pytest-benchmark keeps its own statistics). ``skipped`` says why the
    method did not run, ``error`` why it failed.
    """

    method: str
    config: Any
    mode: str
    seconds: float | None = None
    peak: PeakMemory | None = None
    skipped: str = ""
    times: tuple[float, ...] = ()
    error: str = ""

    @classmethod
    def timed(cls, method: str, config: Any, mode: str, times: list[float], peak: PeakMemory) -> Result:
        """A result from the seconds of every timed round."""
        return cls(method, config, mode, statistics.median(times), peak, times=tuple(times))

    @property
    def status(self) -> str:
        """``"ok"``, ``"skipped"`` or ``"failed"``."""
        return "failed" if self.error else "skipped" if self.skipped else "ok"

    @property
    def mb(self) -> float | None:
        """Peak MB, None when not measured."""
        return None if self.peak is None else self.peak.mb

    @property
    def useful_gflop(self) -> float | None:
        """Nominal GFLOP of one call, when the configuration defines ``gflop(mode)``."""
        gflop = getattr(self.config, "gflop", None)
        return None if gflop is None else gflop(self.mode)

    @property
    def gflops(self) -> float | None:
        """Achieved useful GFLOP/s (:attr:`useful_gflop` over the median time)."""
        gflop = self.useful_gflop
        return None if self.seconds is None or gflop is None else gflop / self.seconds

    def percent_of(self, gemm: float | None) -> float | None:
        """:attr:`gflops` as a percentage of ``gemm`` GFLOP/s (the ``torch.mm`` yardstick)."""
        gflops = self.gflops
        return None if gflops is None or not gemm else 100 * gflops / gemm

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: every figure with its spread, or the reason it is missing."""

        def ms(seconds: float | None) -> float | None:
            return None if seconds is None else seconds * 1e3

        low, high = (min(self.times), max(self.times)) if self.times else (None, None)
        spread = None if self.seconds is None else {"min": ms(low), "median": ms(self.seconds), "max": ms(high)}
        return {
            "method": self.method,
            "config": {"name": self.config.name, **self.config.to_dict()},
            "mode": self.mode,
            "status": self.status,
            "reason": self.error or self.skipped or None,
            "ms": spread,
            "rounds": len(self.times) or None,
            "peak_mb": self.mb,
            "peak_mb_reason": None if self.peak is None or self.peak.mb is not None else self.peak.reason,
            "useful_gflop": self.useful_gflop,
            "gflops": self.gflops,
        }


class Peers(NamedTuple):
    """The fastest and the leanest peer that ran one (config, mode); None where no peer ran."""

    fastest: Result | None
    leanest: Result | None

    def speedup(self, r: Result) -> float | None:
        """The fastest peer's median time over ``r``'s (> 1: ``r`` is faster)."""
        if self.fastest is None or self.fastest.seconds is None or r.seconds is None:
            return None
        return self.fastest.seconds / r.seconds

    def memory_ratio(self, r: Result) -> float | None:
        """``r``'s peak MB over the leanest peer's (< 1: ``r`` needs less)."""
        lean = None if self.leanest is None else self.leanest.mb
        return None if r.mb is None or not lean else r.mb / lean


def best_peers(results: list[Result], is_peer: Callable[[str], bool]) -> dict[tuple[Any, str], Peers]:
    """:class:`Peers` of every (config, mode) in ``results``; ``is_peer`` names the peers."""
    groups: dict[tuple[Any, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.config, r.mode), []).append(r)

    def best(rows: list[Result], key: Callable[[Result], float | None]) -> Result | None:
        measured = [(value, r) for r in rows if is_peer(r.method) and (value := key(r)) is not None]
        return min(measured, key=lambda pair: pair[0], default=(None, None))[1]

    return {group: Peers(best(rows, lambda r: r.seconds), best(rows, lambda r: r.mb))
            for group, rows in groups.items()}


_BLOCK = f"{'ms [min-max]':>22s} {'peak MB':>8s} {'speed-up':>8s} {'mem':>6s} {'GFLOP/s':>8s} {'% mm':>5s}"


def _num(value: float | None, suffix: str = "") -> str:
    """Two or three significant figures; ``-`` for None."""
    if value is None:
        return "-"
    digits = ".0f" if value >= 100 else ".1f" if value >= 10 else ".2f" if value >= 0.1 else ".2g"
    return f"{value:{digits}}{suffix}"


def _block(r: Result | None, peers: Peers, gemm: float | None) -> str:
    """One mode's cells of a method's row."""
    if r is None or r.status != "ok":
        label = "-" if r is None else "FAILED" if r.error else "skipped"
        return f"{label:>22s}{'':{len(_BLOCK) - 22}s}"
    ms = _num(r.seconds * 1e3) if r.seconds is not None else "-"
    if r.times:
        ms += f" [{_num(min(r.times) * 1e3)}-{_num(max(r.times) * 1e3)}]"
    return (f"{ms:>22s} {_num(r.mb):>8s} {_num(peers.speedup(r), 'x'):>8s} {_num(peers.memory_ratio(r), 'x'):>6s}"
            f" {_num(r.gflops):>8s} {_num(r.percent_of(gemm)):>5s}")


def absent_line(absent: dict[str, str]) -> str:
    """One line naming the methods that had nothing to run, grouped by reason:
    ``"fastlocal[cuda], fastlocal[triton]: not available (torch 2.13.0+cpu has no CUDA); natten: ..."``."""
    by_reason: dict[str, list[str]] = {}
    for method, reason in absent.items():
        by_reason.setdefault(reason, []).append(method)
    return "; ".join(f"{', '.join(methods)}: {reason}" for reason, methods in by_reason.items())


def format_table(results: list[Result], gemm: float | None = None, *, op: str, is_peer: Callable[[str], bool],
                 peers: str, note: str = "", absent: dict[str, str] | None = None) -> str:
    """Side-by-side table of one op: per configuration, one row per method, forward and forward+backward
    next to each other.

    Each mode shows the median ms (and its min-max over the rounds when kept), peak MB, the
    speed-up over the fastest peer, the memory ratio to the leanest peer, useful GFLOP/s
    and its share of ``gemm`` GFLOP/s. Methods that were skipped or failed, and peak
    memory that was not measured, are listed under their row with the reason; methods with
    nothing to run here at all (``absent``: method -> reason) take one line. ``peers`` says
    which methods ``is_peer`` picks; ``note`` ends the table.
    """
    best = best_peers(results, is_peer)
    titles = "".join(f" | {f'--- {MODE_TITLES[mode]} ---':^{len(_BLOCK)}s}" for mode in MODES)
    header = f"{'method':21s}" + "".join(f" | {_BLOCK}" for _ in MODES)
    lines = [f"{'':21s}{titles}", header]
    for config in dict.fromkeys(r.config for r in results):
        rows: dict[str, dict[str, Result]] = {}
        for r in results:
            if r.config == config:
                rows.setdefault(r.method, {})[r.mode] = r
        summary = "; ".join(
            f"{MODE_TITLES[mode]}: fastest {_name(p.fastest)}, leanest {_name(p.leanest)}"
            for mode in MODES if (p := best.get((config, mode))) is not None
        )
        lines += ["-" * len(header), f"{op} {config.name}  (best peers: {summary})"]
        for method, by_mode in rows.items():
            lines.append(f"{method:21s}" + "".join(
                f" | {_block(by_mode.get(mode), best.get((config, mode), Peers(None, None)), gemm)}"
                for mode in MODES))
            lines += [f"{'':4s}{MODE_TITLES[r.mode]}: {text}" for r in by_mode.values() if (text := _note(r))]
    if absent:
        lines += ["-" * len(header), f"not run here: {absent_line(absent)}"]
    lines += ["-" * len(header),
              f"speed-up: fastest peer's median / this median (>1: faster); mem: peak MB / leanest peer's peak MB "
              f"(<1: less); peers: {peers}",
              "peak MB: extra memory of one call in a fresh process; % mm: share of the torch.mm float32 rate"
              + ("" if gemm is None else f" measured in this run ({gemm:.0f} GFLOP/s)")]
    if note:
        lines.append(note)
    return "\n".join(line.rstrip() for line in lines)


def _name(r: Result | None) -> str:
    return "none ran" if r is None else r.method


def _note(r: Result) -> str:
    """The reason under a row: why ``r`` was skipped or failed, or why its memory is missing."""
    if r.status != "ok":
        return f"{r.status}: {(r.error or r.skipped).splitlines()[0][:200]}"
    if r.peak is not None and r.peak.mb is None:
        return f"peak memory not measured: {r.peak.reason.splitlines()[0][:200]}"
    return ""


class ModelBackendSuite(Suite):
    """A whole model timed with its fused op on each fastlocal backend of the CPU: ``fastlocal[cpu]``
    (the compiled kernel) against ``fastlocal[reference]`` (the op in PyTorch ops, the peer).
    ``fused_op`` names the op module whose kernel the comparison is about."""

    fused_op: str
    backends: ClassVar[dict[str, str]] = {backend_method(b): b for b in ("cpu", "reference")}
    methods = tuple(backends)
    rounds = 3
    warm_calls = (2, 4)

    def is_peer(self, method: str) -> bool:
        return self.backends[method] == "reference"

    def absent(self, method: str, device: str) -> str | None:
        if device != "cpu":
            return "the model benchmark runs on the CPU only"
        return backend_absent(self.fused_op, self.backends[method], device)
