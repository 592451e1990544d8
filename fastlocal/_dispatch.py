"""Backend discovery and per-call backend choice.

Backends, in order of preference for each device:
  CUDA tensors: ``cuda`` (compiled extension) -> ``triton`` -> ``reference``
  CPU tensors:  ``cpu`` (compiled extension) -> ``reference``

A backend is *requested* by the ``backend=`` keyword, the innermost
:func:`use_backend` context, or the ``FASTLOCAL_BACKEND`` environment variable,
in that order. A requested backend that cannot run the call raises
:class:`BackendUnavailableError`; it never falls back silently.

Without a request, a CUDA tensor that ends on ``reference`` although the op has a GPU
kernel (neither ``cuda`` nor ``triton`` is usable in this process) triggers one
:class:`ReferenceFallbackWarning` per (op, device) and process, naming the reasons.
See docs/design.md, "Backends and dispatch".
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import threading
import warnings
from collections.abc import Collection, Iterator
from types import ModuleType

import torch

BACKENDS = ("cuda", "triton", "cpu", "reference")
ENV_VAR = "FASTLOCAL_BACKEND"

_DEFAULT_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


class BackendUnavailableError(RuntimeError):
    """A backend was requested explicitly but cannot run this call."""


class ReferenceFallbackWarning(UserWarning):
    """An op on CUDA tensors runs the pure-PyTorch reference because no GPU backend is usable.

    Emitted once per process for each (op, device), only when no backend was requested.
    Silence it by requesting a backend (``backend="reference"``) or with
    ``warnings.filterwarnings("ignore", category=fastlocal.ReferenceFallbackWarning)``.
    """


def _import_error_reason(module: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(module), ""
    except ImportError as exc:  # the reason is reported, not hidden
        return None, f"{module} failed to import ({exc})"


@functools.cache
def _probe(name: str) -> tuple[ModuleType | None, str]:
    """Return (module, "") when ``name`` is usable in this process, else (None, reason)."""
    if name == "reference":
        return importlib.import_module("fastlocal.reference"), ""
    if name == "cpu":
        module, reason = _import_error_reason("fastlocal._C")
        return module, reason and f"extension not built: {reason}"
    if name == "cuda":
        if torch.version.cuda is None:
            return None, f"extension not built (torch {torch.__version__} has no CUDA)"
        module, reason = _import_error_reason("fastlocal._C_cuda")
        if module is None:
            return None, f"extension not built: {reason}"
        if not torch.cuda.is_available():
            return None, "extension built but no CUDA device is visible"
        return module, ""
    if name == "triton":
        module, reason = _import_error_reason("triton")
        if module is None:
            return None, "triton is not installed (pip install 'fastlocal[triton]')"
        if not (torch.cuda.is_available() or triton_interpreted()):
            return None, "triton is installed but there is no CUDA device (set TRITON_INTERPRET=1 to run on CPU)"
        return module, ""
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


def _missing(name: str) -> str:
    """Why backend ``name`` is unusable in this process, or "" when it is usable.

    A constant under ``torch.compile``: probing imports modules, which Dynamo refuses to
    trace, so without this no op compiled with ``fullgraph=True``. The rest of
    :func:`resolve_backend` is traced, so Dynamo guards on the ``use_backend`` stack.
    """
    return _probe(name)[1]


# What ``torch.compiler.assume_constant_result`` does, without its import of torch._dynamo
# (1.3 s, paid by every process that imports fastlocal, e.g. each benchmark memory probe).
# tests/test_compile.py compiles every op with fullgraph=True, so a torch that reads
# another marker fails there.
_missing._dynamo_marked_constant = True


def triton_interpreted() -> bool:
    """True when Triton kernels run on CPU tensors through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backend_module(name: str) -> ModuleType:
    """The compiled extension module behind ``cpu`` / ``cuda`` (already probed as available)."""
    module, reason = _probe(name)
    if module is None:
        raise BackendUnavailableError(f"backend {name!r} is not available: {reason}")
    return module


def available_backends() -> dict[str, str]:
    """Map every backend name to ``"available"`` or the reason it is missing.

    >>> fastlocal.available_backends()  # doctest: +SKIP
    {'cuda': 'extension not built (torch 2.13.0+cpu has no CUDA)', 'triton': ..., 'cpu': 'available',
     'reference': 'available'}
    """
    return {name: (_probe(name)[1] or "available") for name in BACKENDS}


_local = threading.local()


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Request ``name`` for every op called inside the block (``None`` restores automatic choice)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"backend must be a str or None, got {type(name).__name__}")
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def _requested(backend: str | None) -> tuple[str | None, str]:
    """The explicitly requested backend and where the request came from."""
    if backend is not None:
        return backend, "backend="
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1], "fastlocal.use_backend()"
    env = os.environ.get(ENV_VAR)
    if env:
        return env, f"{ENV_VAR}"
    return None, ""


def _device_ok(name: str, device: torch.device) -> bool:
    if name == "reference":
        return True
    if name == "cpu":
        return device.type == "cpu"
    if name == "cuda":
        return device.type == "cuda"
    return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())  # triton


# (op, str(device)) pairs already warned about in this process.
_FALLBACK_WARNED: set[tuple[str, str]] = set()


def _warn_reference_fallback(op: str, device: torch.device, implemented: Collection[str]) -> None:
    """Warn once per (op, device) that ``op`` on CUDA tensors runs the reference, and why.

    Only ops with a GPU kernel warn (an op implemented by ``reference`` alone, such as
    ``soft_nms_1d``, runs it by design). Marked constant for Dynamo, like :func:`_missing`:
    under ``torch.compile`` it runs once while tracing, outside the graph, and returns None.
    """
    key = (op, str(device))
    if key in _FALLBACK_WARNED:
        return
    reasons = [
        f"{name}: {_missing(name) or 'cannot run on ' + device.type + ' tensors'}"
        for name in _DEFAULT_ORDER["cuda"]
        if name != "reference" and name in implemented
    ]
    if not reasons:
        return
    _FALLBACK_WARNED.add(key)
    warnings.warn(
        f"fastlocal: {op} on {device} runs the pure-PyTorch reference: {'; '.join(reasons)}. "
        "Pass backend='reference' (or use fastlocal.use_backend) to choose it explicitly and silence this.",
        ReferenceFallbackWarning,
        stacklevel=4,  # _warn_reference_fallback <- resolve_backend <- the public op <- its caller
    )


_warn_reference_fallback._dynamo_marked_constant = True


def resolve_backend(op: str, device: torch.device, backend: str | None, implemented: Collection[str]) -> str:
    """Choose the backend that runs ``op`` on tensors living on ``device``.

    ``implemented`` lists the backends that have a kernel for this op. An explicit
    request is honoured exactly or rejected with the reason; otherwise the first
    backend of the device's preference order that is built and implemented wins, and
    a CUDA tensor left with ``reference`` warns once (:class:`ReferenceFallbackWarning`).
    """
    name, source = _requested(backend)
    if name is None:
        for candidate in _DEFAULT_ORDER.get(device.type, ("reference",)):
            if candidate == "reference":
                break
            if candidate in implemented and not _missing(candidate) and _device_ok(candidate, device):
                return candidate
        if device.type == "cuda":
            _warn_reference_fallback(op, device, tuple(implemented))
        return "reference"
    if not isinstance(name, str):
        raise TypeError(f"backend (from {source}) must be a str, got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"backend (from {source}) must be one of {BACKENDS}, got {name!r}")
    reason = _missing(name)
    if reason:
        raise BackendUnavailableError(f"{op}: backend {name!r} requested by {source} is not available: {reason}")
    if name not in implemented:
        raise BackendUnavailableError(
            f"{op}: backend {name!r} requested by {source} has no kernel for this op "
            f"(implemented: {', '.join(sorted(implemented))})"
        )
    if not _device_ok(name, device):
        raise BackendUnavailableError(
            f"{op}: backend {name!r} requested by {source} cannot run on {device.type} tensors"
        )
    return name


def kernels(backend: str, op_module: str) -> ModuleType:
    """The module holding ``backend``'s kernels for an op.

    ``cpu`` and ``cuda`` kernels live in the compiled extensions (one module for all
    ops, functions named ``<op>_forward`` / ``<op>_backward``); Triton kernels live in
    ``fastlocal.kernels.<op_module>`` under the same names.
    """
    if backend == "triton":
        return importlib.import_module(f"fastlocal.kernels.{op_module}")
    return backend_module(backend)
