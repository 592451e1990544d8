"""VidTr's topK-std pooled temporal attention: benchmark configurations and methods.

One definition shared by ``benchmarks/test_topk_std.py`` and ``python -m fastlocal bench``.
Every method computes :func:`fastlocal.topk_std_attention` for q, k, v ``[B, H, T, D]``
(B folds clips x spatial patches, T counts the class token) keeping ``keep`` rows plus
the class row, and in ``forward_backward`` mode also the gradients of q, k and v.

Methods (``fastlocal[<backend>]``): ``fastlocal[reference]`` is the unfused PyTorch path
(softmax -> std -> sort -> gather -> matmul, the attention matrix written several times);
``cpu``, ``triton`` and ``cuda`` are the fused kernels.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

import fastlocal
from fastlocal._dispatch import triton_interpreted

from . import suite
from .memory import PeakMemory, peak_memory_mb

OP = "topk_std_attention"
MODES = ("forward", "forward_backward")


@dataclass(frozen=True)
class Config:
    """One temporal attention layer: q, k, v ``[B, H, T, D]``, ``keep`` ranked rows kept."""

    name: str
    B: int
    H: int
    T: int
    D: int
    keep: int
    dtype: torch.dtype = torch.float32

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (dtype by name), the inverse of :meth:`from_dict`."""
        return {**asdict(self), "dtype": str(self.dtype).removeprefix("torch.")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**{**data, "dtype": getattr(torch, data["dtype"])})


# VidTr's compact models at 224^2 (14 x 14 patches), 12 heads of 64 channels, batch of 8
# clips: the temporal attention of C-VidTr-S (8 frames + class token, keeps 6) and of
# C-VidTr-L (32 frames + class token, keeps 16).
CONFIGS = (
    Config("C-VidTr-S", B=8 * 196, H=12, T=8 + 1, D=64, keep=6),
    Config("C-VidTr-L", B=8 * 196, H=12, T=32 + 1, D=64, keep=16),
)
BACKENDS = ("cpu", "reference", "triton", "cuda")


def method_name(backend: str) -> str:
    return f"fastlocal[{backend}]"


def device_for(backend: str) -> torch.device:
    """CPU for cpu / reference, CUDA for cuda and triton (CPU under TRITON_INTERPRET=1)."""
    if backend == "cuda" or (backend == "triton" and not triton_interpreted()):
        return torch.device("cuda")
    return torch.device("cpu")


def unavailable(backend: str) -> str | None:
    """Why ``backend`` cannot be benchmarked here, or None."""
    implemented = importlib.import_module("fastlocal.topk_std").IMPLEMENTED
    if backend not in implemented:
        return f"topk_std_attention has no {backend!r} kernel (implemented: {', '.join(implemented)})"
    status = fastlocal.available_backends()[backend]
    if status != "available":
        return f"backend {backend!r}: {status}"
    if backend == "triton" and triton_interpreted():
        return "triton runs interpreted here (TRITON_INTERPRET=1): no speed to measure"
    return None


@dataclass
class Inputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    grad_out: torch.Tensor
    keep: int


def make_inputs(config: Config, backend: str, mode: str, seed: int = 0) -> Inputs:
    """Random inputs on the backend's device; q, k, v require grad only in ``forward_backward``."""
    g = torch.Generator().manual_seed(seed)
    device = device_for(backend)
    shape = (config.B, config.H, config.T, config.D)

    def leaf(*size: int) -> torch.Tensor:
        t = torch.randn(*size, generator=g, dtype=config.dtype).to(device)
        return t.requires_grad_(mode == "forward_backward")

    grad = torch.randn(config.B, config.H, config.keep + 1, config.D, generator=g, dtype=config.dtype).to(device)
    return Inputs(leaf(*shape), leaf(*shape), leaf(*shape), grad, config.keep)


def run(backend: str, x: Inputs, mode: str) -> tuple[torch.Tensor, ...]:
    """One call: ``(out, index)`` forward, or ``(out, dq, dk, dv)`` for the fixed upstream gradient."""
    out, index = fastlocal.topk_std_attention(x.q, x.k, x.v, x.keep, backend=backend)
    if mode == "forward":
        return out, index
    # autograd.grad instead of .backward(): nothing accumulates in .grad across rounds.
    return (out.detach(), *torch.autograd.grad(out, (x.q, x.k, x.v), x.grad_out))


def timed_call(backend: str, x: Inputs, mode: str) -> tuple[torch.Tensor, ...]:
    """:func:`run`, returning only when the device has finished (what a timer must wrap)."""
    outputs = run(backend, x, mode)
    if outputs[0].is_cuda:
        torch.cuda.synchronize(outputs[0].device)
    return outputs


def warm_up(backend: str, x: Inputs, mode: str) -> float:
    """Warm up (Triton compilation, thread pools, fresh memory: :func:`fastlocal.bench.suite.warm_up`);
    a steady call's seconds."""
    return suite.warm_up(suite.wall_clock(lambda: timed_call(backend, x, mode)))


def memory_call(backend: str, config: dict[str, Any], mode: str) -> Callable[[], object]:
    """Factory for :func:`fastlocal.bench.memory.peak_memory_mb`: inputs built, warmed up."""
    x = make_inputs(Config.from_dict(config), backend, mode)
    run(backend, x, mode)
    return lambda: run(backend, x, mode)


def peak_memory(backend: str, config: Config, mode: str) -> PeakMemory:
    """Peak extra resident memory of one call, in a fresh process (CPU backends only)."""
    if device_for(backend).type != "cpu":
        return PeakMemory(None, "resident-memory peaks measure CPU memory; use torch.cuda.max_memory_allocated")
    return peak_memory_mb({"factory": f"{__name__}:memory_call",
                           "kwargs": {"backend": backend, "config": config.to_dict(), "mode": mode}})
